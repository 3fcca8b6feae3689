"""Applying planned provider events: the writes (deliveries.py phase 2), set-based.

One statement per kind of write, whatever the batch size: the raw events in one multi-row
``INSERT … ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key`` (the keys it returns
are the events not seen before, exact under concurrency: a concurrent duplicate waits on the
unique index, then skips; on SQLite, one writer, the events without effects go in one
``executemany`` that returns nothing, only counted); only those change the register
(warehouse's recipe: drop duplicates before the state change): their facts in one
``INSERT … RETURNING id``, each keyed by its raw event's id (``fact_key``), their suppressions
in one upsert ``RETURNING`` the rows, then every
new fact proven in the journal in one executemany (RULES.md §6) from what the inserts returned,
without reading anything back. Last, the clocks: a full recomputation for contacts who
objected, and for counting clicks only the clock of a contact whose stored anchor the click can
still move, computed once per contact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gatekeeper.proof import journal
from gatekeeper.register import clocks
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.delivery_plan import Consequence, DeliveryPlan, FactRow
from gatekeeper.register.rawsql import Sql
from gatekeeper.register.suppressions import SuppressionRecord, upsert_suppressions
from gatekeeper.sqlbulk import json_value
from gatekeeper.timeparse import isoformat

# Rows per multi-row INSERT: 9 columns x 1,000 stays far under SQLite's 32,766 parameters.
INSERT_CHUNK = 1_000
_INSERT_RAW = (
    "INSERT INTO webhook_events (provider, dedupe_key, kind, provider_event, occurred_at,"
    " contact_id, campaign_id, raw, created_at) VALUES {values}"
    " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key"
)
_INSERT_PLAIN = (
    "INSERT INTO webhook_events (provider, dedupe_key, kind, provider_event, occurred_at,"
    " contact_id, campaign_id, raw, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (dedupe_key) DO NOTHING"
)
_INSERT_FACT = (
    "INSERT INTO events (contact_id, type, occurred_at, data, origin, dedupe_key, created_at)"
    " VALUES {values} ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, dedupe_key"
)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    received: int
    stored: int
    queued: int = 0  # journaled in the spool: stored once drained, unless duplicates

    @property
    def duplicates(self) -> int:
        return self.received - self.stored - self.queued


def apply(sql: Sql, plan: DeliveryPlan, ctx: RegisterContext) -> DeliveryResult:
    """Store the raw events; let only the new ones change the register."""
    if not plan.rows:  # Mandrill's setup probe, an SNS confirmation: nothing to write
        return DeliveryResult(received=plan.received, stored=0)
    if sql.dialect == "sqlite":
        fresh, stored = _store_raw_sqlite(sql, plan)
    else:
        fresh = store_raw(sql, plan.rows)
        stored = len(fresh)
    new = [c for c in plan.consequences if c.key in fresh]
    for c in new:
        if c.fact is not None:
            c.fact.key = fact_key(fresh[c.key], c.fact.key)
    if new:
        _change_register(sql, new, ctx, plan.now)
    return DeliveryResult(received=plan.received, stored=stored)


def fact_key(raw_id: int, tail: str) -> str:
    """The dedupe key of the register fact a stored raw event makes: the raw event's id,
    zero-padded, then the fact's type and provider key digest (``delivery_plan.fact_key_tail``).

    An event changes the register only in the transaction that first stores its raw row (the
    raw row's unique key is the event's idempotency), so the key need not start with a digest
    of content. Increasing ids keep each batch's keys together at the right edge of the events'
    unique index (after every hexadecimal content key): a 500-event batch dirtied about 60 of
    that index's pages with a SHA-256 first, a page or two now (bench/webhooks.py)."""
    return f"webhook_event:{raw_id:020d}:{tail}"


def store_raw(sql: Sql, rows: Sequence[tuple[Any, ...]]) -> dict[str, int]:
    """Insert the raw events; the ids of those not stored before, by dedupe key."""
    fresh: dict[str, int] = {}
    if sql.dialect == "postgresql":
        # Two redeliveries of one batch insert their keys in one order, so neither can wait on
        # a key the other holds while holding one it wants (a deadlock, then a 503 and a retry).
        rows = sorted(rows, key=lambda row: str(row[1]))
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        params = [value for row in chunk for value in row]
        returned = sql.all(_INSERT_RAW.format(values=sql.values(9, len(chunk))), params)
        fresh.update((str(key), int(rid)) for rid, key in returned)
    return fresh


def _store_raw_sqlite(sql: Sql, plan: DeliveryPlan) -> tuple[dict[str, int], int]:
    """``store_raw`` for SQLite: only the events with consequences need their keys back; the
    others (most of a batch: delivered, processed) go in one executemany of the prepared
    statement, counted by its row count (a skipped duplicate changes no row)."""
    watched = {c.key for c in plan.consequences}
    plain = [row for row in plan.rows if row[1] not in watched]
    fresh = store_raw(sql, [row for row in plan.rows if row[1] in watched]) if watched else {}
    return fresh, len(fresh) + (sql.many(_INSERT_PLAIN, plain) if plain else 0)


def _change_register(sql: Sql, new: list[Consequence], ctx: RegisterContext, now: datetime) -> None:
    facts = insert_facts(sql, [c.fact for c in new if c.fact is not None], now)
    by_origin: dict[str, list[SuppressionRecord]] = {}
    for c in new:
        if c.suppressions:
            by_origin.setdefault(c.origin, []).extend(c.suppressions)
    for origin, records in by_origin.items():
        rows = upsert_suppressions(sql, records, ctx.hasher, origin=origin, now=now)
        facts += journal.suppression_facts(sql, ctx.hasher, rows)
    if facts:
        journal.write_sql(sql, ctx.hasher, journal.lock_head_sql(sql), facts)
    _refresh_clocks(sql, new, ctx)


def insert_facts(sql: Sql, rows: list[FactRow], now: datetime) -> list[journal.Fact]:
    """Insert the register facts; the journal's facts of those that were new, oldest first."""
    created = sql.ts(now)
    ids: dict[str, int] = {}
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        params = [
            value
            for f in chunk
            for value in (f.contact_id, f.type, sql.ts(f.at), json_value(f.data), f.origin, f.key, created)
        ]
        returned = sql.all(_INSERT_FACT.format(values=sql.values(7, len(chunk))), params)
        ids.update((key, int(eid)) for eid, key in returned)
    facts = [
        journal.event_fact(
            {
                "id": ids[f.key],
                "contact_id": f.contact_id,
                "type": f.type,
                # Its canonical text, as the digest encodes the datetime: the same digest.
                "occurred_at": isoformat(f.at),
                "data": f.data,
                "dedupe_key": f.key,
            },
            f.coordinate,
        )
        for f in rows
        if f.key in ids
    ]
    return sorted(facts, key=lambda fact: fact.fact_id or 0)


def _refresh_clocks(sql: Sql, new: list[Consequence], ctx: RegisterContext) -> None:
    objected = {c.fact.contact_id for c in new if c.objection and c.fact is not None}
    latest: dict[int, datetime] = {}
    for c in new:
        if c.interest_at is not None and c.fact is not None and c.fact.contact_id not in objected:
            cid = c.fact.contact_id
            latest[cid] = max(latest.get(cid, c.interest_at), c.interest_at)
    if objected:
        clocks.refresh_sql(sql, objected, ctx.policy, lock=True)
    if latest:
        clocks.refresh_after_interest(sql, latest, ctx.policy)
