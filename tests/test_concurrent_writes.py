"""Writers at the same time: two web workers storing webhook batches, two API calls, an import
beside them. On PostgreSQL they take their row locks in one global order, so none is aborted as
a deadlock; on SQLite a writing transaction takes the write lock when it begins, so the second
waits instead of failing with "database is locked". Either way the client never gets a 5xx."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from gatekeeper.db import Database
from gatekeeper.register.rawsql import Sql
from gatekeeper.register.suppressions import SuppressionRecord, add_suppressions, upsert_suppressions

ROUNDS = 12
KEYS = 400
AT = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def records(reverse: bool, round_no: int) -> list[SuppressionRecord]:
    at = AT.replace(minute=round_no)
    entries = [
        SuppressionRecord(i, "email", f"p{i}@example.fr", "hard_bounce", ("email",), at) for i in range(KEYS)
    ]
    return entries[::-1] if reverse else entries


def run_both(write: Callable[[bool, int], None]) -> list[BaseException]:
    """Two threads write the same keys in opposite orders, round after round, each round's
    transactions overlapping (a barrier), and collect what they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker(reverse: bool) -> None:
        for round_no in range(ROUNDS):
            barrier.wait(timeout=30)
            try:
                write(reverse, round_no)
            except BaseException as exc:  # reported by the test
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(r,)) for r in (False, True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


def test_concurrent_raw_upserts_in_opposite_orders_never_deadlock(app: Flask) -> None:
    database: Database = app.extensions["gatekeeper.db"]
    ctx = app.extensions["gatekeeper.context"]

    def write(reverse: bool, round_no: int) -> None:
        with database.session_scope() as session:
            sql = Sql.of(session)
            upsert_suppressions(sql, records(reverse, round_no), ctx.hasher, origin="webhook", now=AT)

    assert run_both(write) == []
    with database.session_scope() as session:
        stored = session.execute(text("SELECT COUNT(*), MAX(occurred_at) FROM suppressions")).one()
    assert stored[0] == KEYS


def test_concurrent_session_suppressions_in_opposite_orders_never_deadlock(app: Flask) -> None:
    database: Database = app.extensions["gatekeeper.db"]
    ctx = app.extensions["gatekeeper.context"]

    def write(reverse: bool, round_no: int) -> None:
        with database.session_scope() as session:
            add_suppressions(session, records(reverse, round_no), ctx.hasher, origin="api")

    assert run_both(write) == []
    with database.session_scope() as session:
        assert session.execute(text("SELECT COUNT(*) FROM suppressions")).scalar_one() == KEYS


def test_concurrent_event_posts_in_opposite_orders_never_deadlock(app: Flask) -> None:
    """Two API calls (or a provider's retry beside its first delivery) with the same events."""
    from gatekeeper.register.contacts import parse_contact, upsert_contacts
    from gatekeeper.register.events import EventRecord, append_events
    from gatekeeper.register.schema import Problems

    database: Database = app.extensions["gatekeeper.db"]
    ctx = app.extensions["gatekeeper.context"]
    people = 60
    problems = Problems()
    contacts = [
        parse_contact({"email": f"p{i}@example.fr", "collected_at": "2025-06-10"}, i, problems, "FR")
        for i in range(people)
    ]
    with database.session_scope() as session:
        upsert_contacts(session, [c for c in contacts if c is not None], ctx, want_ids=False)

    def write(reverse: bool, round_no: int) -> None:
        events = [
            EventRecord(
                i,
                "email",
                f"p{i}@example.fr",
                "interest",
                AT.replace(minute=round_no),
                {"kind": "click", "round": round_no},
            )
            for i in range(people)
        ]
        with database.session_scope() as session:
            append_events(session, events[::-1] if reverse else events, ctx)

    assert run_both(write) == []
    with database.session_scope() as session:
        assert session.execute(text("SELECT COUNT(*) FROM events")).scalar_one() == people * ROUNDS


def test_two_api_calls_posting_the_same_events_at_once_both_succeed(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    people = 40
    contacts = [{"email": f"p{i}@example.fr", "collected_at": "2025-06-10"} for i in range(people)]
    assert client.post("/api/v1/contacts", json={"contacts": contacts}, headers=auth).status_code == 200
    statuses: list[int] = []

    def write(reverse: bool, round_no: int) -> None:
        events = [
            {
                "contact": {"email": f"p{i}@example.fr"},
                "type": "interest",
                "kind": "click",
                "occurred_at": f"2026-11-02T09:{round_no:02d}:00Z",
                "detail": f"round {round_no}",
            }
            for i in range(people)
        ]
        body = {"events": events[::-1] if reverse else events}
        statuses.append(app.test_client().post("/api/v1/events", json=body, headers=auth).status_code)

    assert run_both(write) == []
    assert statuses == [200] * (2 * ROUNDS)
    with app.extensions["gatekeeper.db"].session_scope(read_only=True) as session:
        assert session.execute(text("SELECT COUNT(*) FROM events")).scalar_one() == people * ROUNDS
