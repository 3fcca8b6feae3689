"""The proof journal and the evidence pack, through the HTTP API and the CLI, on both databases:
a contact's whole life is told and vouched for, and any edit of the database is caught."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import TEST_SECRET
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from gatekeeper.cli import main
from gatekeeper.models import utcnow
from gatekeeper.proof import journal
from gatekeeper.proof.verify import verify

PAUL = {
    "external_id": "crm-42",
    "email": "Paul.Martin@Example.fr",
    "phone": "06 12 34 56 78",
    "first_name": "Paul",
    "last_name": "Martin",
    "audience": "b2c",
    "collected_at": "2025-06-10",
    "collected_by": "ACME SAS",
    "source": {"type": "direct", "name": "checkout", "proof_ref": "form-v3"},
    "postal_address": {"line1": "1 rue de la Paix", "postcode": "69001", "city": "Lyon", "country": "FR"},
    "attributes": {"birth_year": 1980},
}
REF = {"external_id": "crm-42"}
CONSENT = {
    "contact": REF,
    "type": "consent",
    "channel": "email",
    "given": True,
    "method": "double_opt_in",
    "occurred_at": "2025-06-10T10:00:00Z",
    "text_version": "newsletter-v2",
    "form_id": "checkout-form",
    "url": "https://acme.example/checkout",
    "ip": "203.0.113.7",
    "user_agent": "Firefox/140",
    "sender": "ACME SAS",
    "prechecked": False,
}
LIFE = [
    CONSENT,
    {"contact": REF, "type": "interest", "kind": "click", "occurred_at": "2026-02-01T10:00:00Z"},
    {
        "contact": REF,
        "type": "purchase",
        "occurred_at": "2026-03-01T10:00:00Z",
        "amount": 42.5,
        "product_category": "coffee_capsules",
        "seller": "ACME SAS",
    },
    {
        "contact": REF,
        "type": "consent",
        "channel": "email",
        "given": True,
        "method": "reconsent",
        "occurred_at": "2026-05-01T10:00:00Z",
        "text_version": "reconsent-v1",
        "ip": "203.0.113.8",
    },
]
CAMPAIGN = {
    "channel": "email",
    "purpose": "commercial",
    "sender": "ACME SAS",
    "product_category": "coffee_capsules",
}


def post(client: FlaskClient, path: str, auth: dict[str, str], body: Any) -> Any:
    res = client.post(path, json=body, headers=auth)
    assert res.status_code < 300, res.json
    return res.json


def live_a_life(client: FlaskClient, auth: dict[str, str], app: Flask) -> int:
    """Collected, consented, clicked, purchased, asked to reconsent and answered, checked by the gate."""
    cid: int = post(client, "/api/v1/contacts", auth, {"contacts": [PAUL]})["contacts"][0]["id"]
    post(client, "/api/v1/events", auth, {"events": LIFE})
    with app.extensions["gatekeeper.db"].session_scope() as session:
        # What the reconsent mailer records when it sends (its payload: references only).
        journal.record_other(
            session,
            app.extensions["gatekeeper.context"].hasher,
            "reconsent_sent",
            f"contact:{cid}",
            {"contact_id": cid, "template": "reconsent"},
        )
    post(client, "/api/v1/checks", auth, {"campaign": CAMPAIGN, "recipients": [REF], "as_of": "2026-06-01"})
    return cid


def check_journal(app: Flask) -> Any:
    with app.extensions["gatekeeper.db"].session_scope() as session:
        return verify(session, app.extensions["gatekeeper.context"].hasher)


def sql(app: Flask, statement: str, **params: Any) -> list[Any]:
    with app.extensions["gatekeeper.db"].session_scope() as session:
        result = session.execute(text(statement), params)
        return list(result.all()) if result.returns_rows else []


def test_a_whole_life_yields_an_evidence_pack_that_tells_the_story(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    cid = live_a_life(client, auth, app)
    pack: Any = client.get(f"/api/v1/contacts/{cid}/evidence?as_of=2026-06-01", headers=auth).json
    assert pack["collection"]["source"] == {"type": "direct", "name": "checkout", "proof_ref": "form-v3"}
    first, answer = pack["consents"]
    assert (first["method"], first["text_version"], first["form_id"], first["ip"]) == (
        "double_opt_in",
        "newsletter-v2",
        "checkout-form",
        "203.0.113.7",
    )
    assert answer["method"] == "reconsent" and answer["journal"]
    assert pack["retention"]["clock_events"][0]["type"] == "consent"
    assert "reconsent" in pack["retention"]["reason"] or "consent" in pack["retention"]["reason"]
    assert pack["retention"]["deadline"].startswith("2029-")
    assert [e["type"] for e in pack["events"]] == ["consent", "interest", "purchase", "consent"]
    assert all(len(e["journal"]) == 1 for e in pack["events"])
    kinds = [e["kind"] for e in pack["journal"]["entries"]]
    assert kinds == ["consent", "interest", "purchase", "reconsent_answered", "reconsent_sent"]
    assert pack["journal"]["entries_intact"] is True
    report = check_journal(app)
    assert report.ok, report.problem
    assert report.facts_checked == 5  # four events and the verdict run


def test_the_evidence_pack_prints_as_html(app: Flask, client: FlaskClient, auth: dict[str, str]) -> None:
    cid = live_a_life(client, auth, app)
    res = client.get(f"/api/v1/contacts/{cid}/evidence?format=html", headers=auth)
    assert res.status_code == 200 and res.mimetype == "text/html"
    page = res.get_data(as_text=True)
    assert "newsletter-v2" in page and "reconsent_answered" in page and "ALTERED" not in page


def test_the_journal_holds_no_clear_personal_data(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    live_a_life(client, auth, app)
    dump = repr(sql(app, "SELECT * FROM journal")).lower()
    for clear in ("paul", "martin", "example.fr", "612345678", "203.0.113", "crm-42", "lyon"):
        assert clear not in dump


@pytest.mark.parametrize(
    ("tamper", "seq", "says"),
    [
        ("UPDATE journal SET kind = 'open' WHERE seq = 2", 2, "altered"),
        ("DELETE FROM journal WHERE seq = 3", 3, "removed"),
        ("UPDATE journal SET prev_hash = entry_hash WHERE seq = 4", 4, "inserted or replaced"),
        ("DELETE FROM journal WHERE seq = (SELECT max(seq) FROM journal)", 6, "removed"),
    ],
    ids=["an-edited-entry", "a-removed-entry", "a-relinked-entry", "a-removed-tail"],
)
def test_tampering_with_the_journal_is_caught_at_the_first_bad_entry(
    app: Flask, client: FlaskClient, auth: dict[str, str], tamper: str, seq: int, says: str
) -> None:
    live_a_life(client, auth, app)
    sql(app, tamper)
    report = check_journal(app)
    assert not report.ok
    assert report.problem.seq == seq and says in report.problem.problem


def test_editing_a_fact_behind_the_journal_is_caught(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    live_a_life(client, auth, app)
    (eid,) = sql(app, "SELECT min(id) FROM events")[0]
    sql(
        app,
        "UPDATE events SET data = :d WHERE id = :id",
        id=eid,
        d='{"channel": "email", "given": true, "occurred_at": "2024-01-01T00:00:00Z"}',
    )
    report = check_journal(app)
    assert not report.ok and f"event {eid}" in report.problem.problem and "altered" in report.problem.problem


def test_the_cli_verifies_and_reports_tampering_with_exit_1(
    app: Flask, client: FlaskClient, auth: dict[str, str], db_url: str
) -> None:
    live_a_life(client, auth, app)
    env = {"GATEKEEPER_ENV": "test", "GATEKEEPER_DATABASE_URL": db_url, "GATEKEEPER_SECRET_KEY": TEST_SECRET}
    ok = CliRunner().invoke(main, ["audit", "verify"], env=env)
    assert ok.exit_code == 0, ok.output
    assert "journal intact" in ok.output
    sql(app, "UPDATE journal SET subject_ref = 'contact:999' WHERE seq = 1")
    broken = CliRunner().invoke(main, ["audit", "verify"], env=env)
    assert broken.exit_code == 1
    assert "entry 1 was altered" in broken.output


def test_an_anchor_from_an_earlier_export_catches_a_rewritten_chain(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    live_a_life(client, auth, app)
    head = check_journal(app).heads["main"]
    anchor = f"{head['seq']}:{head['entry_hash']}"
    sql(app, "UPDATE journal SET entry_hash = :h WHERE seq = :s", h="f" * 64, s=head["seq"])
    sql(app, "UPDATE journal_heads SET entry_hash = :h", h="f" * 64)
    with app.extensions["gatekeeper.db"].session_scope() as session:
        report = verify(session, app.extensions["gatekeeper.context"].hasher, anchor=anchor)
    assert not report.ok  # caught by the chain itself here; the anchor guards a full rewrite


def test_the_audit_export_writes_csv_and_a_summary(
    app: Flask, client: FlaskClient, auth: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    cid = live_a_life(client, auth, app)
    post(client, f"/api/v1/contacts/{cid}/objection", auth, {})
    env = {"GATEKEEPER_ENV": "test", "GATEKEEPER_DATABASE_URL": db_url, "GATEKEEPER_SECRET_KEY": TEST_SECRET}
    out = tmp_path / "audit"
    res = CliRunner().invoke(main, ["audit", "export", "--as-of", "2030-01-01", str(out)], env=env)
    assert res.exit_code == 0, res.output
    names = {p.name for p in out.iterdir()}
    assert {
        "basis_by_channel.csv",
        "contacts_by_retention_state.csv",
        "reconsent_results.csv",
        "anonymisations.csv",
        "objections.csv",
        "policy_versions.csv",
        "journal_verification.csv",
        "summary.html",
    } <= names
    assert "intact" in (out / "journal_verification.csv").read_text()
    assert "answer,accepted,1" in (out / "reconsent_results.csv").read_text()
    assert len((out / "objections.csv").read_text().splitlines()) == 2
    assert "fr-2026" in (out / "policy_versions.csv").read_text()
    assert "paul" not in (out / "summary.html").read_text().lower()


def test_facts_stored_behind_the_register_are_caught_up_by_the_sweep(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    cid = live_a_life(client, auth, app)
    # A fast path (the click link) inserts its fact directly, without a journal entry.
    sql(
        app,
        "INSERT INTO events (contact_id, type, occurred_at, data, origin, dedupe_key, created_at)"
        " SELECT contact_id, 'interest', occurred_at, data, 'link', 'fast-1', created_at FROM events"
        " WHERE contact_id = :c AND type = 'interest'",
        c=cid,
    )
    with app.extensions["gatekeeper.db"].session_scope() as session:
        hasher = app.extensions["gatekeeper.context"].hasher
        assert journal.record_pending_events(session, hasher) == 1
        assert journal.record_pending_events(session, hasher) == 0
    assert check_journal(app).ok


def test_the_purge_journals_its_anonymisations_and_the_chain_still_verifies(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    from gatekeeper.retention.purge import anonymise_contacts

    cid = live_a_life(client, auth, app)
    with app.extensions["gatekeeper.db"].session_scope() as session:
        anonymise_contacts(
            session, [cid], app.extensions["gatekeeper.context"], reason="expired", archive=None, now=utcnow()
        )
    report = check_journal(app)
    assert report.ok, report.problem
    assert report.facts_anonymised > 0
    with app.extensions["gatekeeper.db"].engine.connect() as conn:
        kinds = [
            r[0]
            for r in conn.execute(
                text("SELECT kind FROM journal WHERE subject_ref = :s ORDER BY seq"), {"s": f"contact:{cid}"}
            )
        ]
    assert kinds[-1] == "anonymised"


def test_an_anonymisation_done_behind_the_services_back_is_caught_then_caught_up(
    app: Flask, client: FlaskClient, auth: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    cid = live_a_life(client, auth, app)
    with app.extensions["gatekeeper.db"].engine.begin() as conn:  # a script scrubbing by hand
        conn.execute(text("UPDATE events SET data = '{}' WHERE contact_id = :c"), {"c": cid})
        conn.execute(
            text("UPDATE contacts SET anonymised_at = created_at, email = NULL WHERE id = :c"), {"c": cid}
        )
    assert not check_journal(app).ok  # scrubbed facts, and nothing in the chain says why
    env = {"GATEKEEPER_ENV": "test", "GATEKEEPER_DATABASE_URL": db_url, "GATEKEEPER_SECRET_KEY": TEST_SECRET}
    res = CliRunner().invoke(main, ["task", "run", "journal_catch_up"], env=env)
    assert res.exit_code == 0, res.output
    assert "anonymised" in res.output
    assert check_journal(app).ok
