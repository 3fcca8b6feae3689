"""The retention tasks through the API and the CLI: reminders, refusals, dry runs, the
anonymisation's details, the legal archive and the forecast, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from test_retention_helpers import (
    ZEPHYRINE,
    Mailbox,
    add_person,
    body_text,
    collected_for,
    contact_row,
    pauls,
    run,
)

from gatekeeper.api.auth import create_api_key
from gatekeeper.cli import main
from gatekeeper.links import links_of
from gatekeeper.models import utcnow
from gatekeeper.retention.archive import ArchivedRecord, ArchiveStore, invoice_keep_until
from gatekeeper.retention.purge import age_band, anonymise_contacts
from gatekeeper.retention.tasks import TaskEnv, run_task
from gatekeeper.sqlbulk import read_json

NOW = utcnow()


def count(app: Flask, sql: str) -> int:
    with app.extensions["gatekeeper.db"].engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


def test_one_reminder_follows_the_first_message_seven_days_before_the_deadline(
    app: Flask, client: FlaskClient, auth: dict[str, str], env: TaskEnv, mailbox: Mailbox
) -> None:
    add_person(client, auth, pauls(1)[0] | {"collected_at": collected_for(timedelta(days=29), NOW)})
    database = app.extensions["gatekeeper.db"]
    for day in (0, 1, 22, 23, 24):  # the reminder window opens 7 days before the deadline
        run_task(database, env, "plan_reconsent", NOW + timedelta(days=day))
        run_task(database, env, "send_outbox", NOW + timedelta(days=day))
    subjects = [str(m["Subject"]) for m in mailbox.sent]
    assert len(subjects) == 2 and subjects[1].startswith("Rappel")
    assert "Ceci est un rappel" in body_text(mailbox.sent[1])


def test_contacts_far_from_their_deadline_or_without_an_address_get_nothing(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    add_person(client, auth, pauls(1)[0] | {"collected_at": NOW.date().isoformat()})
    phone_only = {k: v for k, v in pauls(2)[1].items() if k != "email"} | {"phone": "+33611223344"}
    add_person(client, auth, phone_only | {"collected_at": collected_for(timedelta(days=5), NOW)})
    assert run(client, auth, "plan_reconsent", NOW)["done"]["reconsent"] == 0


def test_a_stop_answer_anonymises_at_the_next_purge_and_the_objection_stays(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    cid = add_person(client, auth, ZEPHYRINE | {"collected_at": collected_for(timedelta(days=200), NOW)})
    path = "/r/" + links_of(app).reconsent(cid, NOW + timedelta(days=200))
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert token is not None
    assert client.post(path, data={"csrf_token": token.group(1), "answer": "stop"}).status_code == 200
    assert run(client, auth, "purge_expired", NOW)["done"]["refused"] == 1
    assert contact_row(app, cid)["anonymised_at"] is not None
    with app.extensions["gatekeeper.db"].engine.connect() as conn:
        reasons = set(
            conn.execute(text("SELECT reason FROM suppressions WHERE coord_kind = 'email'")).scalars()
        )
    assert reasons == {"unsubscribe", "erasure"}


def test_a_dry_run_reports_what_would_happen_and_changes_nothing(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    collected = collected_for(timedelta(days=3), NOW)
    add_person(client, auth, ZEPHYRINE | {"collected_at": collected})
    events = [{"type": "purchase", "contact": {"email": ZEPHYRINE["email"]}, "occurred_at": collected}]
    client.post("/api/v1/events", json={"events": events}, headers=auth)
    later = NOW + timedelta(days=4)
    assert run(client, auth, "purge_expired", later, dry_run=True) == {
        "task": "purge_expired",
        "as_of": later.isoformat().replace("+00:00", "Z"),
        "dry_run": True,
        "would_anonymise": 1,
        "would_archive_invoices": 1,
    }
    assert run(client, auth, "plan_reconsent", NOW, dry_run=True)["would_queue"] == {
        "reconsent": 1,
        "reconsent_reminder": 0,
    }
    assert count(app, "SELECT COUNT(*) FROM contacts WHERE anonymised_at IS NULL") == 1
    assert count(app, "SELECT COUNT(*) FROM outbox") == 0


def test_anonymising_twice_changes_nothing_more_and_without_an_archive_invoices_stay_stripped(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    cid = add_person(client, auth, ZEPHYRINE | {"collected_at": "2024-01-10"})
    events = [
        {
            "type": "purchase",
            "contact": {"email": ZEPHYRINE["email"]},
            "occurred_at": "2024-01-10",
            "amount": 12,
            "product_category": "tea",
        }
    ]
    client.post("/api/v1/events", json={"events": events}, headers=auth)
    ctx, database = app.extensions["gatekeeper.context"], app.extensions["gatekeeper.db"]
    for expected in (1, 0):
        with database.session_scope() as session:
            done = anonymise_contacts(session, [cid, cid], ctx, reason="erasure", archive=None, now=NOW)
        assert done == expected
    with database.engine.connect() as conn:
        (data,) = conn.execute(text("SELECT data FROM events WHERE type = 'purchase'")).one()
    assert read_json(data) == {"occurred_at": "2024-01-09T23:00:00Z", "product_category": "tea"}


def test_the_task_api_names_its_tasks_and_wants_a_json_object(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    assert client.post("/api/v1/tasks/nope/run", json={}, headers=auth).status_code == 404
    assert client.post("/api/v1/tasks/purge_expired/run", json=[1], headers=auth).status_code == 400
    assert client.post("/api/v1/tasks/purge_expired/run", headers=auth).status_code == 200
    with app.extensions["gatekeeper.db"].session_scope() as session:
        key = create_api_key(session, app.extensions["gatekeeper.context"].hasher, "ro", ("register:read",))
    denied = client.post("/api/v1/tasks/purge_expired/run", headers={"Authorization": f"Bearer {key}"})
    assert denied.status_code == 403


def test_the_forecast_counts_contacts_reaching_each_state_per_month(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    as_of = datetime(2026, 11, 22, 10, tzinfo=UTC)
    # Collected 2024-01-15 (Paris): reconsent due from 2026-12-16, deadline 2027-01-15.
    for person in pauls(3):
        add_person(client, auth, person | {"collected_at": "2024-01-15"})
    res = client.get("/api/v1/retention/forecast?months=3&as_of=2026-11-22T10:00:00Z", headers=auth)
    assert res.status_code == 200
    assert res.json["months"] == [
        {"month": "2026-11", "reconsent_due": 0, "expired": 0},
        {"month": "2026-12", "reconsent_due": 3, "expired": 0},
        {"month": "2027-01", "reconsent_due": 0, "expired": 3},
    ]
    assert res.json["now"] == {"reconsent_due": 0, "expired": 0, "anonymised": 0, "active": 3}
    assert res.json["as_of"] == as_of.isoformat().replace("+00:00", "Z")
    assert client.get("/api/v1/retention/forecast?months=0", headers=auth).status_code == 422


@pytest.mark.parametrize(
    ("birth_year", "band"),
    [
        (1984, "40-49"),
        ("1990", "30-39"),
        (None, None),
        ("unknown", None),
        (1800, None),
    ],
)
def test_an_age_band_is_ten_years_wide(birth_year: object, band: str | None) -> None:
    assert age_band(birth_year, datetime(2026, 11, 22, tzinfo=UTC)) == band


@pytest.mark.parametrize(
    ("sold", "until"),
    [
        ("2026-03-01T10:00:00+00:00", "2036-12-31T23:00:00+00:00"),
        ("2026-12-31T23:30:00+00:00", "2037-12-31T23:00:00+00:00"),  # already 2027 in Paris
    ],
)
def test_an_invoice_is_kept_ten_years_after_the_close_of_its_financial_year(sold: str, until: str) -> None:
    assert invoice_keep_until(datetime.fromisoformat(sold)) == datetime.fromisoformat(until)


def test_the_archive_logs_every_read_and_drops_records_past_their_own_deadline(tmp_path: Path) -> None:
    store = ArchiveStore(f"sqlite:///{tmp_path / 'archive.db'}")
    sold = datetime(2015, 5, 1, tzinfo=UTC)
    record = ArchivedRecord("invoice", "event:1", sold, invoice_keep_until(sold), {"amount": 3})
    assert store.put([record, record], NOW) == 1
    assert [r["source_ref"] for r in store.read("auditor@acme", "tax audit 2026")] == ["event:1"]
    assert store.purge(datetime(2026, 1, 1, tzinfo=UTC)) == 1
    with store.engine.connect() as conn:
        logged = conn.execute(text("SELECT reader, purpose, records FROM archive_reads")).all()
    assert [tuple(r) for r in logged] == [("auditor@acme", "tax audit 2026", 1)]
    store.dispose()


def test_the_cli_runs_a_task_and_prints_what_it_did(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "ENV": "test",
        "DATABASE_URL": db_url,
        "SECRET_KEY": "k" * 32,
        "ARCHIVE_DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}",
    }.items():
        monkeypatch.setenv(f"GATEKEEPER_{name}", value)
    result = CliRunner().invoke(main, ["task", "run", "purge_expired", "--as-of", "2026-11-22", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "task": "purge_expired",
        "as_of": "2026-11-21T23:00:00Z",
        "dry_run": True,
        "would_anonymise": 0,
        "would_archive_invoices": 0,
    }


def test_the_purge_finds_refusals_through_their_index_not_by_reading_the_register(
    sqlite_template: Path,
) -> None:
    """The daily pass must cost what is due, not what is stored (PERFORMANCE.md): ordered by
    id, SQLite walked the whole register on every purge batch to find nobody refused."""
    import sqlite3

    from gatekeeper.retention.tasks import _REFUSED

    conn = sqlite3.connect(sqlite_template)
    try:
        plan = conn.execute("EXPLAIN QUERY PLAN " + _REFUSED.replace(":limit", "?"), (100,)).fetchall()
    finally:
        conn.close()
    steps = " | ".join(str(row[-1]) for row in plan)
    assert "USING INDEX ix_contacts_refused_at" in steps, steps
    assert "TEMP B-TREE" not in steps, steps  # no sort of every refusal before the limit
