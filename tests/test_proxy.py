"""Behind a trusted reverse proxy, the proof of an unsubscribe keeps the client's address."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_settings
from flask import Flask
from sqlalchemy import text

from gatekeeper.app import create_app
from gatekeeper.links import links_of


@pytest.mark.parametrize(("proxies", "expected_ip"), [(0, "10.0.0.9"), (1, "203.0.113.7")])
def test_the_ip_recorded_with_an_unsubscribe_respects_trusted_proxies(
    db_url: str, tmp_path: Path, proxies: int, expected_ip: str
) -> None:
    app: Flask = create_app(make_settings(db_url, tmp_path, trusted_proxies=proxies))
    client = app.test_client()
    database = app.extensions["gatekeeper.db"]
    with database.session_scope() as s:
        s.execute(
            text(
                "INSERT INTO contacts (email, collected_at, created_at, updated_at, audience, source_type,"
                " purpose, clock) VALUES ('p@example.fr', '2025-01-01 00:00:00.000000',"
                " '2025-01-01 00:00:00.000000', '2025-01-01 00:00:00.000000', 'b2c', 'direct',"
                " 'marketing', 'prospect')"
            )
        )
        cid = s.execute(text("SELECT id FROM contacts")).scalar_one()
    signer = links_of(app)
    path = signer.url("unsubscribe", signer.unsubscribe(cid)).split("8000", 1)[1]
    res = client.post(
        path,
        data={"List-Unsubscribe": "One-Click"},
        headers={"X-Forwarded-For": "203.0.113.7"},
        environ_base={"REMOTE_ADDR": "10.0.0.9"},
    )
    assert res.status_code == 200
    with database.engine.connect() as conn:
        data = conn.execute(text("SELECT data FROM events WHERE type = 'opposition'")).scalar_one()
    stored = json.loads(data) if isinstance(data, str) else data
    assert json.dumps(stored).count(expected_ip) >= 1
    app.extensions["gatekeeper.jobs"].pool.shutdown(wait=True)
    database.engine.dispose()
