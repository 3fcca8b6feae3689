"""The reconsent journey end to end, on a real local SMTP server, on SQLite and PostgreSQL:
contacts near their deadline get the message, "keep" restarts the clock, silence anonymises."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from conftest import make_settings
from flask import Flask
from flask.testing import FlaskClient
from test_retention_helpers import (
    BASE_URL,
    ZEPHYRINE,
    ZEPHYRINE_TRACES,
    add_person,
    api_headers,
    body_text,
    collected_for,
    contact_row,
    every_value,
    free_port,
    make_app,
    received,
    run,
    utc,
)

from gatekeeper.mailsink import start_sink
from gatekeeper.models import WebhookEvent, WebhookPending, utcnow
from gatekeeper.retention.archive import ArchiveStore

PAUL = {"external_id": "crm-42", "email": "paul.martin@example.fr", "first_name": "Paul",
        "last_name": "Martin", "audience": "b2c", "collected_by": "ACME SAS",
        "source": {"type": "direct", "name": "checkout"}, "purpose": "marketing"}
CAMPAIGN = {"channel": "email", "purpose": "commercial", "sender": "ACME SAS",
            "product_category": "coffee_capsules"}


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    port, directory = free_port(), tmp_path / "mail"
    controller: Controller = start_sink(directory, port=port)
    yield directory, port
    controller.stop()


@pytest.fixture
def mail_app(db_url: str, tmp_path: Path, sink: tuple[Path, int]) -> Iterator[Flask]:
    settings = make_settings(db_url, tmp_path, smtp_url=f"smtp://127.0.0.1:{sink[1]}",
                             public_base_url=BASE_URL)
    yield from make_app(settings)


def keep_through_the_link(client: FlaskClient, url: str) -> str:
    """What a person does: open the link, press "keep" (the form carries its CSRF token)."""
    path = url.removeprefix(BASE_URL)
    page = client.get(path, base_url=BASE_URL)
    assert page.status_code == 200
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert token is not None
    res = client.post(path, data={"csrf_token": token.group(1), "answer": "keep"},
                      base_url=BASE_URL)
    assert res.status_code == 200
    return res.get_data(as_text=True)


def give_zephyrine_a_history(app: Flask, client: FlaskClient, auth: dict[str, str], cid: int,
                             collected: str) -> None:
    ref = {"email": ZEPHYRINE["email"]}
    events = [{"type": "consent", "contact": ref, "channel": "email", "given": True,
               "occurred_at": collected, "method": "checkbox", "ip": "203.0.113.77",
               "user_agent": "TraceAgent/4.2", "sender": "ACME SAS"},
              {"type": "purchase", "contact": ref, "occurred_at": collected, "amount": 42.5,
               "product_category": "coffee_capsules"}]
    res = client.post("/api/v1/events", json={"events": events}, headers=auth)
    assert res.status_code == 200, res.json
    with app.extensions["gatekeeper.db"].session_scope() as session:
        event = WebhookEvent(provider="brevo", dedupe_key=f"brevo|{ZEPHYRINE['email']}|1",
                             kind="open", provider_event="opened", occurred_at=utcnow(),
                             contact_id=cid, raw={"email": ZEPHYRINE["email"]})
        session.add(event)
        session.flush()
        # As the webhook service stores one: queued for the index by contact in its transaction.
        session.add(WebhookPending(event_id=event.id, last_event_id=event.id))


def test_near_the_deadline_a_reconsent_mail_arrives_keep_restarts_and_silence_anonymises(
    mail_app: Flask, sink: tuple[Path, int], tmp_path: Path
) -> None:
    app, client, auth, now = mail_app, mail_app.test_client(), api_headers(mail_app), utcnow()
    collected = collected_for(timedelta(days=20), now)
    paul = add_person(client, auth, PAUL | {"collected_at": collected})
    zephyrine = add_person(client, auth, ZEPHYRINE | {"collected_at": collected})
    add_person(client, auth, PAUL | {"external_id": "crm-new", "email": "new@example.fr",
                                     "collected_at": now.date().isoformat()})
    give_zephyrine_a_history(app, client, auth, zephyrine, collected)

    assert run(client, auth, "plan_reconsent", now)["done"]["reconsent"] == 2
    assert run(client, auth, "send_outbox", now)["done"] == {"sent": 2}
    messages = {str(m["To"]): m for m in received(sink[0])}
    assert set(messages) == {PAUL["email"], ZEPHYRINE["email"]}
    to_paul = messages[PAUL["email"]]
    assert "ACME SAS" in str(to_paul["From"]) and "ACME SAS" in str(to_paul["Subject"])
    unsubscribe = str(to_paul["List-Unsubscribe"])
    assert re.fullmatch(r"<https://gk\.example/u/[\w.-]+>, <mailto:newsletter@acme\.example"
                        r"\?subject=unsubscribe>", unsubscribe)
    assert to_paul["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = body_text(to_paul)
    assert text.index("Bonjour Paul") < text.index("Hello Paul")  # French first
    keep_url = re.search(r"https://gk\.example/r/\S+", text)
    assert keep_url is not None and keep_url.group(0) in body_text(to_paul, "html")

    # Idempotent for the day: nothing is queued or sent twice.
    assert run(client, auth, "plan_reconsent", now)["done"] == {"reconsent": 0,
                                                                "reconsent_reminder": 0}
    assert run(client, auth, "send_outbox", now)["done"] == {}

    assert "Merci" in keep_through_the_link(client, keep_url.group(0))
    assert utc(client.get(f"/api/v1/contacts/{paul}", headers=auth).json["retention"]
               ["deadline"]) > now + timedelta(days=3 * 365 - 2)

    after = now + timedelta(days=21)
    assert run(client, auth, "purge_expired", after)["done"]["expired"] == 1
    leaks = [(t, c) for t, c, v in every_value(app) if any(s in v for s in ZEPHYRINE_TRACES)]
    assert leaks == []
    row = contact_row(app, zephyrine)
    assert row["anonymised_at"] is not None and row["email"] is None
    assert "69" in str(row["postal_address"]) and "40-49" in str(row["attributes"])
    assert contact_row(app, paul)["anonymised_at"] is None

    check = client.post("/api/v1/checks", headers=auth, json={
        "campaign": CAMPAIGN, "recipients": [ZEPHYRINE["email"]], "as_of": after.isoformat()})
    (verdict,) = check.json["verdicts"]
    assert verdict["decision"] == "block" and "suppressed.erasure" in verdict["reasons"]

    invoices = ArchiveStore(f"sqlite:///{tmp_path / 'archive.db'}").read("test", "audit")
    assert [i["data"]["customer"]["last_name"] for i in invoices] == ["Quillardet"]
