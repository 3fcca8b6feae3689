"""Applying the webhook events journaled in the spool (``gatekeeper.spool``, stream ``webhooks``).

Theory of operation
-------------------
The service journals a verified request without legal urgency as one line
(``deliveries.spool_record``: when it was received, its one-time tokens, its normalised events)
and answers at once. ``gatekeeper drain`` hands the lines here in batches, which are stored in
groups of whole requests (``EVENTS_PER_TRANSACTION``), one transaction each, through the very
plan and apply a batched request uses (``delivery_plan``, ``delivery_apply``), so an event
drained is stored exactly as if it had been posted in a batch. A group that fails rolls back
alone; the drainer hands the whole batch again later, and the groups already committed change
nothing the second time.

Idempotent, because a batch may be handed again after a crash or a failed group: every event
lands under its unique dedupe key (``ON CONFLICT DO NOTHING``), only new events change the
register, clocks only move forward and suppressions keep their latest date. Tokens: a request whose token is
already stored (by an earlier request, a direct urgent one, or this very batch handed before)
or offered by an earlier request of the batch is a replay: its events are dropped, with a
warning. The batch's tokens are inserted in the events' transaction, in the writers' turn, and
the unique index has the last word: had a web worker stored one of them since it was read, the
batch is read and planned again. The reads and the plan run before the turn, as a request's do,
so an urgent request never waits on the drainer's planning. A line this version cannot read is
logged and skipped: it can never become readable.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError

from gatekeeper.models import utcnow
from gatekeeper.register import delivery_apply, delivery_plan
from gatekeeper.register.context import RegisterContext, context_from
from gatekeeper.register.deliveries import (
    DeliveryResult,
    SpooledRequest,
    insert_tokens,
    read_spool_record,
    used_tokens,
    writers_turn,
)
from gatekeeper.spool import SpoolRecord, drain, parse_each, pending
from gatekeeper.webhook_service import Connections, begin_writes, collector_paused

if TYPE_CHECKING:
    from gatekeeper.config import Settings
    from gatekeeper.db import Database

log = logging.getLogger("gatekeeper.webhook_spooled")
STREAM = "webhooks"
# Times a batch is read again when web workers keep storing its tokens meanwhile (a replay
# racing its original): more would mean a flood, and the drainer retries the batch later.
TOKEN_RACE_ATTEMPTS = 5
# Events per write transaction of the drainer. Its writers' turn is what a web worker storing
# an unsubscribe waits for before its 2xx, and the drainer runs at a lower priority, so under
# load its turn lasts longer than its CPU time: the turn is kept short, and the next group is
# read and planned outside it, which lets a waiting worker in. Measured (Mailgun singles,
# in-process, drainer CPU per event): 256 per group 0.080 ms, 512 0.062 ms, 1,000 0.068 ms,
# 2,000 (a whole spool batch) 0.065 ms; under bench/webhooks.py the singles' p99 fell from
# 120 ms (whole batches) to 23-35 ms. A request is never split (its tokens and events share one).
EVENTS_PER_TRANSACTION = 512


class TokenRaceError(RuntimeError):
    """The batch's tokens kept being taken between their read and their insert."""


Handler = Callable[[list[SpoolRecord]], None]


def handler(settings: Settings, database: Database) -> Handler:
    """The batch handler of the ``webhooks`` stream, on one kept connection."""
    return SpooledWebhooks(context_from(settings), Connections(database.engine), _sqlite_path(database))


def _sqlite_path(database: Database) -> str | None:
    url = database.engine.url
    return url.database if url.get_backend_name() == "sqlite" else None


class SpooledWebhooks:
    def __init__(self, ctx: RegisterContext, connections: Connections, sqlite_path: str | None) -> None:
        self.ctx, self.connections, self.sqlite_path = ctx, connections, sqlite_path

    def __call__(self, records: list[SpoolRecord]) -> None:
        with collector_paused():  # reading the lines too: tens of thousands of containers
            requests = readable(records)
            for group in groups(requests, EVENTS_PER_TRANSACTION):
                self.apply(group, utcnow())

    def apply(self, requests: Sequence[SpooledRequest], now: datetime) -> DeliveryResult:
        """Store the requests' events in one transaction; what was stored."""
        offered = [(p, t) for r in requests for p, t in r.tokens]
        for _ in range(TOKEN_RACE_ATTEMPTS):
            with self.connections() as sql:
                kept = _first_uses(requests, used_tokens(sql, offered))  # reads only
                events = [e for r in kept for e in r.events]
                plan = delivery_plan.plan(sql, events, self.ctx, now)
                tokens = [(p, t, r.received_at) for r in kept for p, t in r.tokens]
                with writers_turn(self.sqlite_path):
                    try:
                        begin_writes(sql)
                        if len(insert_tokens(sql, tokens)) < len(tokens):
                            sql.rollback()  # stored by a web worker since it was read
                            continue
                        result = delivery_apply.apply(sql, plan, self.ctx)
                        sql.commit()
                    except BaseException:
                        sql.rollback()
                        raise
                self.connections.written(sql, len(plan.rows))
            return result
        raise TokenRaceError("webhook spool: tokens kept being taken; the batch waits for the next pass")


def readable(records: Sequence[SpoolRecord]) -> list[SpooledRequest]:
    """The requests of the records, without those this version cannot read (logged)."""
    return parse_each(records, read_spool_record, "a webhook request", log)


def groups(requests: Sequence[SpooledRequest], events: int) -> list[list[SpooledRequest]]:
    """The requests in order, in groups of about ``events`` events (a larger request alone)."""
    found: list[list[SpooledRequest]] = []
    group: list[SpooledRequest] = []
    size = 0
    for request in requests:
        if group and size + len(request.events) > events:
            found.append(group)
            group, size = [], 0
        group.append(request)
        size += len(request.events)
    if group:
        found.append(group)
    return found


def _first_uses(requests: Sequence[SpooledRequest], used: set[tuple[str, str]]) -> list[SpooledRequest]:
    """The requests none of whose tokens is ``used`` or offered by an earlier one, in order."""
    taken, kept = set(used), []
    for request in requests:
        if taken.isdisjoint(request.tokens):
            taken.update(request.tokens)
            kept.append(request)
        else:
            # Also what a batch handed again after a failed group shows for the requests of the
            # groups committed before it: their events are stored already.
            log.warning(
                "webhook spool: a request replayed a used token (or was stored by an earlier pass"
                " over this batch); its events were skipped"
            )
    return kept


class QueueApplier:
    """Applies ``webhook_pending`` (``gatekeeper.register.webhook_queue``) for the drainer: one
    write transaction per ``delivery_apply.QUEUE_ROWS`` rows or ``QUEUE_EVENTS`` events, read
    before it, on a kept connection."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self.ctx = context_from(settings)
        self.connections = Connections(database.engine)
        self.sqlite_path = _sqlite_path(database)

    def __call__(self) -> int:
        applied = 0
        with self.connections() as sql:
            while True:
                queued = delivery_apply.take_queued(sql)  # reads, before the turn
                if queued is None:
                    # PostgreSQL's driver began a transaction for the read: end it, or the kept
                    # connection sits idle in it, holding back vacuum and table locks.
                    sql.rollback()
                    break
                with writers_turn(self.sqlite_path):
                    try:
                        begin_writes(sql)
                        applied += delivery_apply.apply_queued(sql, queued, self.ctx, utcnow())
                        sql.commit()
                    except BaseException:
                        sql.rollback()
                        raise
                if not queued.more:
                    break
            if applied:
                # Each pass: the web workers leave the WAL to the drainer (WORKER_CHECKPOINT_ROWS).
                self.connections.checkpoint(sql)
        return applied


_APPLIERS: weakref.WeakKeyDictionary[Database, QueueApplier] = weakref.WeakKeyDictionary()


def settle_queue(settings: Settings, database: Database) -> int:
    """Apply everything the webhook requests queued (``gatekeeper drain``'s every pass, or a
    task that must see every click first); how many rows. One applier per database object."""
    applier = _APPLIERS.get(database)
    if applier is None:
        applier = _APPLIERS[database] = QueueApplier(settings, database)
    return applier()


def settle_interest(settings: Settings, database: Database) -> int:
    """Apply the provider events waiting for the drainer, journaled (this stream) or queued
    (``settle_queue``), before a task reads the clocks; how many. The drainer may be applying
    them at the same time: both are idempotent, and the spool hands each batch to one of them."""
    root, handled = Path(settings.spool_dir), 0
    if pending(root, STREAM):  # the usual case is a stat: no handler (and connection) built
        handled = drain(root, STREAM, handler(settings, database))
    return handled + settle_queue(settings, database)


def queue_mark(settings: Settings, database: Database) -> int:
    """The last id of the requests' queue (0 when empty or unreadable: the next pass says why),
    which grows whenever a request queues more (``spool.backlog_size``)."""
    try:
        with database.engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT max(id) FROM webhook_pending").scalar() or 0)
    except SQLAlchemyError:
        return 0
