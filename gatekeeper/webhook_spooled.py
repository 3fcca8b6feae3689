"""Applying the webhook events journaled in the spool (``gatekeeper.spool``, stream ``webhooks``).

Theory of operation
-------------------
The service journals a verified request without legal urgency as one line
(``deliveries.spool_record``: when it was received, its one-time tokens, its normalised events)
and answers at once. ``gatekeeper drain`` hands the lines here in batches; each batch is one
transaction through the very plan and apply a batched request uses (``delivery_plan``,
``delivery_apply``), so an event drained is stored exactly as if it had been posted in a batch.

Idempotent, because a batch may be handed again after a crash: every event lands under its
unique dedupe key (``ON CONFLICT DO NOTHING``), only new events change the register, clocks
only move forward and suppressions keep their latest date. Tokens: the batch's tokens are
inserted first, in the same transaction (``deliveries.insert_tokens``); a request whose token
was already stored, by an earlier request or a direct (urgent) one, is a replay and its events
are dropped with a warning — a batch handed again finds its own tokens, and its events already
stored. A line this version cannot read is logged and skipped: it can never become readable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from gatekeeper.models import utcnow
from gatekeeper.register import delivery_apply, delivery_plan
from gatekeeper.register.context import RegisterContext, context_from
from gatekeeper.register.deliveries import (
    DeliveryResult,
    SpooledRequest,
    insert_tokens,
    read_spool_record,
    writers_turn,
)
from gatekeeper.register.rawsql import Sql
from gatekeeper.spool import SpoolRecord
from gatekeeper.webhook_service import Connections, collector_paused
from webhooks import NormalizedEvent

if TYPE_CHECKING:
    from gatekeeper.config import Settings
    from gatekeeper.db import Database

log = logging.getLogger("gatekeeper.webhook_spooled")
STREAM = "webhooks"

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
        requests = readable(records)
        if requests:
            with collector_paused():
                self.apply(requests, utcnow())

    def apply(self, requests: Sequence[SpooledRequest], now: datetime) -> DeliveryResult:
        """Store the requests' events in one transaction; what was stored."""
        tokens = [(p, t, r.received_at) for r in requests for p, t in r.tokens]
        with self.connections() as sql, writers_turn(self.sqlite_path):
            # All inside the turn: on SQLite the tokens' insert opens the write transaction,
            # and which requests count depends on it.
            try:
                events = _not_replayed(requests, insert_tokens(sql, tokens))
                result = self._store(sql, events, now)
                sql.commit()
            except BaseException:
                sql.rollback()
                raise
        return result

    def _store(self, sql: Sql, events: list[NormalizedEvent], now: datetime) -> DeliveryResult:
        if not events:
            return DeliveryResult(received=0, stored=0)
        plan = delivery_plan.plan(sql, events, self.ctx, now)
        return delivery_apply.apply(sql, plan, self.ctx)


def readable(records: Sequence[SpoolRecord]) -> list[SpooledRequest]:
    """The requests of the records, without those this version cannot read (logged)."""
    found = []
    for record in records:
        try:
            found.append(read_spool_record(record.data))
        except ValueError as exc:
            log.error("webhook spool record %s unreadable, skipped: %s", record.key, exc)
    return found


def _not_replayed(requests: Sequence[SpooledRequest], fresh: set[tuple[str, str]]) -> list[NormalizedEvent]:
    """The events of the requests whose every token was new here, in spool order. A token
    offered twice within the batch is new once: the first request keeps it."""
    events: list[NormalizedEvent] = []
    for request in requests:
        if all(token in fresh for token in request.tokens):
            fresh.difference_update(request.tokens)
            events += request.events
        else:
            log.warning("webhook spool: a request replayed a used token; its events were dropped")
    return events
