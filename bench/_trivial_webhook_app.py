"""The HTTP baseline's app (PERFORMANCE.md): the cheapest answer a WSGI app can give, a 302.

Served by the same gunicorn setup as gatekeeper (2 sync workers), so the ratio of our
single-event webhook rate to this one measures our work, not the server's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    del environ  # nothing of the request matters
    start_response("302 Found", [("Location", "https://example.com/"), ("Content-Length", "0")])
    return [b""]
