"""The outbox: messages decided by a task, written in the decision's transaction, drained by
a sender in batches.

Queueing is one set-based ``INSERT … SELECT`` per batch; ``(contact_id, kind, cycle)`` is
unique, so planning twice on a day queues nothing new. Sending claims a batch with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL (several senders share the queue and never take the
same row) and with a write lock on SQLite (one writer at a time); a message is rendered from
the contact when it leaves, so an erasure or an objection in the meantime cancels it. A
temporary failure is retried with exponential backoff, up to ``MAX_ATTEMPTS``; a permanent one
(or the last attempt) marks the message ``failed``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gatekeeper.sqlbulk import dialect_of, read_ts, ts_value

MAX_ATTEMPTS = 8
FIRST_RETRY = timedelta(minutes=1)
LONGEST_RETRY = timedelta(hours=6)

# Contacts with a lawful channel for this message: an address, not anonymised, not refused,
# and no objection on e-mail since the clock's anchor (a later consent lifts an older one).
LAWFUL_EMAIL = """
    c.anonymised_at IS NULL AND c.refused_at IS NULL AND c.email IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM suppressions s WHERE s.coord_hash = c.email_hash
        AND (s.channels = 'all' OR s.channels LIKE '%email%')
        AND s.occurred_at >= COALESCE(c.clock_anchor_at, c.collected_at))"""
NOT_QUEUED = """
    NOT EXISTS (SELECT 1 FROM outbox o WHERE o.contact_id = c.id AND o.kind = :kind
        AND o.cycle = c.deadline)"""
QUEUE_SQL = """
INSERT INTO outbox (contact_id, kind, cycle, state, attempts, next_attempt_at, created_at)
SELECT c.id, CAST(:kind AS VARCHAR(32)), c.deadline, 'queued', 0, :now, :now FROM contacts c
WHERE {due} AND {lawful} AND {not_queued}
ORDER BY {order}, c.id LIMIT :limit
ON CONFLICT (contact_id, kind, cycle) DO NOTHING"""
COUNT_SQL = "SELECT COUNT(*) FROM contacts c WHERE {due} AND {lawful} AND {not_queued}"
# reconsent_at = deadline - lead, so this window is a range scan of its index.
DUE_RECONSENT = "c.reconsent_at > :window_start AND c.reconsent_at <= :as_of AND c.deadline > :as_of"
# One reminder, only after the first message left at least a day before.
DUE_REMINDER = """c.deadline > :as_of AND c.deadline <= :reminder_until
    AND EXISTS (SELECT 1 FROM outbox r WHERE r.contact_id = c.id AND r.kind = 'reconsent'
        AND r.cycle = c.deadline AND r.state = 'sent' AND r.sent_at <= :sent_before)"""
DUE = {"reconsent": DUE_RECONSENT, "reconsent_reminder": DUE_REMINDER}
# Ordered by the indexed date of the window, so each batch is a range scan of that index
# (ordered by id, the planner walks the whole table to fill each batch).
ORDER = {"reconsent": "c.reconsent_at", "reconsent_reminder": "c.deadline"}


def _due_params(
    session: Session, kind: str, as_of: datetime, lead_days: int, reminder_days: int
) -> dict[str, Any]:
    d = dialect_of(session)
    return {
        "kind": kind,
        "as_of": ts_value(d, as_of),
        "window_start": ts_value(d, as_of - timedelta(days=lead_days)),
        "reminder_until": ts_value(d, as_of + timedelta(days=reminder_days)),
        "sent_before": ts_value(d, as_of - timedelta(days=1)),
        "now": ts_value(d, as_of),
    }


def queue_due(
    session: Session, kind: str, as_of: datetime, *, lead_days: int, reminder_days: int, limit: int
) -> int:
    """Queue one message of this kind for up to ``limit`` due contacts; returns how many."""
    sql = QUEUE_SQL.format(due=DUE[kind], order=ORDER[kind], lawful=LAWFUL_EMAIL, not_queued=NOT_QUEUED)
    params = _due_params(session, kind, as_of, lead_days, reminder_days) | {"limit": limit}
    return int(session.execute(text(sql), params).rowcount)  # type: ignore[attr-defined]


def count_due(session: Session, kind: str, as_of: datetime, *, lead_days: int, reminder_days: int) -> int:
    sql = COUNT_SQL.format(due=DUE[kind], lawful=LAWFUL_EMAIL, not_queued=NOT_QUEUED)
    return int(
        session.execute(text(sql), _due_params(session, kind, as_of, lead_days, reminder_days)).scalar_one()
    )


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    contact_id: int
    kind: str
    cycle: datetime
    attempts: int


def claim(session: Session, as_of: datetime, limit: int) -> list[Claimed]:
    """Rows this sender alone may send in its transaction."""
    d = dialect_of(session)
    if d == "sqlite":
        # A write first: the transaction takes SQLite's write lock now, so a second sender
        # waits for this one's commit instead of reading the same queued rows.
        session.execute(text("UPDATE outbox SET state = state WHERE 1 = 0"))
    lock = " FOR UPDATE SKIP LOCKED" if d == "postgresql" else ""
    rows = session.execute(
        text(
            "SELECT id, contact_id, kind, cycle, attempts FROM outbox"  # noqa: S608 - constants only
            " WHERE state = 'queued' AND next_attempt_at <= :now"
            f" ORDER BY next_attempt_at, id LIMIT :limit{lock}"
        ),
        {"now": ts_value(d, as_of), "limit": limit},
    ).all()
    return [Claimed(r[0], r[1], r[2], read_ts(r[3]), r[4]) for r in rows]


def backoff(attempts: int) -> timedelta:
    delay: timedelta = FIRST_RETRY * 2 ** max(attempts - 1, 0)
    return min(delay, LONGEST_RETRY)


def mark_sent(session: Session, row: Claimed, message_id: str, now: datetime) -> None:
    session.execute(
        text(
            "UPDATE outbox SET state = 'sent', attempts = attempts + 1, sent_at = :now,"
            " message_id = :mid, last_error = NULL WHERE id = :id"
        ),
        {"now": ts_value(dialect_of(session), now), "mid": message_id, "id": row.id},
    )


def mark_failed(session: Session, row: Claimed, error: str, now: datetime, *, permanent: bool) -> str:
    attempts = row.attempts + 1
    state = "failed" if permanent or attempts >= MAX_ATTEMPTS else "queued"
    session.execute(
        text(
            "UPDATE outbox SET state = :state, attempts = :attempts, next_attempt_at = :next,"
            " last_error = :error WHERE id = :id"
        ),
        {
            "state": state,
            "attempts": attempts,
            "error": error[:500],
            "id": row.id,
            "next": ts_value(dialect_of(session), now + backoff(attempts)),
        },
    )
    return state


def mark_cancelled(session: Session, row: Claimed, why: str) -> None:
    session.execute(
        text("UPDATE outbox SET state = 'cancelled', last_error = :why WHERE id = :id"),
        {"why": why, "id": row.id},
    )


@dataclass
class SendRateLimiter:
    """At most ``per_second`` messages a second from this sender (relays throttle bursts)."""

    per_second: float
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    _next: float = field(default=0.0, init=False)

    def wait(self) -> None:
        if self.per_second <= 0:
            return
        now = self.clock()
        if now < self._next:
            self.sleep(self._next - now)
            now = self._next
        self._next = now + 1.0 / self.per_second
