"""The scheduler's guard: a task runs once per slot, even with two schedulers at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from conftest import _empty_pg, make_settings
from sqlalchemy import text
from test_retention_helpers import (
    add_person,
    api_headers,
    collected_for,
    free_port,
    make_app,
    pauls,
    received,
)

from gatekeeper.db import Database
from gatekeeper.models import utcnow
from gatekeeper.retention.scheduler import build_scheduler, claim_slot, run_guarded, slot_of
from gatekeeper.retention.tasks import build_env


@pytest.mark.parametrize(("name", "moment", "slot"), [
    ("plan_reconsent", datetime(2026, 11, 22, 23, 30, tzinfo=UTC), "2026-11-23"),  # Paris day
    ("purge_expired", datetime(2026, 6, 30, 21, 59, tzinfo=UTC), "2026-06-30"),
    ("send_outbox", datetime(2026, 11, 22, 10, 5, 42, tzinfo=UTC), "2026-11-22T11:05"),
])
def test_a_slot_is_the_paris_day_or_for_the_sender_the_minute(
    name: str, moment: datetime, slot: str
) -> None:
    assert slot_of(name, moment) == slot


def test_a_slot_is_claimed_once_and_a_failed_run_can_be_taken_over(db_url: str) -> None:
    database, now = Database(db_url), utcnow()
    assert claim_slot(database, "purge_expired", "2026-11-22", "one", now)
    assert not claim_slot(database, "purge_expired", "2026-11-22", "two", now)
    with database.session_scope() as session:
        session.execute(text("UPDATE task_runs SET state = 'failed'"))
    assert claim_slot(database, "purge_expired", "2026-11-22", "two", now)
    assert claim_slot(database, "purge_expired", "2026-11-23", "two", now)
    database.engine.dispose()


def test_a_run_left_running_by_a_dead_process_is_taken_over_after_a_while(db_url: str) -> None:
    database, now = Database(db_url), utcnow()
    assert claim_slot(database, "plan_reconsent", "2026-11-22", "dead", now)
    assert not claim_slot(database, "plan_reconsent", "2026-11-22", "live", now + timedelta(hours=1))
    assert claim_slot(database, "plan_reconsent", "2026-11-22", "live", now + timedelta(hours=3))
    database.engine.dispose()


@pytest.fixture
def pg_sink(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    from gatekeeper.mailsink import start_sink

    port, directory = free_port(), tmp_path / "mail"
    controller: Controller = start_sink(directory, port=port)
    yield directory, port
    controller.stop()


def _wait_for_runs(database: Database, expected: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with database.engine.connect() as conn:
            done = conn.execute(text("SELECT COUNT(*) FROM task_runs WHERE state = 'done'")).scalar()
        if done == expected:
            return
        time.sleep(0.1)
    raise AssertionError(f"the schedulers did not finish {expected} runs in {seconds}s")


def _both_run(pg_url: str, settings: object, tasks: tuple[str, ...], expected: int) -> None:
    schedulers = []
    for owner in ("scheduler-one", "scheduler-two"):
        database = Database(pg_url)
        env = build_env(settings)  # type: ignore[arg-type]
        schedulers.append((build_scheduler(database, env, blocking=False, owner=owner,
                                           run_now=True, tasks=tasks), database, env))
    for scheduler, _, _ in schedulers:
        scheduler.start()
    _wait_for_runs(schedulers[0][1], expected)
    for scheduler, database, env in schedulers:
        scheduler.shutdown(wait=True)
        database.engine.dispose()
        assert env.archive is not None
        env.archive.dispose()


def test_two_schedulers_on_one_postgresql_database_run_each_task_once_and_send_no_duplicate(
    pg_url: str, tmp_path: Path, pg_sink: tuple[Path, int]
) -> None:
    settings = make_settings(pg_url, tmp_path, smtp_url=f"smtp://127.0.0.1:{pg_sink[1]}")
    try:
        for app in make_app(settings):
            client, auth = app.test_client(), api_headers(app)
            collected = collected_for(timedelta(days=10), utcnow())
            for person in pauls(5):
                add_person(client, auth, person | {"collected_at": collected})
        _both_run(pg_url, settings, ("plan_reconsent", "purge_expired"), expected=2)
        _both_run(pg_url, settings, ("send_outbox",), expected=3)
        assert len(received(pg_sink[0])) == 5
        database = Database(pg_url)
        with database.engine.connect() as conn:
            runs = conn.execute(text("SELECT name, COUNT(*) FROM task_runs GROUP BY name")).all()
            states = conn.execute(text("SELECT state, COUNT(*) FROM outbox GROUP BY state")).all()
        database.engine.dispose()
        assert dict(runs) == {"plan_reconsent": 1, "purge_expired": 1, "send_outbox": 1}
        assert dict(states) == {"sent": 5}
    finally:
        _empty_pg(pg_url)


def test_run_guarded_runs_a_task_once_a_day_and_keeps_what_it_did(db_url: str, tmp_path: Path) -> None:
    settings = make_settings(db_url, tmp_path)
    database, env = Database(db_url), build_env(settings)
    moment = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    first = run_guarded(database, env, "purge_expired", moment, owner="one")
    assert first is not None and first["done"]["expired"] == 0
    assert run_guarded(database, env, "purge_expired", moment + timedelta(hours=5)) is None
    with database.engine.connect() as conn:
        state = conn.execute(text("SELECT state, owner FROM task_runs")).one()
    assert tuple(state) == ("done", "one")
    database.engine.dispose()
    assert env.archive is not None
    env.archive.dispose()
