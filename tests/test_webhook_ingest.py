"""Webhooks through HTTP: captured payloads, signed for real, posted twice, on both databases.

Each test checks the response and the stored state: the raw provider events, the register's
events, the suppressions (by keyed hash) and the contact's retention deadline as the API shows
it. Outgoing HTTP (the SNS certificate and subscription URLs) is the only double. Events without
legal urgency are journaled in the spool: the harness drains it after each request, as
``gatekeeper drain`` would, before anything is asserted.
"""

from __future__ import annotations

import gc
import io
import json
import os
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from webhook_signing import PROVIDERS, PUBLIC_BASE_URL, Signer, make_signer
from werkzeug.test import TestResponse

from gatekeeper import webhook_service, webhook_spooled
from gatekeeper.app import create_app
from gatekeeper.config import Settings, load_settings
from gatekeeper.domain.retention import add_years
from gatekeeper.errors import ConfigError
from gatekeeper.proof.verify import verify
from gatekeeper.register.deliveries import SpooledRequest, TokenBook, read_spool_record, spool_record
from gatekeeper.register.rawsql import Sql
from gatekeeper.register.webhook_queue import EVENTS_OF_CONTACT
from gatekeeper.spool import SpoolRecord, drain
from gatekeeper.sqlbulk import read_ts, ts_value
from gatekeeper.timeparse import isoformat
from gatekeeper.webhook_service import collector_paused
from gatekeeper.webhook_views import service_of
from webhooks.base import InboundRequest, NormalizedEvent, ReplayError

PAYLOADS = Path(__file__).parent / "webhook_adapters" / "payloads"
KINDS = ("click", "open", "unsubscribe", "hard_bounce", "soft_bounce", "complaint")
CASES = [(p, k) for p in PROVIDERS for k in KINDS]
# The recipient of every captured payload of each provider.
RECIPIENT = {
    "sendgrid": "jane@example.com",
    "mailgun": "alice@example.com",
    "brevo": "marie@example.fr",
    "mailjet": "paul@example.fr",
    "postmark": "john@example.com",
    "mandrill": "example.webhook@mandrillapp.com",
    "ses": "recipient@example.com",
}
# Collected 2023-01-10 (Paris): kept until 2026-01-09T23:00Z unless the person shows interest.
COLLECTED = "2023-01-10"
FIRST_DEADLINE = "2026-01-09T23:00:00Z"
# What each kind does besides being stored: (register event, (suppression reason, channels)).
EFFECTS: dict[str, tuple[str | None, tuple[str, str] | None]] = {
    "click": ("interest", None),
    "open": (None, None),  # the provider's event is its record: no fact, no journal entry
    "unsubscribe": ("opposition", ("unsubscribe", "email")),
    "hard_bounce": (None, ("hard_bounce", "email")),
    "soft_bounce": (None, None),
    "complaint": (None, ("complaint", "all")),
}


def payload(provider: str, name: str) -> Any:
    return json.loads((PAYLOADS / provider / f"{name}.json").read_text())


def settings_for(db_url: str, tmp_path: Path, signer: Signer, **extra: Any) -> Settings:
    overrides = {
        "env": "test",
        "database_url": db_url,
        "secret_key": "test-secret-0123456789",
        "archive_database_url": f"sqlite:///{tmp_path / 'archive.db'}",
        "public_base_url": PUBLIC_BASE_URL,
        "webhooks": json.dumps(signer.credentials()),
        "spool_dir": str(tmp_path / "spool"),
        **extra,
    }
    return load_settings(environ={}, overrides=overrides)


@dataclass
class OutgoingHttp:
    """The process edge: serves the SNS certificate, records every other GET."""

    signer: Signer
    fail: bool = False
    fetched: list[str] = field(default_factory=list)

    def get(self, url: str, **_options: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = 200
        if url == self.signer.sns_certificate_url:
            response._content = self.signer.sns_certificate
            return response
        if self.fail:
            raise requests.ConnectionError("connection refused")
        self.fetched.append(url)
        response._content = b"<ConfirmSubscriptionResponse/>"
        return response


@pytest.fixture(scope="module")
def signer() -> Signer:
    return make_signer()


@pytest.fixture(autouse=True)
def aws(signer: Signer, monkeypatch: pytest.MonkeyPatch) -> OutgoingHttp:
    edge = OutgoingHttp(signer)
    monkeypatch.setattr(requests, "get", edge.get)
    return edge


@pytest.fixture
def app(db_url: str, tmp_path: Path, signer: Signer) -> Iterator[Flask]:
    application = create_app(settings_for(db_url, tmp_path, signer))
    application.config["TESTING"] = True
    yield application
    application.extensions["gatekeeper.jobs"].pool.shutdown(wait=True)
    application.extensions["gatekeeper.db"].engine.dispose()


@dataclass
class Harness:
    """The service as a provider and an API client see it, plus its database."""

    app: Flask
    client: FlaskClient
    auth: dict[str, str]
    signer: Signer
    drain: Callable[[], dict[str, int]]

    def deliver(self, provider: str, body: Any, *, forged: bool = False) -> TestResponse:
        data, headers = self.signer.sign(provider, body, forged=forged)
        return self.post(provider, data, headers)

    def post(self, provider: str, data: bytes, headers: dict[str, str]) -> TestResponse:
        """Post, then apply what the request journaled (``gatekeeper drain``)."""
        response = self.client.post(f"/webhooks/{provider}", data=data, headers=headers)
        self.drain()
        return response

    def contact(self, email: str) -> int:
        body = {"contacts": [{"email": email, "collected_at": COLLECTED, "collected_by": "ACME SAS"}]}
        res = self.client.post("/api/v1/contacts", json=body, headers=self.auth)
        assert res.status_code == 200, res.json
        return int(res.json["contacts"][0]["id"])  # type: ignore[index]

    def deadline(self, contact_id: int) -> str:
        view = self.client.get(f"/api/v1/contacts/{contact_id}", headers=self.auth).json
        return str(view["retention"]["deadline"])  # type: ignore[index]

    def query(self, sql: str, **params: Any) -> list[Any]:
        with self.app.extensions["gatekeeper.db"].engine.connect() as conn:
            return list(conn.execute(text(sql), params).all())

    def count(self, table: str) -> int:
        return int(self.query(f"SELECT count(*) FROM {table}")[0][0])

    def suppressions(self, address: str) -> set[tuple[str, str]]:
        coord = self.app.extensions["gatekeeper.context"].hasher.coordinate("email", address)
        rows = self.query("SELECT reason, channels FROM suppressions WHERE coord_hash = :h", h=coord)
        return {(r.reason, r.channels) for r in rows}

    def facts(self, contact_id: int) -> list[Any]:
        """The register's events of the contact."""
        return self.query(
            "SELECT type, occurred_at, data, origin FROM events WHERE contact_id = :c", c=contact_id
        )

    def kinds_of(self, contact_id: int) -> list[str]:
        """The kinds of the contact's provider events, as the rights and evidence read them."""
        rows = self.query(
            f"SELECT kind FROM webhook_events WHERE id IN ({EVENTS_OF_CONTACT})", contact=contact_id
        )
        return sorted(r.kind for r in rows)

    def deadline_after(self, kind: str) -> str:
        """Three years after the stored event of this kind (a click restarts the clock)."""
        (row,) = self.query("SELECT occurred_at FROM webhook_events WHERE kind = :k", k=kind)
        moment: datetime = add_years(read_ts(row.occurred_at), 3)
        return str(isoformat(moment))


@pytest.fixture
def gk(
    app: Flask,
    client: FlaskClient,
    auth: dict[str, str],
    signer: Signer,
    drain: Callable[[], dict[str, int]],
) -> Harness:
    return Harness(app, client, auth, signer, drain)


def accepted(response: TestResponse) -> int:
    """Events the answer says were new: stored at once, or journaled to be (``queued``)."""
    body: dict[str, int] = response.json  # type: ignore[assignment]
    return body["stored"] + body.get("queued", 0)


# --- idempotency and authentication, every provider ---------------------------------------


@pytest.mark.parametrize(("provider", "kind"), CASES, ids=[f"{p}-{k}" for p, k in CASES])
def test_each_captured_event_posted_twice_is_stored_once_with_its_raw_payload(
    gk: Harness, provider: str, kind: str
) -> None:
    contact_id = gk.contact(RECIPIENT[provider])
    first = gk.deliver(provider, payload(provider, kind))
    again = gk.deliver(provider, payload(provider, kind))
    assert first.status_code == 200, first.json
    assert again.status_code == 200, again.json
    stored = accepted(first)
    assert stored >= 1
    assert again.json["received"] == stored  # type: ignore[index]
    assert again.json["stored"] == 0  # type: ignore[index]
    rows = gk.query("SELECT provider, kind, contact_id, raw FROM webhook_events")
    assert len(rows) == stored
    assert {(r.provider, r.kind) for r in rows} == {(provider, kind)}
    assert contact_id in {r.contact_id for r in rows}
    assert all(r.raw for r in rows)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_forged_request_is_refused_and_stores_nothing(gk: Harness, provider: str) -> None:
    gk.contact(RECIPIENT[provider])
    res = gk.deliver(provider, payload(provider, "hard_bounce"), forged=True)
    assert res.status_code == 401
    assert res.json["error"]["code"] == "unauthorized"  # type: ignore[index]
    for table in ("webhook_events", "webhook_tokens", "events", "suppressions"):
        assert gk.count(table) == 0, table


# --- effects on the register, every provider ----------------------------------------------


@pytest.mark.parametrize(("provider", "kind"), CASES, ids=[f"{p}-{k}" for p, k in CASES])
def test_each_captured_event_changes_the_gate_state_as_its_kind_requires(
    gk: Harness, provider: str, kind: str
) -> None:
    address = RECIPIENT[provider]
    contact_id = gk.contact(address)
    for _ in range(2):  # the redelivery changes nothing more
        assert gk.deliver(provider, payload(provider, kind)).status_code == 200
    event_type, suppression = EFFECTS[kind]
    facts = gk.facts(contact_id)
    assert [f.type for f in facts] == ([event_type] if event_type else [])
    assert all(f.origin == f"webhook:{provider}" for f in facts)
    assert gk.count("journal WHERE fact_table = 'event'") == len(facts)  # RULES.md §6
    assert gk.suppressions(address) == ({suppression} if suppression else set())
    # Stored once, and found by contact (the access export, the evidence pack): after the drain,
    # through the index the drainer built from the request's queued range.
    assert gk.kinds_of(contact_id) == [kind]
    assert gk.count("webhook_pending") == 0
    # Every platform's click is a person's here (Brevo's has no agent field: time decides).
    moves = kind == "click"
    expected = gk.deadline_after("click") if moves else FIRST_DEADLINE
    assert gk.deadline(contact_id) == expected


def test_the_proof_journal_holds_every_fact_a_webhook_made_and_still_verifies(
    gk: Harness,
) -> None:
    gk.contact(RECIPIENT["sendgrid"])
    batch = [
        event
        for kind in ("click", "open", "unsubscribe", "hard_bounce")
        for event in payload("sendgrid", kind)
    ]
    assert gk.deliver("sendgrid", batch).status_code == 200
    assert gk.deliver("sendgrid", batch).status_code == 200  # a redelivery proves nothing new
    kinds = gk.query("SELECT kind FROM journal ORDER BY seq")
    assert sorted(k.kind for k in kinds) == ["interest", "objection", "suppression", "suppression"]
    with gk.app.extensions["gatekeeper.db"].session_scope() as session:
        report = verify(session, gk.app.extensions["gatekeeper.context"].hasher)
    assert report.ok, report.problem


# --- what follows the request through the queue (register/webhook_queue.py) ---------------


def post_undrained(gk: Harness, body: Any) -> TestResponse:
    """Post as a provider does, and leave the drainer's work undone."""
    data, headers = gk.signer.sign("sendgrid", body)
    return gk.client.post("/webhooks/sendgrid", data=data, headers=headers)


def a_click_beside_a_bounce(contact_email: str) -> list[dict[str, Any]]:
    """A click of the contact's and a stranger's hard bounce: the batch is stored by the request
    (the bounce is urgent), the click's fact waits in the queue."""
    (bounce,) = payload("sendgrid", "hard_bounce")
    (click,) = sendgrid_click(1_715_000_460, "queued-click", email=contact_email)
    return [click, bounce | {"email": "gone@example.com", "sg_event_id": "queued-bounce"}]


def test_the_access_export_holds_a_contacts_provider_events_before_and_after_the_drain(gk: Harness) -> None:
    contact_id = gk.contact(RECIPIENT["sendgrid"])

    def exported() -> list[str]:
        res = gk.client.get(f"/api/v1/contacts/{contact_id}/export", headers=gk.auth)
        assert res.status_code == 200
        messages = json.loads(zipfile.ZipFile(io.BytesIO(res.data)).read("messages.json"))
        return sorted(m["kind"] for m in messages)

    assert post_undrained(gk, a_click_beside_a_bounce(RECIPIENT["sendgrid"])).status_code == 200
    assert gk.count("webhook_pending") == 2  # the batch's range, the click's fact
    assert gk.count("webhook_event_contacts") == 0
    assert gk.facts(contact_id) == []
    assert exported() == ["click"]  # found in the queue
    gk.drain()
    assert (gk.count("webhook_pending"), gk.count("webhook_event_contacts")) == (0, 1)
    assert exported() == ["click"]  # found in the index
    assert [f.type for f in gk.facts(contact_id)] == ["interest"]
    assert gk.deadline(contact_id) == "2027-05-06T13:01:00Z"
    gk.drain()  # applying again changes nothing
    assert (gk.count("webhook_event_contacts"), len(gk.facts(contact_id))) == (1, 1)


def test_the_purge_applies_the_queued_clicks_before_it_reads_the_deadlines(gk: Harness) -> None:
    # Collected in 2023: past its deadline, unless the click (2024-05-06) it made counts.
    contact_id = gk.contact(RECIPIENT["sendgrid"])
    assert post_undrained(gk, a_click_beside_a_bounce(RECIPIENT["sendgrid"])).status_code == 200
    assert gk.deadline(contact_id) == FIRST_DEADLINE  # the click waits for the drainer
    res = gk.client.post("/api/v1/tasks/purge_expired/run", json={}, headers=gk.auth)
    assert res.status_code == 200, res.json
    assert res.json["done"].get("expired", 0) == 0  # type: ignore[index]
    view = gk.client.get(f"/api/v1/contacts/{contact_id}", headers=gk.auth).json
    assert view["retention"]["deadline"] == "2027-05-06T13:01:00Z"  # type: ignore[index]
    assert view["email"] == RECIPIENT["sendgrid"]  # type: ignore[index]
    assert gk.count("webhook_pending") == 0


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_drain_pass_over_an_empty_queue_leaves_no_transaction_open(gk: Harness) -> None:
    # The drainer's kept connection reads the queue outside its write turn; PostgreSQL's driver
    # begins a transaction for that read, which would sit idle, holding back vacuum and locks.
    gk.drain()
    (idle,) = gk.query(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND state = 'idle in transaction'"
    )
    assert idle[0] == 0


# --- out of order, matching, scanners -----------------------------------------------------


def sendgrid_click(at: int, event_id: str, **changes: Any) -> list[dict[str, Any]]:
    (event,) = payload("sendgrid", "click")
    return [event | {"timestamp": at, "sg_event_id": event_id} | changes]


def test_a_late_older_click_never_moves_the_deadline_back(gk: Harness) -> None:
    contact_id = gk.contact(RECIPIENT["sendgrid"])
    gk.deliver("sendgrid", sendgrid_click(1_715_000_460, "newer"))  # 2024-05-06T13:01Z
    assert gk.deadline(contact_id) == "2027-05-06T13:01:00Z"
    res = gk.deliver("sendgrid", sendgrid_click(1_700_000_000, "older"))  # 2023-11-14
    assert accepted(res) == 1
    assert [f.type for f in gk.facts(contact_id)] == ["interest", "interest"]
    assert gk.deadline(contact_id) == "2027-05-06T13:01:00Z"


def test_a_late_older_unsubscribe_never_undoes_the_newer_suppression_date(gk: Harness) -> None:
    (event,) = payload("sendgrid", "unsubscribe")
    for at, event_id in ((1_715_000_520, "newer"), (1_700_000_000, "older")):
        gk.deliver("sendgrid", [event | {"timestamp": at, "sg_event_id": event_id}])
    (row,) = gk.query("SELECT occurred_at FROM suppressions")
    assert isoformat(read_ts(row.occurred_at)) == "2024-05-06T13:02:00Z"


def test_our_contact_id_in_the_metadata_wins_over_the_recipient_address(gk: Harness) -> None:
    by_address = gk.contact(RECIPIENT["sendgrid"])
    named = gk.contact("jane.new-address@example.com")
    gk.deliver("sendgrid", sendgrid_click(1_715_000_460, "e1", gk_contact=str(named)))
    assert [f.type for f in gk.facts(named)] == ["interest"]
    assert gk.facts(by_address) == []


def test_an_unknown_contact_id_in_the_metadata_falls_back_to_the_address(gk: Harness) -> None:
    contact_id = gk.contact(RECIPIENT["sendgrid"])
    gk.deliver("sendgrid", sendgrid_click(1_715_000_460, "e1", gk_contact="999999"))
    assert [f.type for f in gk.facts(contact_id)] == ["interest"]


def test_an_unsubscribe_from_an_address_we_do_not_hold_is_still_suppressed(gk: Harness) -> None:
    assert gk.deliver("mailgun", payload("mailgun", "unsubscribe")).status_code == 200
    assert gk.suppressions(RECIPIENT["mailgun"]) == {("unsubscribe", "email")}
    assert gk.count("events") == 0
    assert gk.query("SELECT contact_id FROM webhook_events")[0].contact_id is None


@pytest.mark.parametrize(
    "user_agent",
    ["Mozilla/5.0 (compatible; Barracuda Sentinel link scanner)", None],
    ids=["scanner user agent", "no user agent"],
)
def test_a_click_that_is_not_a_person_is_recorded_but_keeps_the_deadline(
    gk: Harness, user_agent: str | None
) -> None:
    contact_id = gk.contact(RECIPIENT["sendgrid"])
    gk.deliver("sendgrid", sendgrid_click(1_715_000_460, "e1", useragent=user_agent))
    (fact,) = gk.facts(contact_id)
    data = json.loads(fact.data) if isinstance(fact.data, str) else fact.data
    assert data["counts"] is False
    assert gk.deadline(contact_id) == FIRST_DEADLINE


def test_a_click_seconds_after_our_campaign_was_sent_is_a_scanner(gk: Harness) -> None:
    contact_id = gk.contact(RECIPIENT["sendgrid"])
    engine = gk.app.extensions["gatekeeper.db"].engine
    sent = ts_value(engine.dialect.name, datetime(2024, 5, 6, 13, 0, 58, tzinfo=UTC))
    with engine.begin() as conn:  # campaign 7 is the one named in the captured payload
        conn.execute(
            text(
                "INSERT INTO campaigns (id, channel, purpose, sender, sender_nonprofit,"
                " professional_relevance, send_at, created_at) VALUES (7, 'email', 'commercial',"
                " 'ACME SAS', false, false, :at, :at)"
            ),
            {"at": sent},
        )
    gk.deliver("sendgrid", sendgrid_click(1_715_000_460, "e1"))  # two seconds later
    assert gk.deadline(contact_id) == FIRST_DEADLINE


# --- whole batches, replays, failures -----------------------------------------------------


def test_a_500_event_batch_is_stored_in_one_request_and_only_once(gk: Harness) -> None:
    contact_id = gk.contact(RECIPIENT["sendgrid"])
    kinds = ["click", "open", "delivered", "hard_bounce", "unsubscribe"]
    batch = []
    for i in range(500):
        (event,) = payload("sendgrid", kinds[i % len(kinds)])
        batch.append(
            event
            | {"sg_event_id": f"batch-{i}", "email": f"person{i}@example.com", "timestamp": 1_715_000_000 + i}
        )
    batch[0] |= {"email": RECIPIENT["sendgrid"]}
    first = gk.deliver("sendgrid", batch)
    again = gk.deliver("sendgrid", batch)
    assert (first.json["stored"], again.json["stored"]) == (500, 0)  # type: ignore[index]
    assert gk.count("webhook_events") == 500
    assert gk.count("suppressions") == 200  # 100 hard bounces and 100 unsubscribes
    assert [f.type for f in gk.facts(contact_id)] == ["interest"]


def test_each_webhook_fact_is_keyed_by_its_raw_event_and_a_batch_keys_in_id_order(gk: Harness) -> None:
    ids = [gk.contact(f"person{i}@example.com") for i in range(3)]
    batch = [
        event
        | {"sg_event_id": f"keyed-{i}", "email": f"person{i % 3}@example.com", "gk_contact": str(ids[i % 3])}
        for i in range(6)
        for event in payload("sendgrid", ("click", "unsubscribe")[i % 2])
    ]
    assert gk.deliver("sendgrid", batch).status_code == 200
    assert gk.deliver("sendgrid", batch).json["stored"] == 0  # type: ignore[index]
    raw = {int(r.id): r.kind for r in gk.query("SELECT id, kind FROM webhook_events")}
    facts = gk.query("SELECT id, type, dedupe_key FROM events ORDER BY id")
    types = {"click": "interest", "unsubscribe": "opposition"}
    # Each fact names the raw event that made it, one fact per event.
    keys = sorted(f.dedupe_key.rsplit(":", 1)[0] for f in facts)
    assert keys == [f"webhook_event:{i:020d}:{types[raw[i]]}" for i in sorted(raw)]
    assert len({f.dedupe_key.rsplit(":", 1)[1] for f in facts}) == 6  # each provider event's own
    # The objections are stored by the request, the clicks by the drainer a moment later: each
    # transaction's keys in the order of its ids (at the right edge of the unique index).
    assert [f.type for f in facts] == ["opposition"] * 3 + ["interest"] * 3
    assert [f.dedupe_key for f in facts[:3]] == sorted(f.dedupe_key for f in facts[:3])
    assert [f.dedupe_key for f in facts[3:]] == sorted(f.dedupe_key for f in facts[3:])


def test_a_raw_event_id_given_again_after_a_deletion_still_stores_the_new_events_fact(gk: Harness) -> None:
    contact_id = gk.contact(RECIPIENT["sendgrid"])
    gk.deliver("sendgrid", sendgrid_click(1_715_000_460, "first"))
    (first,) = gk.query("SELECT id FROM webhook_events")
    with gk.app.extensions["gatekeeper.db"].engine.begin() as conn:
        conn.execute(text("DELETE FROM webhook_events"))  # SQLite then gives the largest rowid again
    assert accepted(gk.deliver("sendgrid", sendgrid_click(1_715_000_520, "second"))) == 1
    (second,) = gk.query("SELECT id FROM webhook_events")
    assert second.id >= first.id
    assert [f.type for f in gk.facts(contact_id)] == ["interest", "interest"]
    assert gk.deadline(contact_id) == "2027-05-06T13:02:00Z"


def test_a_nul_character_in_an_event_is_stored_replaced_not_retried_forever(gk: Harness) -> None:
    # PostgreSQL text cannot hold NUL: storing it as sent failed the batch with a 503, retried
    # by the provider for a day. It becomes U+FFFD, the same on every redelivery.
    (click,) = payload("sendgrid", "click")
    (opened,) = payload("sendgrid", "open")
    batch = [click | {"sg_event_id": "id-\u0000-1", "useragent": "Mozilla\u0000/5.0"}, opened]
    first = gk.deliver("sendgrid", batch)
    again = gk.deliver("sendgrid", batch)
    assert first.status_code == 200, first.json
    assert (accepted(first), again.status_code) == (2, 200)
    assert gk.count("webhook_events") == 2
    assert (
        gk.query("SELECT dedupe_key FROM webhook_events WHERE kind = 'click'")[0][0] == "sendgrid:id-\ufffd-1"
    )


def test_a_batch_delivered_twice_at_the_same_time_is_stored_once(gk: Harness) -> None:
    contact_id = gk.contact(RECIPIENT["sendgrid"])
    (click,) = payload("sendgrid", "click")
    (bounce,) = payload("sendgrid", "hard_bounce")
    batch = [click | {"sg_event_id": f"twin-{i}", "timestamp": 1_715_000_000 + i} for i in range(299)]
    batch.append(bounce | {"email": "gone@example.com"})  # urgent: both requests write at once
    data, headers = gk.signer.sign("sendgrid", batch)

    def deliver(_: int) -> TestResponse:
        return gk.app.test_client().post("/webhooks/sendgrid", data=data, headers=headers)

    with ThreadPoolExecutor(max_workers=2) as pool:  # each worker thread, its own connection
        answers = list(pool.map(deliver, range(2)))
    assert [a.status_code for a in answers] == [200, 200]
    assert sum(a.json["stored"] for a in answers) == 300  # type: ignore[index]
    assert gk.count("webhook_events") == 300
    gk.drain()  # the clicks' facts follow with the drainer
    assert len(gk.facts(contact_id)) == 299
    assert gk.deadline(contact_id) == isoformat(add_years(datetime.fromtimestamp(1_715_000_298, UTC), 3))


def test_a_request_too_long_for_one_spool_read_is_stored_at_once(
    gk: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The drainer reads the journal in steps of spool.READ_BYTES and skips a longer line as
    # corrupt: such a request (a huge batch) is stored by the request itself instead.
    (opened,) = payload("sendgrid", "open")
    batch = [opened | {"sg_event_id": f"o{i}"} for i in range(20)]
    monkeypatch.setattr(webhook_service, "READ_BYTES", len(json.dumps(batch)))
    data, headers = gk.signer.sign("sendgrid", batch)
    res = gk.client.post("/webhooks/sendgrid", data=data, headers=headers)
    assert res.json == {"received": 20, "stored": 20, "duplicates": 0}
    assert gk.count("webhook_events") == 20


def test_a_mailgun_request_replayed_byte_for_byte_is_dropped_with_406(gk: Harness) -> None:
    data, headers = gk.signer.sign("mailgun", payload("mailgun", "click"))
    assert gk.post("mailgun", data, headers).status_code == 200
    replay = gk.post("mailgun", data, headers)
    assert replay.status_code == 406
    assert replay.json["error"]["code"] == "replayed"  # type: ignore[index]
    assert (gk.count("webhook_events"), gk.count("webhook_tokens")) == (1, 1)


@pytest.mark.parametrize(("provider", "status"), [("sendgrid", 400), ("mailgun", 406)])
def test_a_signed_but_malformed_body_gets_the_providers_no_retry_status(
    gk: Harness, provider: str, status: int
) -> None:
    body: Any = {"not": "a batch"} if provider == "sendgrid" else {"event-data": "broken"}
    assert gk.deliver(provider, body).status_code == status
    assert (gk.count("webhook_events"), gk.count("webhook_tokens")) == (0, 0)


class FailingStorage:
    """A real database error on every insert into webhook_events (a trigger), until restored."""

    def __init__(self, app: Flask) -> None:
        self.engine = app.extensions["gatekeeper.db"].engine
        sqlite = self.engine.dialect.name == "sqlite"
        self.create = (
            [
                "CREATE TRIGGER gk_refuse BEFORE INSERT ON webhook_events"
                " BEGIN SELECT RAISE(ABORT, 'storage unavailable'); END"
            ]
            if sqlite
            else [
                "CREATE FUNCTION gk_refuse() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'storage unavailable'; END $$",
                "CREATE TRIGGER gk_refuse BEFORE INSERT ON webhook_events"
                " FOR EACH ROW EXECUTE FUNCTION gk_refuse()",
            ]
        )
        self.drop = (
            ["DROP TRIGGER IF EXISTS gk_refuse"]
            if sqlite
            else ["DROP TRIGGER IF EXISTS gk_refuse ON webhook_events", "DROP FUNCTION IF EXISTS gk_refuse()"]
        )

    def _run(self, statements: list[str]) -> None:
        with self.engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)

    def break_(self) -> None:
        self._run(self.create)

    def restore(self) -> None:
        self._run(self.drop)


@pytest.fixture
def storage(app: Flask) -> Iterator[FailingStorage]:
    failing = FailingStorage(app)
    failing.break_()
    yield failing
    failing.restore()  # the PostgreSQL database is shared by the whole session


def test_a_database_failure_asks_for_a_retry_and_does_not_burn_the_token(
    gk: Harness, storage: FailingStorage, caplog: pytest.LogCaptureFixture
) -> None:
    data, headers = gk.signer.sign("mailgun", payload("mailgun", "hard_bounce"))
    res = gk.post("mailgun", data, headers)
    assert res.status_code == 503
    assert res.json["error"]["code"] == "storage_unavailable"  # type: ignore[index]
    assert "storage failed" in caplog.text
    assert (gk.count("webhook_tokens"), gk.count("suppressions")) == (0, 0)
    storage.restore()
    retry = gk.post("mailgun", data, headers)  # Mailgun's retry: the same token
    assert retry.status_code == 200
    assert (gk.count("webhook_events"), gk.count("suppressions")) == (1, 1)


def test_a_body_without_a_length_is_served_by_the_view_exactly_like_the_fast_path(gk: Harness) -> None:
    contact_id = gk.contact(RECIPIENT["sendgrid"])
    data, headers = gk.signer.sign("sendgrid", payload("sendgrid", "click"))
    chunked = gk.client.post(  # no Content-Length: the WSGI fast path hands it to Flask
        "/webhooks/sendgrid",
        input_stream=io.BytesIO(data),
        headers=headers,
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
    )
    assert chunked.status_code == 200, chunked.json
    assert chunked.json == {"received": 1, "stored": 0, "duplicates": 0, "queued": 1}  # a click waits
    gk.drain()
    assert gk.post("sendgrid", data, headers).json == chunked.json
    assert gk.count("webhook_events") == 1
    assert gk.deadline(contact_id) == gk.deadline_after("click")
    bounce, bounce_headers = gk.signer.sign("sendgrid", payload("sendgrid", "hard_bounce"))
    chunked = gk.client.post(
        "/webhooks/sendgrid",
        input_stream=io.BytesIO(bounce),
        headers=bounce_headers,
        environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
    )
    assert chunked.json == {"received": 1, "stored": 1, "duplicates": 0}  # urgent: stored at once
    assert gk.post("sendgrid", bounce, bounce_headers).json == {"received": 1, "stored": 0, "duplicates": 1}


def test_a_replay_refused_after_a_bounce_leaves_the_connection_usable(gk: Harness) -> None:
    data, headers = gk.signer.sign("mailgun", payload("mailgun", "hard_bounce"))
    assert gk.post("mailgun", data, headers).status_code == 200
    service_of(gk.app).recent.tokens.clear()  # as if the replay reached the other worker
    assert gk.post("mailgun", data, headers).status_code == 406  # rolled back in the write turn
    assert gk.deliver("mailgun", payload("mailgun", "open")).status_code == 200
    assert (gk.count("webhook_events"), gk.count("webhook_tokens")) == (2, 2)


def test_a_click_replayed_with_other_event_data_on_another_worker_is_never_stored(
    gk: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    contact_id = gk.contact(RECIPIENT["mailgun"])
    (opened,) = [payload("mailgun", "open")]
    data, headers = gk.signer.sign("mailgun", opened)
    assert gk.client.post("/webhooks/mailgun", data=data, headers=headers).status_code == 200
    # Mailgun signs the timestamp and token only: the same signature over a forged click.
    forged = json.loads(data) | {"event-data": payload("mailgun", "click")["event-data"]}
    service_of(gk.app).recent.tokens.clear()  # the other worker never saw the token
    answer = gk.post("mailgun", json.dumps(forged).encode(), headers)  # drains both
    assert answer.status_code == 200  # journaled before anyone could tell
    assert [r.kind for r in gk.query("SELECT kind FROM webhook_events")] == ["open"]
    assert gk.facts(contact_id) == []  # no interest: the forged click was never stored
    assert gk.deadline(contact_id) == FIRST_DEADLINE
    assert "replayed a used token" in caplog.text


def test_a_replay_on_the_same_worker_is_refused_at_once_even_before_the_drain(gk: Harness) -> None:
    data, headers = gk.signer.sign("mailgun", payload("mailgun", "click"))
    assert gk.client.post("/webhooks/mailgun", data=data, headers=headers).json["queued"] == 1  # type: ignore[index]
    replay = gk.client.post("/webhooks/mailgun", data=data, headers=headers)
    assert replay.status_code == 406
    assert replay.json["error"]["code"] == "replayed"  # type: ignore[index]
    gk.drain()
    assert (gk.count("webhook_events"), gk.count("webhook_tokens")) == (1, 1)


# --- SNS, Mandrill's probe, routing -------------------------------------------------------


def test_an_sns_subscription_is_confirmed_by_fetching_its_subscribe_url(
    gk: Harness, aws: OutgoingHttp
) -> None:
    envelope = payload("ses", "subscription_confirmation")
    assert gk.deliver("ses", envelope).status_code == 200
    assert aws.fetched == [envelope["SubscribeURL"]]
    assert gk.count("webhook_events") == 0


def test_an_sns_confirmation_that_cannot_reach_aws_asks_sns_to_retry(gk: Harness, aws: OutgoingHttp) -> None:
    aws.fail = True
    res = gk.deliver("ses", payload("ses", "subscription_confirmation"))
    assert res.status_code == 503
    assert res.json["error"]["code"] == "upstream_unavailable"  # type: ignore[index]


def test_mandrills_unsigned_setup_probe_is_answered(client: FlaskClient) -> None:
    assert client.head("/webhooks/mandrill").status_code == 200


def test_an_unknown_provider_is_a_json_404(client: FlaskClient) -> None:
    res = client.post("/webhooks/sendgird", data=b"[]")
    assert res.status_code == 404
    assert res.json["error"]["code"] == "not_found"  # type: ignore[index]


def test_a_body_over_the_configured_limit_is_refused(db_url: str, tmp_path: Path, signer: Signer) -> None:
    small = create_app(settings_for(db_url, tmp_path, signer, max_body_bytes=1024))
    data, headers = signer.sign("sendgrid", payload("sendgrid", "open") * 20)
    res = small.test_client().post("/webhooks/sendgrid", data=data, headers=headers)
    assert res.status_code == 413
    small.extensions["gatekeeper.jobs"].pool.shutdown(wait=True)
    small.extensions["gatekeeper.db"].engine.dispose()


@pytest.mark.parametrize(
    "configured",
    [
        "{not json",
        '["sendgrid"]',
        '{"sendgird": [{"public_key": "x"}]}',
        '{"mailgun": [{"signing_key": 42}]}',
    ],
    ids=["not JSON", "not an object", "unknown provider", "non-string value"],
)
def test_a_wrong_webhook_configuration_stops_the_service_at_startup(
    tmp_path: Path, signer: Signer, configured: str
) -> None:
    settings = settings_for(f"sqlite:///{tmp_path / 'x.db'}", tmp_path, signer, webhooks=configured)
    with pytest.raises(ConfigError, match="GATEKEEPER_WEBHOOKS"):
        create_app(settings)


def test_a_token_used_by_a_concurrent_request_after_our_check_is_a_replay(gk: Harness) -> None:
    database = gk.app.extensions["gatekeeper.db"]
    now = datetime.now(UTC)
    ours, theirs = database.sessionmaker(), database.sessionmaker()
    book, other = TokenBook(), TokenBook()
    assert book.seen("mailgun", "tok-1", now=now) is False  # verify only notes the token
    assert other.seen("mailgun", "tok-1", now=now) is False  # the provider's duplicate, faster
    other.record(Sql.of(theirs))
    theirs.commit()
    with pytest.raises(ReplayError):
        book.record(Sql.of(ours))
    ours.rollback()
    for session in (ours, theirs):
        session.close()
    assert gk.count("webhook_tokens") == 1


# --- the kept connection per worker ----------------------------------------------------


def test_a_rollback_on_a_lost_connection_is_a_database_error(gk: Harness) -> None:
    with service_of(gk.app).connections() as sql:
        sql.connection.close()  # what a server restart leaves behind
        with pytest.raises(DBAPIError):
            sql.rollback()
        with pytest.raises(DBAPIError):
            sql.all("SELECT 1")


# Only a server can drop a connection in the middle of a statement: PostgreSQL alone.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_connection_lost_in_the_write_phase_asks_for_a_retry_then_is_replaced(gk: Harness) -> None:
    engine = gk.app.extensions["gatekeeper.db"].engine
    kill = [
        "CREATE FUNCTION gk_kill() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NEW; END $$",
        "CREATE TRIGGER gk_kill BEFORE INSERT ON webhook_events FOR EACH ROW EXECUTE FUNCTION gk_kill()",
    ]
    with engine.begin() as conn:
        for statement in kill:
            conn.exec_driver_sql(statement)
    try:
        lost = gk.deliver("mailgun", payload("mailgun", "hard_bounce"))  # urgent: stored at once
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER gk_kill ON webhook_events")
            conn.exec_driver_sql("DROP FUNCTION gk_kill()")
    assert lost.status_code == 503, lost.get_data()
    assert gk.deliver("mailgun", payload("mailgun", "hard_bounce")).status_code == 200  # a new connection
    assert gk.count("webhook_events") == 1


def test_a_forked_child_disposing_the_engine_leaves_the_parents_connection_open(gk: Harness) -> None:
    assert gk.deliver("mailgun", payload("mailgun", "click")).status_code == 200
    engine = gk.app.extensions["gatekeeper.db"].engine
    child = os.fork()
    if child == 0:  # what a pre-forking server's worker does first, then serves on its own
        failed = 1
        try:
            engine.dispose(close=False)
            failed = int(gk.deliver("mailgun", payload("mailgun", "open")).status_code != 200)
        finally:
            os._exit(failed)
    _, code = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(code) == 0
    assert gk.deliver("mailgun", payload("mailgun", "unsubscribe")).status_code == 200
    assert gk.count("webhook_events") == 3


# --- the paused collector -------------------------------------------------------------


def test_the_collector_paused_for_a_request_runs_again_even_after_an_exception() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        assert not gc.isenabled()
        raise RuntimeError("a bug in an adapter")
    assert gc.isenabled()


def test_the_collector_runs_again_after_answered_refused_and_failed_requests(
    gk: Harness, storage: FailingStorage
) -> None:
    # Hard bounces: urgent, so the request itself meets the broken storage.
    statuses = [gk.deliver("sendgrid", payload("sendgrid", "hard_bounce"), forged=True).status_code]
    assert gc.isenabled()
    statuses.append(gk.deliver("sendgrid", payload("sendgrid", "hard_bounce")).status_code)
    assert gc.isenabled()
    storage.restore()
    statuses.append(gk.deliver("sendgrid", payload("sendgrid", "hard_bounce")).status_code)
    assert gc.isenabled()
    assert statuses == [401, 503, 200]


def test_a_batch_suppressing_thousands_of_addresses_is_stored_whole(gk: Harness) -> None:
    (bounce,) = payload("sendgrid", "hard_bounce")
    batch = [bounce | {"sg_event_id": f"storm-{i}", "email": f"gone{i}@example.com"} for i in range(10_000)]
    res = gk.deliver("sendgrid", batch)
    assert res.status_code == 200, res.json
    assert res.json["stored"] == 10_000  # type: ignore[index]
    assert gk.count("suppressions") == 10_000
    assert gk.count("journal WHERE fact_table = 'suppression'") == 10_000


# --- the spool's batch handler (gatekeeper.webhook_spooled) -----------------------------


def spooled(gk: Harness, batch: list[dict[str, Any]], key: str = "test:0") -> SpoolRecord:
    """A spool line as the service writes it, for the SendGrid events of ``batch``."""
    adapter = service_of(gk.app).adapters["sendgrid"]
    events = adapter.parse(InboundRequest("POST", PUBLIC_BASE_URL, {}, json.dumps(batch).encode())).events
    return SpoolRecord(key, spool_record(datetime.now(UTC), TokenBook(), events))


def spooled_line(**fields: str) -> bytes:
    """A version-1 line of one open event, some of its fields replaced by raw JSON."""
    row = {
        "provider": '"sendgrid"',
        "kind": '"open"',
        "provider_event": '"open"',
        "key": '"sendgrid:k1"',
        "occurred": '"2024-05-06T13:00:00+00:00"',
        "email": '"jane@example.com"',
        "contact": "null",
        "campaign": "7",
        "url": "null",
        "agent": "null",
        "raw": '"{}"',
    } | fields
    return f'[1, "2024-05-06T13:00:00+00:00", [], [[{", ".join(row.values())}]]]'.encode()


def test_a_spool_line_reads_back_the_events_it_was_written_from(gk: Harness) -> None:
    (click,) = payload("sendgrid", "click")
    (opened,) = payload("sendgrid", "open")
    batch = [click, opened | {"sg_event_id": "o1", "timestamp": click["timestamp"]}, opened]
    adapter = service_of(gk.app).adapters["sendgrid"]
    events = adapter.parse(InboundRequest("POST", PUBLIC_BASE_URL, {}, json.dumps(batch).encode())).events
    book = TokenBook()
    book.seen("mailgun", "token-1", now=datetime.now(UTC))
    received = datetime(2024, 5, 6, 13, 0, tzinfo=UTC)
    read = read_spool_record(spool_record(received, book, events))
    assert (read.received_at, read.tokens) == (received, [("mailgun", "token-1")])
    assert [e._replace(raw={}) for e in read.events] == [e._replace(raw={}) for e in events]
    assert read.events[0].occurred_at is read.events[1].occurred_at  # one instant, read once
    assert spooled_line() and read_spool_record(spooled_line()).events[0].campaign_id == 7


def spool_handler(gk: Harness) -> Callable[[list[SpoolRecord]], None]:
    return webhook_spooled.handler(
        gk.app.extensions["gatekeeper.settings"], gk.app.extensions["gatekeeper.db"]
    )


def journaled(gk: Harness) -> list[SpoolRecord]:
    """Take the lines the requests journaled, without applying them."""
    records: list[SpoolRecord] = []
    spool_dir = Path(gk.app.extensions["gatekeeper.settings"].spool_dir)
    drain(spool_dir, webhook_spooled.STREAM, records.extend)
    return records


def test_a_spooled_batch_handed_twice_changes_nothing_the_second_time(gk: Harness) -> None:
    contact_id = gk.contact(RECIPIENT["mailgun"])
    for kind in ("click", "open", "soft_bounce"):
        data, headers = gk.signer.sign("mailgun", payload("mailgun", kind))
        assert gk.client.post("/webhooks/mailgun", data=data, headers=headers).status_code == 200
    records = journaled(gk)
    assert len(records) == 3
    handle = spool_handler(gk)
    handle(records)
    tables = ("webhook_events", "webhook_tokens", "events", "journal")
    first = {table: gk.count(table) for table in tables}
    deadline = gk.deadline(contact_id)
    handle(records)  # a crash before the drainer saved its progress
    assert {table: gk.count(table) for table in tables} == first
    assert first["webhook_events"] == 3
    assert deadline == gk.deadline_after("click") != FIRST_DEADLINE
    assert gk.deadline(contact_id) == deadline


def test_spooled_clicks_out_of_order_never_move_the_deadline_back(gk: Harness) -> None:
    contact_id = gk.contact(RECIPIENT["sendgrid"])
    handle = spool_handler(gk)
    newer, older = sendgrid_click(1_715_000_460, "newer"), sendgrid_click(1_700_000_000, "older")
    handle([spooled(gk, newer, "a:0"), spooled(gk, older, "a:1")])  # one batch, newer first
    assert gk.deadline(contact_id) == "2027-05-06T13:01:00Z"
    handle([spooled(gk, sendgrid_click(1_690_000_000, "oldest"), "a:2")])  # a later batch
    assert [f.type for f in gk.facts(contact_id)] == ["interest"] * 3
    assert gk.deadline(contact_id) == "2027-05-06T13:01:00Z"


def test_a_spooled_older_unsubscribe_never_undoes_a_newer_suppression(gk: Harness) -> None:
    (event,) = payload("sendgrid", "unsubscribe")
    handle = spool_handler(gk)
    handle([spooled(gk, [event | {"timestamp": 1_715_000_520, "sg_event_id": "newer"}])])
    handle([spooled(gk, [event | {"timestamp": 1_700_000_000, "sg_event_id": "older"}])])
    (row,) = gk.query("SELECT occurred_at FROM suppressions")
    assert isoformat(read_ts(row.occurred_at)) == "2024-05-06T13:02:00Z"
    assert gk.suppressions(RECIPIENT["sendgrid"]) == {("unsubscribe", "email")}


def test_the_drainer_groups_requests_in_order_without_splitting_one() -> None:
    def request(events: int) -> SpooledRequest:
        return SpooledRequest(datetime.now(UTC), [], [cast(NormalizedEvent, None)] * events)

    sizes = [1, 2, 1, 5, 1, 1]
    requests_ = [request(n) for n in sizes]
    found = webhook_spooled.groups(requests_, 3)
    assert [[len(r.events) for r in g] for g in found] == [[1, 2], [1], [5], [1, 1]]
    assert [r for g in found for r in g] == requests_
    assert webhook_spooled.groups([], 3) == []


def poison(app: Flask, key: str) -> list[str]:
    """Triggers refusing one dedupe key with a real database error; the statements that drop them."""
    engine = app.extensions["gatekeeper.db"].engine
    if engine.dialect.name == "sqlite":
        create = [
            "CREATE TRIGGER gk_poison BEFORE INSERT ON webhook_events"
            f" WHEN NEW.dedupe_key = '{key}' BEGIN SELECT RAISE(ABORT, 'poison'); END"
        ]
        drop = ["DROP TRIGGER IF EXISTS gk_poison"]
    else:
        create = [
            "CREATE FUNCTION gk_poison() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'poison'; END $$",
            "CREATE TRIGGER gk_poison BEFORE INSERT ON webhook_events FOR EACH ROW"
            f" WHEN (NEW.dedupe_key = '{key}') EXECUTE FUNCTION gk_poison()",
        ]
        drop = ["DROP TRIGGER IF EXISTS gk_poison ON webhook_events", "DROP FUNCTION IF EXISTS gk_poison()"]
    with engine.begin() as conn:
        for statement in create:
            conn.exec_driver_sql(statement)
    return drop


def test_the_drainer_commits_a_batch_group_by_group_and_a_failed_group_is_handed_again(
    gk: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook_spooled, "EVENTS_PER_TRANSACTION", 2)
    contact_id = gk.contact(RECIPIENT["sendgrid"])
    records = [
        spooled(gk, sendgrid_click(1_715_000_460, "c1") + sendgrid_click(1_715_000_470, "c2"), "a:0"),
        spooled(gk, sendgrid_click(1_715_000_480, "poison"), "a:1"),
    ]
    drop = poison(gk.app, "sendgrid:poison")
    try:
        with pytest.raises(DBAPIError):
            spool_handler(gk)(records)
        assert gk.count("webhook_events") == 2  # the first group's transaction is committed
    finally:
        engine = gk.app.extensions["gatekeeper.db"].engine
        with engine.begin() as conn:
            for statement in drop:
                conn.exec_driver_sql(statement)
    spool_handler(gk)(records)  # the drainer hands the whole batch again
    assert gk.count("webhook_events") == 3
    assert [f.type for f in gk.facts(contact_id)] == ["interest"] * 3
    with gk.app.extensions["gatekeeper.db"].session_scope() as session:
        report = verify(session, gk.app.extensions["gatekeeper.context"].hasher)
    assert report.ok, report.problem


def test_a_token_spent_by_an_earlier_group_of_the_batch_is_a_replay(
    gk: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(webhook_spooled, "EVENTS_PER_TRANSACTION", 1)
    adapter = service_of(gk.app).adapters["mailgun"]
    lines = []
    for kind in ("click", "open"):
        body = json.dumps(payload("mailgun", kind)).encode()
        events = adapter.parse(InboundRequest("POST", PUBLIC_BASE_URL, {}, body)).events
        book = TokenBook()
        book.seen("mailgun", "the-same-token", now=datetime.now(UTC))
        lines.append(SpoolRecord(f"m:{kind}", spool_record(datetime.now(UTC), book, events)))
    spool_handler(gk)(lines)
    assert gk.count("webhook_tokens") == 1
    assert [row.kind for row in gk.query("SELECT kind FROM webhook_events")] == ["click"]
    assert "replayed a used token" in caplog.text


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b'{"a": 1}',
        b'[2, "2024-05-06T13:00:00+00:00", [], []]',
        b'[1, "yesterday", [], []]',
        b'[1, "2024-05-06T13:00:00+00:00", [], [["sendgrid", "explosion"]]]',
        spooled_line(contact='"42"'),
        spooled_line(kind='"teleport"'),
        spooled_line(raw="null"),
        spooled_line(occurred='"2024-05-06T13:00:00"'),
        spooled_line(url="[]"),
    ],
    ids=[
        "not JSON",
        "an object",
        "unknown version",
        "bad instant",
        "bad event",
        "contact id as text",
        "unknown kind",
        "no raw JSON",
        "instant without offset",
        "URL not text",
    ],
)
def test_a_malformed_spool_line_is_logged_and_skipped_and_the_rest_stored(
    gk: Harness, caplog: pytest.LogCaptureFixture, line: bytes
) -> None:
    (opened,) = payload("sendgrid", "open")
    spool_handler(gk)([SpoolRecord("broken.log:0", line), spooled(gk, [opened], "good.log:0")])
    assert gk.count("webhook_events") == 1
    assert "broken.log:0" in caplog.text
    assert "good.log:0" not in caplog.text


def test_a_failing_database_leaves_the_spooled_events_for_the_next_drain(
    gk: Harness, storage: FailingStorage
) -> None:
    data, headers = gk.signer.sign("sendgrid", payload("sendgrid", "open"))
    assert gk.client.post("/webhooks/sendgrid", data=data, headers=headers).json["queued"] == 1  # type: ignore[index]
    with pytest.raises(DBAPIError):
        gk.drain()
    storage.restore()
    gk.drain()
    assert gk.count("webhook_events") == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_kept_sqlite_connection_checkpoints_after_its_turn_never_inside_a_commit(gk: Harness) -> None:
    connections = service_of(gk.app).connections
    database = Path(str(gk.app.extensions["gatekeeper.db"].engine.url.database))
    with connections() as sql:
        assert sql.one("PRAGMA wal_autocheckpoint")[0] == 0
        sql.run("CREATE TABLE gk_filler (x TEXT)")
        sql.many("INSERT INTO gk_filler VALUES (?)", [("x" * 500,)] * 4_000)  # 2 MB, in the WAL
        before = database.stat().st_size
        sql.commit()
        assert database.stat().st_size == before  # the COMMIT copied nothing into the database
        connections.written(sql, connections.checkpoint_rows)  # enough written: its own checkpoint
    assert database.stat().st_size > before + 1_000_000
