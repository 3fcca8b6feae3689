"""The application factory (no app object at import time)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, ServiceUnavailable
from werkzeug.middleware.proxy_fix import ProxyFix

from gatekeeper import db
from gatekeeper.config import PROJECT_ROOT, Settings, load_settings
from gatekeeper.errors import GatekeeperError
from gatekeeper.register.context import context_from

log = logging.getLogger(__name__)
# How long a campaign list job waits for journaled unsubscribes to be recorded before it fails:
# in the background, a long import may end first (an API check waits SETTLE_WAIT_SECONDS).
SETTLE_JOB_WAIT_SECONDS = 300.0


def create_app(settings: Settings | None = None, overrides: Mapping[str, Any] | None = None) -> Flask:
    settings = settings or load_settings(overrides=overrides)
    app = Flask(
        "gatekeeper",
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "templates" / "static"),
    )
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
    )
    app.extensions["gatekeeper.settings"] = settings
    app.extensions["gatekeeper.context"] = context_from(settings)
    db.init_app(app, db.Database(settings.database_url))

    from gatekeeper import jobs, webhook_views
    from gatekeeper.api import bp as api_bp

    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the contract's field order
    jobs.init_app(app)
    # blueprints (one line each; helpers add theirs here)
    app.register_blueprint(api_bp)
    from gatekeeper import links  # public links: /u /r /p /c /d

    app.register_blueprint(links.bp)
    links.init_app(app)  # fast path for GET /u, /c, /d and the pages' security headers
    jobs.runner(app).services["links"] = links.links_of(app)
    # Before a list is decided: the unsubscribes a busy database could not take at once.
    jobs.runner(app).services["settle"] = lambda: links.settle(
        settings, app.extensions["gatekeeper.db"], wait=SETTLE_JOB_WAIT_SECONDS
    )
    app.register_blueprint(webhook_views.bp)
    from gatekeeper import health

    app.register_blueprint(health.bp)  # GET /healthz: database and drainer, for monitoring
    _register_errors(app)
    if settings.trusted_proxies:
        # Outermost, so every layer below (the links' fast path included) sees the client.
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    return app


def _error_body(status: int, code: str, message: str, details: list[Any] | None = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "details": details or []}})
    response.status_code = status
    return response


def _register_errors(app: Flask) -> None:
    @app.errorhandler(GatekeeperError)
    def _domain(exc: GatekeeperError) -> Response:
        response = _error_body(exc.status, exc.code, exc.message, exc.details)
        if exc.status == 503:
            response.headers["Retry-After"] = str(db.RETRY_AFTER_SECONDS)
        return response

    @app.errorhandler(OperationalError)
    def _unavailable(exc: OperationalError) -> Response | HTTPException:
        # SQLite's single writer held past the busy timeout (a long import keeps it to the
        # end, to stay all-or-nothing), a PostgreSQL lock timeout or a lost connection: the
        # request changed nothing (its session is rolled back) and may be sent again.
        if not db.unavailable(exc):
            raise exc  # a mistake of ours, not a busy database: a server error, logged
        log.warning("%s %s: database unavailable: %s", request.method, request.path, exc.orig)
        if not request.path.startswith("/api/"):
            return ServiceUnavailable(retry_after=db.RETRY_AFTER_SECONDS)
        response = _error_body(
            503, "unavailable", "The database is busy or unreachable; nothing was changed. Retry later."
        )
        response.headers["Retry-After"] = str(db.RETRY_AFTER_SECONDS)
        return response

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response | HTTPException:
        if not request.path.startswith("/api/"):
            return exc
        code = (exc.name or "error").lower().replace(" ", "_")
        return _error_body(exc.code or 500, code, exc.description or code)
