"""Delivery and engagement events from emailing platforms, into the register (WEBHOOKS.md).

Theory of operation
-------------------
The webhook view hands over the events of one request, already verified and parsed
(``webhooks.base.NormalizedEvent``). Everything happens in the caller's transaction, which also
records the request's one-time token (``DatabaseReplayGuard``), so a failure stores nothing and
burns nothing. Set-based, never a query per event (PERFORMANCE.md), in two phases so that
SQLite's single writer is held as briefly as possible:

1. ``plan_deliveries`` only reads, and runs concurrently in every worker: normalise the
   addresses, match contacts (our id from the message metadata when that contact exists, else
   the address; one query), and prepare each event's raw row and its consequences (``EFFECTS``);
2. ``apply_deliveries`` writes, one worker at a time on SQLite (``write_turn``): a multi-row
   ``INSERT … ON CONFLICT (dedupe_key) DO NOTHING RETURNING dedupe_key`` stores each provider
   event once and says which are new (providers retry whole batches: idempotency is per event);
   only the new ones change the register (warehouse's recipe: drop duplicates before the state
   change), and each new fact is proven in the journal (RULES.md §6); then the clocks of
   contacts given an interest or an objection are recomputed once.

Clocks are a maximum over facts and suppressions keep their latest date, so events arriving out
of order (Brevo often does) never move a clock backwards nor undo a newer suppression.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from gatekeeper.domain.retention import interest_counts
from gatekeeper.normalize import CoordinateError, normalise_email
from gatekeeper.proof import journal
from gatekeeper.register import clocks
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.suppressions import SuppressionRecord, add_suppressions
from gatekeeper.sqlbulk import (
    create_temp,
    dialect_of,
    drop_temp,
    json_value,
    load_rows,
    read_ts,
    ts_value,
)
from gatekeeper.timeparse import isoformat
from webhooks.base import NormalizedEvent, ReplayError

# Rows per multi-row INSERT: 9 columns x 1,000 stays far under SQLite's 32,766 parameters.
INSERT_CHUNK = 1_000
# Names per contact-matching query: well under every driver's bound-parameter limit.
MATCH_CHUNK = 5_000
# Used tokens are kept longer than any adapter accepts a signature (Mailgun: 15 minutes).
TOKEN_TTL = timedelta(days=1)
# About one token in this many also forgets expired ones: no scheduler needed, little cost.
TOKEN_PURGE_EVERY = 64
MAX_TOKEN_LENGTH = 255
MAX_PROVIDER_EVENT_LENGTH = 64
# Brevo's documented click payload carries no user agent: there, a missing agent says nothing
# about the clicker, and the scanner rule falls back on the other signals (time since send).
PLATFORMS_WITHOUT_AGENT = frozenset({"brevo"})
FACT_KEY = 5  # position of dedupe_key in a register fact row (see _INSERT_FACT)
FACT_STAGE = "stage_webhook_facts"
FACT_STAGE_COLUMNS = [("dedupe_key", "text")]


@dataclass(frozen=True, slots=True)
class Effect:
    """What one kind of provider event does to the register besides being stored."""

    event_type: str | None = None  # register event for the matched contact
    reason: str | None = None  # suppression of the address
    channels: tuple[str, ...] = ()


# soft_bounce, delivered and other are stored only.
EFFECTS: dict[str, Effect] = {
    "click": Effect(event_type="interest"),
    "open": Effect(event_type="open"),  # recorded, never restarts a clock (CNIL, Spartoo 2020)
    "unsubscribe": Effect(event_type="opposition", reason="unsubscribe", channels=("email",)),
    "hard_bounce": Effect(reason="hard_bounce", channels=("email",)),
    # A spam complaint is the strongest objection a mailbox lets a person make: every channel.
    "complaint": Effect(reason="complaint", channels=("all",)),
}


@dataclass(slots=True)  # not frozen: one per event on the hot path, and frozen is 3x slower
class Planned:
    """One provider event: its raw row, and what it changes if it turns out to be new."""

    key: str
    row: tuple[Any, ...]
    origin: str
    fact: tuple[Any, ...] | None = None
    suppressions: list[SuppressionRecord] = field(default_factory=list)
    refresh: int | None = None  # a contact whose clock may move


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    received: int
    items: list[Planned]


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    received: int
    stored: int

    @property
    def duplicates(self) -> int:
        return self.received - self.stored


@contextmanager
def _cursor(session: Session) -> Iterator[Any]:
    """A DBAPI cursor inside the session's transaction: our few hot statements skip SQLAlchemy's
    per-statement result machinery (sqlbulk does the same for bulk loads). Driver errors come
    out as SQLAlchemy's, like every other database error."""
    connection, dbapi_error = _dbapi(session)
    cursor = connection.cursor()
    try:
        yield cursor
    except dbapi_error as exc:
        raise DBAPIError.instance(None, None, exc, dbapi_error) from exc
    finally:
        cursor.close()


def _dbapi(session: Session) -> tuple[Any, type[Exception]]:
    """The transaction's DBAPI connection, looked up once per transaction (each lookup walks
    SQLAlchemy's session state machine)."""
    transaction = session.get_transaction()
    cached = session.info.get(_DBAPI_KEY)
    if cached is None or cached[0] is not transaction or transaction is None:
        connection = session.connection().connection.driver_connection
        cached = (session.get_transaction(), connection, session.get_bind().dialect.loaded_dbapi.Error)
        session.info[_DBAPI_KEY] = cached
    return cached[1], cached[2]


_DBAPI_KEY = "gatekeeper.deliveries.dbapi"


def _marks(dialect: str, columns: int) -> str:
    mark = "?" if dialect == "sqlite" else "%s"  # the drivers' own paramstyles
    return f"({', '.join([mark] * columns)})"


# Only placeholders and integers are ever formatted into these: values are bound parameters.
_SEEN = "SELECT 1 FROM webhook_tokens WHERE provider = {mark} AND token = {mark}"
_INSERT_SEEN = (
    "INSERT INTO webhook_tokens (provider, token, seen_at) VALUES {values}"
    " ON CONFLICT (provider, token) DO NOTHING"
)
_FORGET = "DELETE FROM webhook_tokens WHERE seen_at < {mark}"
_MATCH = (
    "SELECT id, email FROM contacts WHERE anonymised_at IS NULL AND (id IN ({ids}) OR email IN ({marks}))"
)
_SEND_TIMES = "SELECT id, send_at FROM campaigns WHERE send_at IS NOT NULL AND id IN ({ids})"
_INSERT_RAW = (
    "INSERT INTO webhook_events (provider, dedupe_key, kind, provider_event, occurred_at,"
    " contact_id, campaign_id, raw, created_at) VALUES {values}"
    " ON CONFLICT (dedupe_key) DO NOTHING RETURNING dedupe_key"
)
_INSERT_FACT = (
    "INSERT INTO events (contact_id, type, occurred_at, data, origin, dedupe_key, created_at)"
    " VALUES {values} ON CONFLICT (dedupe_key) DO NOTHING"
)


class DatabaseReplayGuard:
    """``webhooks.base.ReplayGuard`` on the ``webhook_tokens`` table. ``seen`` only looks (the
    adapter asks while verifying, before any write); ``record`` writes the tokens with the events,
    in their transaction, and the unique (provider, token) index turns a concurrent replay that
    passed the look into a ``ReplayError``."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.pending: list[tuple[str, str, datetime]] = []

    def seen(self, provider: str, token: str, *, now: datetime) -> bool:
        token = _bounded(token)
        if any(p == provider and t == token for p, t, _ in self.pending):
            return True
        mark = "?" if dialect_of(self.session) == "sqlite" else "%s"
        with _cursor(self.session) as cursor:
            found = cursor.execute(_SEEN.format(mark=mark), (provider, token)).fetchone()
        if found:
            return True
        self.pending.append((provider, token, now))
        return False

    def record(self) -> None:
        dialect = dialect_of(self.session)
        for provider, token, now in self.pending:
            with _cursor(self.session) as cursor:
                cursor.execute(
                    _INSERT_SEEN.format(values=_marks(dialect, 3)), (provider, token, ts_value(dialect, now))
                )
                if cursor.rowcount == 0:
                    raise ReplayError(f"{provider} token used by a concurrent request")
                if zlib.crc32(token.encode()) % TOKEN_PURGE_EVERY == 0:
                    cursor.execute(
                        _FORGET.format(mark=_marks(dialect, 1)), (ts_value(dialect, now - TOKEN_TTL),)
                    )


def _bounded(token: str) -> str:
    if len(token) <= MAX_TOKEN_LENGTH:
        return token
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


@contextmanager
def write_turn(session: Session) -> Iterator[None]:
    """Hold the write phase, up to commit, alone among this database's writers that use it.

    SQLite has a single writer, and its busy handler waits for the lock by sleeping with a
    growing back-off (1, 2, 5, 10… ms), which idles the CPU while the lock is already free. A
    kernel file lock wakes the next worker at once. PostgreSQL needs no turn. On error the
    transaction is rolled back before the turn passes, so no one waits for our teardown."""
    url = session.get_bind().engine.url
    path = url.database if url.get_backend_name() == "sqlite" else None
    if not path or path == ":memory:":
        yield
        return
    descriptor = _lock_descriptor(f"{path}.writers.lock")
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    try:
        yield
    except BaseException:
        session.rollback()
        raise
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_UN)


_LOCKS: dict[tuple[str, int], int] = {}
# A service writes one database; tests and tools open many in one process: keep a few.
MAX_LOCK_DESCRIPTORS = 4


def _lock_descriptor(path: str) -> int:
    """One open descriptor per database per process: flock belongs to the open file, so a
    descriptor inherited across fork would be shared by parent and child and exclude nothing."""
    key = (path, os.getpid())
    if key not in _LOCKS:
        while len(_LOCKS) >= MAX_LOCK_DESCRIPTORS:  # other databases' descriptors only
            os.close(_LOCKS.pop(next(iter(_LOCKS))))
        _LOCKS[key] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return _LOCKS[key]


def record_delivery_events(
    session: Session, events: Sequence[NormalizedEvent], ctx: RegisterContext, *, now: datetime
) -> DeliveryResult:
    """Store the events of one request once each and apply the new ones to the register."""
    return apply_deliveries(session, plan_deliveries(session, events, ctx, now=now), ctx)


def plan_deliveries(
    session: Session, events: Sequence[NormalizedEvent], ctx: RegisterContext, *, now: datetime
) -> DeliveryPlan:
    """Everything that only reads: matching, raw rows, and each event's consequences."""
    batch = list({e.dedupe_key: e for e in reversed(events)}.values())[::-1]  # first of each key
    addresses = [_address(e.email) for e in batch]
    matches = match_contacts(session, batch, addresses)
    planner = _Planner(ctx, dialect_of(session), now, _send_times(session, batch, matches))
    items = [planner.one(e, a, m) for e, a, m in zip(batch, addresses, matches, strict=True)]
    return DeliveryPlan(received=len(events), items=items)


def apply_deliveries(session: Session, plan: DeliveryPlan, ctx: RegisterContext) -> DeliveryResult:
    """Store the raw events; let only the new ones change the register."""
    if not plan.items:  # Mandrill's setup probe, an SNS confirmation: nothing to write
        return DeliveryResult(received=plan.received, stored=0)
    fresh = _store(session, plan.items)
    new = [p for p in plan.items if p.key in fresh]
    facts = [p.fact for p in new if p.fact is not None]
    _insert_facts(session, facts)
    _journal_facts(session, [fact[FACT_KEY] for fact in facts], ctx)
    by_origin: dict[str, list[SuppressionRecord]] = {}
    for p in new:
        by_origin.setdefault(p.origin, []).extend(p.suppressions)
    for origin, records in by_origin.items():
        add_suppressions(session, records, ctx.hasher, origin=origin)
    clocks.refresh(session, {p.refresh for p in new if p.refresh is not None}, ctx.policy)
    return DeliveryResult(received=plan.received, stored=len(new))


def _address(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        return normalise_email(raw)
    except CoordinateError:
        return None  # stored with the raw event; nothing to match or suppress


Match = tuple[int | None, str | None]  # (contact id, the contact's e-mail)


def match_contacts(
    session: Session, batch: Sequence[NormalizedEvent], addresses: Sequence[str | None]
) -> list[Match]:
    """Per event: the contact whose id we sent in the metadata, when it still exists (the
    address may have changed since the send), else the contact with that address."""
    ids = sorted({e.contact_id for e in batch if e.contact_id is not None})
    emails = sorted({a for a in addresses if a})
    by_id: dict[int, str | None] = dict(_contacts_named(session, ids, emails))
    by_email = {email: cid for cid, email in by_id.items() if email}
    found: list[Match] = []
    for event, address in zip(batch, addresses, strict=True):
        cid = event.contact_id if event.contact_id in by_id else by_email.get(address or "")
        found.append((cid, by_id.get(cid) if cid is not None else None))
    return found


def _contacts_named(session: Session, ids: list[int], emails: list[str]) -> Iterator[Any]:
    """One query per few thousand names (drivers cap bound parameters); ids are ints, inlined."""
    mark = "?" if dialect_of(session) == "sqlite" else "%s"
    for start in range(0, max(len(ids), len(emails), 1), MATCH_CHUNK):
        some_ids = ", ".join(str(int(i)) for i in ids[start : start + MATCH_CHUNK]) or "NULL"
        some_emails = emails[start : start + MATCH_CHUNK]
        marks = ", ".join([mark] * len(some_emails)) or "NULL"
        with _cursor(session) as cursor:
            cursor.execute(_MATCH.format(ids=some_ids, marks=marks), tuple(some_emails))
            rows = cursor.fetchall()
        yield from ((int(cid), email) for cid, email in rows)


def _send_times(
    session: Session, batch: Sequence[NormalizedEvent], matches: Sequence[Match]
) -> dict[int, datetime]:
    """When our campaigns of the clicked messages were sent, to tell scanners from people."""
    ids = sorted(
        {
            e.campaign_id
            for e, (cid, _) in zip(batch, matches, strict=True)
            if e.kind == "click" and e.campaign_id is not None and cid is not None
        }
    )
    if not ids:
        return {}
    with _cursor(session) as cursor:
        cursor.execute(_SEND_TIMES.format(ids=", ".join(str(int(i)) for i in ids)))
        return {int(cid): read_ts(at) for cid, at in cursor.fetchall()}


class _Planner:
    """Turns one matched event into its raw row and its consequences (``EFFECTS``)."""

    def __init__(
        self, ctx: RegisterContext, dialect: str, now: datetime, sent_at: dict[int, datetime]
    ) -> None:
        self.ctx, self.dialect, self.now, self.sent_at = ctx, dialect, now, sent_at
        self.created = ts_value(dialect, now)

    def one(self, e: NormalizedEvent, address: str | None, match: Match) -> Planned:
        contact_id, contact_email = match
        raw = e.raw if isinstance(e.raw, dict) else dict(e.raw)
        row = (
            e.provider,
            e.dedupe_key,
            e.kind,
            e.provider_event[:MAX_PROVIDER_EVENT_LENGTH],
            ts_value(self.dialect, e.occurred_at),
            contact_id,
            e.campaign_id,
            json_value(raw),
            self.created,
        )
        planned = Planned(e.dedupe_key, row, f"webhook:{e.provider}")
        effect = EFFECTS.get(e.kind)
        if effect is None:
            return planned
        # A fact cannot have happened after we heard of it: a clock never runs from the future.
        at = min(e.occurred_at, self.now)
        if effect.event_type and contact_id is not None:
            data = self._data(effect.event_type, e, at)
            planned.fact = self._fact(e, contact_id, effect.event_type, data, at)
            if effect.event_type == "opposition" or data.get("counts"):
                planned.refresh = contact_id
        if effect.reason:
            # The reported address; an unsubscribe also covers the contact's own address when
            # the metadata named a contact whose address has changed since the send.
            wanted = {address or contact_email}
            if effect.reason == "unsubscribe":
                wanted.add(contact_email)
            planned.suppressions = [
                SuppressionRecord(0, "email", a, effect.reason, effect.channels, at)
                for a in sorted(a for a in wanted if a)
            ]
        return planned

    def _data(self, event_type: str, e: NormalizedEvent, at: datetime) -> dict[str, Any]:
        when = isoformat(at)
        if event_type == "interest":
            send = self.sent_at.get(e.campaign_id) if e.campaign_id is not None else None
            after_send = None if send is None else (e.occurred_at - send).total_seconds()
            # Link scanners click within seconds of delivery, or say who they are (RULES.md §4).
            counts = interest_counts(
                "click",
                e.user_agent,
                after_send,
                "GET",
                policy=self.ctx.policy,
                agent_reported=e.provider not in PLATFORMS_WITHOUT_AGENT,
            )
            return {"kind": "click", "occurred_at": when, "counts": counts, "detail": e.url}
        if event_type == "opposition":
            return {"channels": ["email"], "occurred_at": when, "via": "link"}
        return {"occurred_at": when}

    def _fact(
        self, e: NormalizedEvent, contact_id: int, event_type: str, data: dict[str, Any], at: datetime
    ) -> tuple[Any, ...]:
        # The provider event is stored once, so its key also fingerprints the register fact.
        key = hashlib.sha256(f"webhook|{e.dedupe_key}|{event_type}".encode()).hexdigest()
        return (
            contact_id,
            event_type,
            ts_value(self.dialect, at),
            json_value(data),
            f"webhook:{e.provider}",
            key,
            self.created,
        )


@lru_cache(maxsize=16)
def _insert_raw_sql(dialect: str, rows: int) -> str:
    return _INSERT_RAW.format(values=", ".join([_marks(dialect, 9)] * rows))


def _store(session: Session, items: Sequence[Planned]) -> set[str]:
    """Insert the raw events; the keys RETURNING gives back are the events not seen before
    (exact under concurrency: a concurrent duplicate waits on the unique index, then skips)."""
    dialect = dialect_of(session)
    fresh: set[str] = set()
    with _cursor(session) as cursor:
        for start in range(0, len(items), INSERT_CHUNK):
            chunk = items[start : start + INSERT_CHUNK]
            params = tuple(value for p in chunk for value in p.row)
            cursor.execute(_insert_raw_sql(dialect, len(chunk)), params)
            fresh.update(row[0] for row in cursor.fetchall())
    return fresh


def _journal_facts(session: Session, keys: list[str], ctx: RegisterContext) -> None:
    """Every fact is proven in the hash-chained journal (RULES.md §6), as append_events does."""
    if not keys:
        return
    create_temp(session, FACT_STAGE, FACT_STAGE_COLUMNS)
    load_rows(session, FACT_STAGE, FACT_STAGE_COLUMNS, ((key,) for key in keys))
    journal.record_events(session, ctx.hasher, FACT_STAGE)
    drop_temp(session, FACT_STAGE)


def _insert_facts(session: Session, rows: list[tuple[Any, ...]]) -> None:
    if rows:
        with _cursor(session) as cursor:
            cursor.executemany(_INSERT_FACT.format(values=_marks(dialect_of(session), 7)), rows)
