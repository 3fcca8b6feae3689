"""``GET /healthz``: what an operator's monitoring asks, without an API key.

Two things can silently go wrong in a running service: the database becomes unreachable, or the
drainer (``gatekeeper drain``) is not running, so clicks and delivery events pile up in the
spool, and webhook events in the database's queue (``register/webhook_queue.py``), instead of
restarting clocks. The answer is 200 when both are fine, 503 otherwise; it holds no personal
data, only states and counts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from gatekeeper import spool
from gatekeeper.sqlbulk import read_ts

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    settings = current_app.extensions["gatekeeper.settings"]
    database_ok = _database_ok(current_app.extensions["gatekeeper.db"])
    now = time.time()
    streams = {name: spool.backlog(Path(settings.spool_dir), name, now) for name in spool.STREAMS}
    queue = _queue(current_app.extensions["gatekeeper.db"], now) if database_ok else None
    stalled = any(b.stalled for b in streams.values()) or bool(queue and queue["stalled"])
    healthy = database_ok and not stalled
    body: dict[str, Any] = {
        "status": "ok" if healthy else "degraded",
        "database": "ok" if database_ok else "unreachable",
        "spool": {name: b._asdict() for name, b in streams.items()},
        "queue": queue,
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


def _queue(database: Any, now: float) -> dict[str, Any] | None:
    """The webhook events waiting for the drainer in the database: how many queue rows, how
    long the oldest has waited, and whether that is longer than a drainer ever takes."""
    try:
        with database.session_scope(read_only=True) as session:
            rows, oldest = session.execute(
                text(
                    "SELECT count(*), min(e.created_at) FROM webhook_pending p"
                    " JOIN webhook_events e ON e.id = p.event_id"
                )
            ).one()
    except SQLAlchemyError:
        return None
    waited = None if oldest is None else round(max(0.0, now - read_ts(oldest).timestamp()), 1)
    return {
        "rows": int(rows),
        "oldest_seconds": waited,
        "stalled": waited is not None and waited > spool.STALLED_AFTER,
    }
