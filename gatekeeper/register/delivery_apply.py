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

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gatekeeper.proof import journal
from gatekeeper.register import clocks, webhook_queue
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.delivery_plan import EFFECTS, Consequence, DeliveryPlan, FactRow, live_contacts
from gatekeeper.register.rawsql import Sql, ints
from gatekeeper.register.suppressions import SuppressionRecord, upsert_suppressions
from gatekeeper.sqlbulk import json_value, read_ts
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
# Only the events with consequences are read back: a tenth of a newsletter's batch.
_WITH_EFFECTS = " AND kind IN ({})".format(", ".join(f"'{kind}'" for kind in sorted(EFFECTS)))
_INSERT_FACT_ONE = (
    "INSERT INTO events (contact_id, type, occurred_at, data, origin, dedupe_key, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (dedupe_key) DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    received: int
    stored: int
    queued: int = 0  # journaled in the spool: stored once drained, unless duplicates

    @property
    def duplicates(self) -> int:
        return self.received - self.stored - self.queued


def apply(sql: Sql, plan: DeliveryPlan, ctx: RegisterContext, *, defer: bool = False) -> DeliveryResult:
    """Store the raw events; let only the new ones change the register. The stored events are
    queued for the index by contact (``webhook_queue``); with ``defer``, so are the facts
    without legal urgency (clicks), which the drainer applies a moment later."""
    if not plan.rows:  # Mandrill's setup probe, an SNS confirmation: nothing to write
        return DeliveryResult(received=plan.received, stored=0)
    if sql.dialect == "sqlite":
        fresh, stored = _store_raw_sqlite(sql, plan)
    else:
        fresh = store_raw(sql, plan.rows)
        stored = len(fresh)
        if fresh:
            webhook_queue.queue_range(sql, min(fresh.values()), max(fresh.values()))
    new = [c for c in plan.consequences if c.key in fresh]
    for c in new:
        if c.fact is not None:
            c.fact.key = fact_key(fresh[c.key], c.fact.key)
    if defer:
        later = [c for c in new if webhook_queue.deferrable(c)]
        webhook_queue.queue_facts(sql, [(fresh[c.key], c) for c in later])
        new = [c for c in new if not webhook_queue.deferrable(c)]
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
    """``store_raw`` for SQLite: every row in one executemany of the prepared statement, counted
    by its row count (a skipped duplicate changes no row); their range of ids queued for the
    index by contact; then the ids of the new events with consequences, read back by rowid
    (``_new_since``). A multi-row ``INSERT … RETURNING`` has a different text for every batch
    size, so SQLite prepared its ~1,000 parameters afresh each time: it cost twice the
    executemany per row (bench/webhooks_phases.py)."""
    last = _last_id(sql, "webhook_events")
    stored = sql.many(_INSERT_PLAIN, plan.rows)
    if not stored:
        return {}, 0
    webhook_queue.queue_range(sql, last + 1, last + stored)  # a skipped duplicate takes no id
    watched = {c.key for c in plan.consequences}
    return (_new_since(sql, "webhook_events", last, watched, _WITH_EFFECTS) if watched else {}), stored


def _last_id(sql: Sql, table: str) -> int:
    """The table's largest id, read in the write transaction (SQLite: BEGIN IMMEDIATE, the only
    writer), so the rows this transaction inserts next are exactly those above it: an INTEGER
    PRIMARY KEY without AUTOINCREMENT takes the largest rowid plus one."""
    row = sql.one(f"SELECT max(id) FROM {table}")  # noqa: S608 - a constant table name
    return int(row[0] or 0)


def _new_since(sql: Sql, table: str, last: int, keys: set[str], where: str = "") -> dict[str, int]:
    """The ids, by dedupe key, of the ``keys`` inserted above id ``last`` (``_last_id``);
    ``where`` narrows the rows read back (a constant condition)."""
    rows = sql.all(f"SELECT id, dedupe_key FROM {table} WHERE id > ?{where}", (last,))  # noqa: S608 - constants
    return {str(key): int(rid) for rid, key in rows if key in keys}


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
    params = [
        (f.contact_id, f.type, sql.ts(f.at), json_value(f.data), f.origin, f.key, created) for f in rows
    ]
    ids = (
        _insert_facts_sqlite(sql, params) if sql.dialect == "sqlite" else _insert_facts_returning(sql, params)
    )
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


def _insert_facts_returning(sql: Sql, params: list[tuple[Any, ...]]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for start in range(0, len(params), INSERT_CHUNK):
        chunk = params[start : start + INSERT_CHUNK]
        flat = [value for row in chunk for value in row]
        returned = sql.all(_INSERT_FACT.format(values=sql.values(7, len(chunk))), flat)
        ids.update((key, int(eid)) for eid, key in returned)
    return ids


def _insert_facts_sqlite(sql: Sql, params: list[tuple[Any, ...]]) -> dict[str, int]:
    """As ``_store_raw_sqlite``: one executemany, the new ids read back by rowid."""
    if not params:
        return {}
    last = _last_id(sql, "events")
    if not sql.many(_INSERT_FACT_ONE, params):
        return {}
    return _new_since(sql, "events", last, {str(row[5]) for row in params})


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


# --- what the requests queued (``webhook_queue``), applied by the drainer --------------------

# Queue rows per transaction of a pass, and events: a pass behind a minute of full load applies
# it in a few transactions, none holding SQLite's writer for long.
QUEUE_ROWS = 2_000
QUEUE_EVENTS = 100_000
DELETE_CHUNK = 5_000


@dataclass(frozen=True, slots=True)
class Queued:
    """Queue rows taken for one transaction."""

    ids: list[int]
    ranges: list[tuple[int, int]]  # of event ids, merged
    effects: list[tuple[int, dict[str, Any]]]  # (contact id, the fact a click makes)
    more: bool  # rows were left for the next transaction


def take_queued(sql: Sql, *, limit: int = QUEUE_ROWS, events: int = QUEUE_EVENTS) -> Queued | None:
    """Read the oldest queue rows, up to ``limit`` rows and about ``events`` events, before the
    writers' turn. None when the queue is empty."""
    rows = sql.all(webhook_queue.TAKE, (limit,))
    if not rows:
        return None
    taken: list[Any] = []
    covered = 0
    for row in rows:
        if taken and covered >= events:
            break
        taken.append(row)
        covered += int(row[2]) - int(row[1]) + 1
    ranges = webhook_queue.merged([(int(row[1]), int(row[2])) for row in taken])
    effects = [(int(contact), json.loads(effect)) for *_, contact, effect in taken if effect]
    more = len(taken) < len(rows) or len(rows) == limit
    return Queued([int(row[0]) for row in taken], ranges, effects, more)


def apply_queued(sql: Sql, queued: Queued, ctx: RegisterContext, now: datetime) -> int:
    """Apply queue rows taken by ``take_queued``, in the caller's write transaction: the events'
    contacts into their index, one sorted statement per range (reading the contacts first and
    inserting them from Python cost the drainer a third more); the clicks' facts as a request
    would have stored them; the rows deleted. How many rows. Idempotent: rows another pass
    applied meanwhile change nothing."""
    for first, last in queued.ranges:
        sql.run(webhook_queue.INDEX_RANGE, (first, last))
    if queued.effects:
        _apply_queued_facts(sql, queued.effects, ctx, now)
    for start in range(0, len(queued.ids), DELETE_CHUNK):
        # By id, never by range: on PostgreSQL a row with a smaller id may commit later.
        some = ints(queued.ids[start : start + DELETE_CHUNK])
        sql.run(f"DELETE FROM webhook_pending WHERE id IN ({some})")  # noqa: S608 - ints
    return len(queued.ids)


def _apply_queued_facts(
    sql: Sql, effects: list[tuple[int, dict[str, Any]]], ctx: RegisterContext, now: datetime
) -> None:
    contacts = live_contacts(sql, sorted({contact for contact, _ in effects}))  # erased meanwhile: none
    facts = [
        FactRow(cid, e["type"], read_ts(e["at"]), e["data"], e["key"], e["origin"], contacts[cid].coordinate)
        for cid, e in effects
        if cid in contacts
    ]
    new = insert_facts(sql, facts, now)
    if new:
        journal.write_sql(sql, ctx.hasher, journal.lock_head_sql(sql), new)
    latest: dict[int, datetime] = {}
    for cid, e in effects:
        if e["counts"] and cid in contacts:
            at = read_ts(e["at"])
            latest[cid] = max(latest.get(cid, at), at)
    if latest:  # a clock is a maximum over facts: a click applied twice moves nothing
        clocks.refresh_after_interest(sql, latest, ctx.policy)
