"""The dedicated scheduler process (``gatekeeper scheduler``) and its database guard.

Only this process schedules: web workers never do (gunicorn forks several, each would run
the jobs). Starting two schedulers by mistake, or on two hosts for availability, is safe: a
task claims its slot — the Paris day for the daily tasks, the minute for the sender — with an
``INSERT … ON CONFLICT DO NOTHING`` into ``task_runs``; whoever inserts the row runs the task,
the other finds it and skips. A run that failed, or whose process died (still "running" after
``STALE_AFTER``), may be taken over by the next attempt.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import text

from gatekeeper.db import Database
from gatekeeper.models import utcnow
from gatekeeper.retention.tasks import TaskEnv, run_task
from gatekeeper.sqlbulk import dialect_of, json_value, ts_value

log = logging.getLogger(__name__)
PARIS = ZoneInfo("Europe/Paris")
STALE_AFTER = timedelta(hours=2)
# At night in France, planning before purging (a contact due today still gets its reminder
# before a later day's purge); the sender drains the outbox every minute.
SCHEDULE: dict[str, Any] = {
    "plan_reconsent": CronTrigger(hour=3, minute=0, timezone=PARIS),
    "purge_expired": CronTrigger(hour=3, minute=30, timezone=PARIS),
    "send_outbox": IntervalTrigger(minutes=1, timezone=PARIS),
    "journal_catch_up": IntervalTrigger(minutes=5, timezone=PARIS),
}
PER_MINUTE = frozenset({"send_outbox", "journal_catch_up"})


def slot_of(name: str, as_of: datetime) -> str:
    if name in PER_MINUTE:
        return as_of.astimezone(PARIS).strftime("%Y-%m-%dT%H:%M")
    return as_of.astimezone(PARIS).date().isoformat()


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_slot(database: Database, name: str, slot: str, owner: str, now: datetime) -> bool:
    """True when this caller, and nobody else, is to run ``name`` for ``slot``."""
    with database.session_scope() as session:
        d = dialect_of(session)
        params = {
            "name": name,
            "slot": slot,
            "owner": owner,
            "now": ts_value(d, now),
            "stale": ts_value(d, now - STALE_AFTER),
        }
        inserted = session.execute(
            text(
                "INSERT INTO task_runs (name, slot, state, owner, started_at)"
                " VALUES (:name, :slot, 'running', :owner, :now)"
                " ON CONFLICT (name, slot) DO NOTHING"
            ),
            params,
        ).rowcount  # type: ignore[attr-defined]
        if inserted == 1:
            return True
        retaken = session.execute(
            text(
                "UPDATE task_runs SET state = 'running', owner = :owner, started_at = :now"
                " WHERE name = :name AND slot = :slot"
                " AND (state = 'failed' OR (state = 'running' AND started_at < :stale))"
            ),
            params,
        ).rowcount  # type: ignore[attr-defined]
        return bool(retaken == 1)


def _finish(database: Database, name: str, slot: str, state: str, result: Any) -> None:
    with database.session_scope() as session:
        session.execute(
            text(
                "UPDATE task_runs SET state = :state, finished_at = :now, result = :result"
                " WHERE name = :name AND slot = :slot"
            ),
            {
                "state": state,
                "now": ts_value(dialect_of(session), utcnow()),
                "result": json_value(result),
                "name": name,
                "slot": slot,
            },
        )


def run_guarded(
    database: Database, env: TaskEnv, name: str, as_of: datetime | None = None, owner: str | None = None
) -> dict[str, Any] | None:
    """Run the task unless its slot is taken; None when another run had it."""
    moment = as_of or utcnow()
    slot = slot_of(name, moment)
    if not claim_slot(database, name, slot, owner or default_owner(), utcnow()):
        log.info("%s for %s: already run or running elsewhere", name, slot)
        return None
    try:
        result = run_task(database, env, name, moment)
    except Exception as exc:
        _finish(database, name, slot, "failed", {"error": str(exc)[:500]})
        log.exception("%s for %s failed", name, slot)
        raise
    _finish(database, name, slot, "done", result)
    return result


def build_scheduler(
    database: Database,
    env: TaskEnv,
    *,
    blocking: bool = True,
    owner: str | None = None,
    run_now: bool = False,
    tasks: Iterable[str] = tuple(SCHEDULE),
) -> BaseScheduler:
    """The jobs on their triggers; ``run_now`` also fires each once at start (tests, catch-up)."""
    scheduler: BaseScheduler = (BlockingScheduler if blocking else BackgroundScheduler)(timezone=PARIS)
    for name in tasks:
        trigger = SCHEDULE[name]
        extra = {"next_run_time": datetime.now(PARIS)} if run_now else {}
        scheduler.add_job(
            run_guarded,
            trigger,
            args=[database, env, name, None, owner],
            id=name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=3600,
            **extra,
        )
    return scheduler
