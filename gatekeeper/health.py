"""``GET /healthz``: what an operator's monitoring asks, without an API key.

Two things can silently go wrong in a running service: the database becomes unreachable, or the
drainer (``gatekeeper drain``) is not running, so clicks and delivery events pile up in the
spool instead of restarting clocks. The answer is 200 when both are fine, 503 otherwise; it
holds no personal data, only states and byte counts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from gatekeeper import spool

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    settings = current_app.extensions["gatekeeper.settings"]
    database_ok = _database_ok(current_app.extensions["gatekeeper.db"])
    now = time.time()
    streams = {name: spool.backlog(Path(settings.spool_dir), name, now) for name in spool.STREAMS}
    healthy = database_ok and not any(b.stalled for b in streams.values())
    body: dict[str, Any] = {
        "status": "ok" if healthy else "degraded",
        "database": "ok" if database_ok else "unreachable",
        "spool": {name: b._asdict() for name, b in streams.items()},
    }
    response = jsonify(body)
    response.status_code = 200 if healthy else 503
    response.headers["Cache-Control"] = "no-store"
    return response


def _database_ok(database: Any) -> bool:
    try:
        # A read-only transaction: on SQLite it never waits for a writer (an import holding
        # the write lock must not make the service look down).
        with database.session_scope(read_only=True) as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    return True
