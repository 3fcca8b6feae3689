"""Shared helpers of the public-link tests (no tests here): contacts through the API, a fake
clock for the links, and reads of what was stored."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from gatekeeper.links.service import LinkService
from gatekeeper.links.tokens import LinkSigner
from gatekeeper.models import Contact
from gatekeeper.sqlbulk import read_json

# Collected 2025-06-10 (Paris): deadline 2028-06-10 00:00 Paris = 2028-06-09T22:00Z,
# reconsent due from 2028-05-10T22:00Z (30 days before).
TODAY = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
RECONSENT_DAY = datetime(2028, 5, 20, 10, 0, tzinfo=UTC)
PAUL = {
    "external_id": "crm-42",
    "email": "Paul.Martin@Example.fr",
    "phone": "06 12 34 56 78",
    "first_name": "Paul",
    "last_name": "Martin",
    "audience": "b2c",
    "collected_at": "2025-06-10",
    "collected_by": "ACME SAS",
    "source": {"type": "direct", "name": "checkout"},
    "postal_address": {
        "line1": "1 rue de la Paix",
        "postcode": "69001",
        "city": "Lyon",
        "country": "FR",
    },
    "purpose": "marketing",
}
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def links(app: Flask) -> LinkService:
    service: LinkService = app.extensions["gatekeeper.links"]
    return service


def signer(app: Flask) -> LinkSigner:
    return links(app).signer


def set_clock(app: Flask, now: datetime) -> FakeClock:
    clock = FakeClock(now)
    links(app).clock = clock
    return clock


def add_contact(client: FlaskClient, auth: dict[str, str], **changes: Any) -> int:
    res = client.post("/api/v1/contacts", json={"contacts": [PAUL | changes]}, headers=auth)
    assert res.status_code == 200, res.json
    return int(res.json["contacts"][0]["id"])


def contact_view(client: FlaskClient, auth: dict[str, str], cid: int) -> dict[str, Any]:
    res = client.get(f"/api/v1/contacts/{cid}", headers=auth)
    assert res.status_code == 200, res.json
    body: dict[str, Any] = res.json
    return body


def stored_events(app: Flask, cid: int, kind: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT type, data, origin FROM events WHERE contact_id = :c ORDER BY occurred_at, id"
    with app.extensions["gatekeeper.db"].engine.connect() as conn:
        rows = conn.execute(text(sql), {"c": cid}).all()
    return [{"type": t, "origin": o, **read_json(d)} for t, d, o in rows if kind in (None, t)]


def suppressions(app: Flask) -> list[tuple[str, str, str]]:
    with app.extensions["gatekeeper.db"].engine.connect() as conn:
        rows = conn.execute(text("SELECT coord_hash, reason, channels FROM suppressions")).all()
    return [(h, r, c) for h, r, c in rows]


def email_hash(app: Flask, email: str = "paul.martin@example.fr") -> str:
    digest: str = app.extensions["gatekeeper.context"].hasher.coordinate("email", email)
    return digest


def erase(app: Flask, cid: int) -> None:
    """What the erasure right leaves: an anonymised row (the erasure code is not ours)."""
    with app.extensions["gatekeeper.db"].session_scope() as session:
        contact = session.get(Contact, cid)
        assert contact is not None
        contact.email = contact.phone = contact.external_id = None
        contact.first_name = contact.last_name = None
        contact.anonymised_at = datetime(2026, 1, 1, tzinfo=UTC)
