"""The HTTP baseline for bench/links.py (PERFORMANCE.md "HTTP"): the cheapest answer a WSGI
app can give, a 302, served by the same gunicorn setup as gatekeeper (2 sync workers), so the
ratio of a link endpoint's rate to this one measures our work, not the server's. Bench only:
never imported by the product.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    del environ  # nothing of the request matters
    start_response("302 Found", [("Location", "https://example.com/"), ("Content-Length", "0")])
    return [b""]


def _flask_app() -> Any:
    # The same 302 through Flask, reported for reference only: it shows what the framework
    # alone costs, which is why gatekeeper serves its hot links in front of Flask.
    flask = Flask("trivial")

    @flask.get("/r")
    def redirect() -> Response:
        return Response(status=302, headers={"Location": "https://example.com/"})

    return flask


flask_app = _flask_app()
