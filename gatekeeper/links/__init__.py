"""Signed public links and the pages recipients see (API.md "Public links").

``tokens`` mints and verifies the links; ``fastpath`` serves ``GET /u`` and the tracked links
``/c`` and ``/d`` in front of Flask; ``pages`` is the blueprint for the forms (``POST /u``,
``/r``, ``/p``); ``records`` holds their SQL; ``spooled`` stores the tracked clicks the fast path
journals, in batches (``gatekeeper drain``); ``unsubscribes`` keeps the unsubscribes a busy
database could not take at once, and ``settle`` applies them before any decision; ``ratelimit``,
``csrf`` and ``headers`` protect them. Other modules mint links through ``links_of(app)`` (a
``LinkSigner``).
"""

from __future__ import annotations

from flask import Flask, Response, request

from gatekeeper.db import get_database
from gatekeeper.links import rights_pages as _rights_pages  # noqa: F401  (routes on bp)
from gatekeeper.links.fastpath import FastLinks
from gatekeeper.links.headers import security_headers
from gatekeeper.links.pages import bp
from gatekeeper.links.service import LinkService, build_service
from gatekeeper.links.tokens import LinkSigner
from gatekeeper.links.unsubscribes import settle

__all__ = ["LinkService", "bp", "init_app", "links_of", "settle"]


def init_app(app: Flask) -> None:
    """Build the links' service, put the fast path in front of Flask, add security headers.
    The blueprint ``bp`` is registered by the factory."""
    service = build_service(
        app.extensions["gatekeeper.settings"],
        get_database(app),
        app.extensions["gatekeeper.context"],
        app.jinja_env,
        app.static_folder,
    )
    app.extensions["gatekeeper.links"] = service
    # Flask documents wrapping wsgi_app as the way to add WSGI middleware.
    app.wsgi_app = FastLinks(app.wsgi_app, service)  # type: ignore[method-assign]

    @app.after_request
    def _public_headers(response: Response) -> Response:
        if request.blueprint == bp.name or request.endpoint == "static":
            for name, value in security_headers(https=service.https, private=request.blueprint == bp.name):
                response.headers[name] = value
        return response


def links_of(app: Flask) -> LinkSigner:
    """The signer that mints unsubscribe, preference, reconsent and tracked links."""
    service: LinkService = app.extensions["gatekeeper.links"]
    return service.signer
