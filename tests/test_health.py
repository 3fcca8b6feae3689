"""GET /healthz: the database and the drainer, as an operator's monitoring sees them."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from conftest import make_settings
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from gatekeeper import spool
from gatekeeper.app import create_app
from gatekeeper.models import WebhookEvent, WebhookPending, utcnow
from gatekeeper.spool import Spool


def _clicks_dir(app: Flask) -> Path:
    return Path(app.extensions["gatekeeper.settings"].spool_dir) / "clicks"


def test_a_quiet_service_is_healthy(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json
    assert body is not None
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert set(body["spool"]) == set(spool.STREAMS)
    assert body["spool"]["clicks"] == {"pending_bytes": 0, "last_drain_seconds_ago": None, "stalled": False}
    assert body["queue"] == {"rows": 0, "oldest_seconds": None, "stalled": False}


def test_webhook_events_queued_for_a_minute_are_a_stalled_drainer(
    app: Flask, client: FlaskClient, drain: Callable[[], dict[str, int]]
) -> None:
    with app.extensions["gatekeeper.db"].session_scope() as session:
        event = WebhookEvent(
            provider="sendgrid", dedupe_key="sendgrid:h1", kind="delivered", provider_event="delivered",
            occurred_at=utcnow(), raw={}, created_at=utcnow(),
        )  # fmt: skip
        session.add(event)
        session.flush()
        session.add(WebhookPending(event_id=event.id, last_event_id=event.id))  # as a request queues it
    fresh = client.get("/healthz")
    assert fresh.status_code == 200 and fresh.json is not None
    assert fresh.json["queue"]["rows"] == 1 and fresh.json["queue"]["stalled"] is False
    with app.extensions["gatekeeper.db"].session_scope() as session:
        long_ago = utcnow() - timedelta(seconds=spool.STALLED_AFTER + 5)
        session.query(WebhookEvent).update({"created_at": long_ago})
    stalled = client.get("/healthz")
    assert stalled.status_code == 503 and stalled.json is not None
    assert stalled.json["status"] == "degraded"
    assert stalled.json["queue"]["stalled"] is True
    assert stalled.json["queue"]["oldest_seconds"] > spool.STALLED_AFTER
    drain()
    again = client.get("/healthz")
    assert again.status_code == 200 and again.json is not None
    assert again.json["queue"] == {"rows": 0, "oldest_seconds": None, "stalled": False}


def test_records_waiting_without_a_drain_pass_for_a_minute_are_a_stalled_drainer(
    app: Flask, client: FlaskClient, drain: Callable[[], dict[str, int]]
) -> None:
    Spool(Path(app.extensions["gatekeeper.settings"].spool_dir), "clicks").append(b"{}")
    fresh = client.get("/healthz")
    assert fresh.status_code == 200  # just written: the drainer has a minute to pass
    assert fresh.json is not None
    assert fresh.json["spool"]["clicks"]["pending_bytes"] == 3
    long_ago = time.time() - spool.STALLED_AFTER - 5
    os.utime(_clicks_dir(app) / spool.HEARTBEAT, (long_ago, long_ago))
    stalled = client.get("/healthz")
    assert stalled.status_code == 503
    assert stalled.json is not None
    assert stalled.json["status"] == "degraded"
    assert stalled.json["spool"]["clicks"]["stalled"] is True
    drain()  # the line is not a click: logged and skipped, and the pass counts
    again = client.get("/healthz")
    assert again.status_code == 200
    assert again.json is not None
    assert again.json["spool"]["clicks"]["pending_bytes"] == 0
    assert again.json["spool"]["clicks"]["last_drain_seconds_ago"] < 5


def test_an_unreachable_database_is_reported(tmp_path: Path) -> None:
    nobody = "postgresql+psycopg://postgres@127.0.0.1:1/gatekeeper"  # port 1: connection refused
    app = create_app(make_settings(nobody, tmp_path))
    try:
        response = app.test_client().get("/healthz")
    finally:
        app.extensions["gatekeeper.jobs"].pool.shutdown(wait=True)
        app.extensions["gatekeeper.db"].engine.dispose()
    assert response.status_code == 503
    assert response.json is not None
    assert response.json["database"] == "unreachable"


def test_a_writer_holding_the_database_does_not_make_the_service_look_down(
    app: Flask, client: FlaskClient
) -> None:
    # An import or a purge holds the write lock for a while: monitoring must still see "ok"
    # (SQLite: the check reads without waiting for the lock; PostgreSQL never waits for reads).
    database = app.extensions["gatekeeper.db"]
    with database.session_scope() as writer:
        writer.execute(text("UPDATE contacts SET updated_at = updated_at"))  # holds the lock
        response = client.get("/healthz")
    assert response.status_code == 200 and response.json is not None
    assert response.json["database"] == "ok"
