"""Suppressions written by concurrent transactions (two web workers storing webhook batches,
an API import beside them) take their row locks in one global order, so PostgreSQL never has
to abort one of them as a deadlock and the provider never sees a 5xx for it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

from flask import Flask
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
