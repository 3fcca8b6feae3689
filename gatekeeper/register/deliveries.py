"""Delivery and engagement events from emailing platforms, into the register (WEBHOOKS.md).

Theory of operation
-------------------
The webhook view hands over the events of one request, already verified and parsed
(``webhooks.base.NormalizedEvent``). Everything here runs in the caller's transaction, which also
holds the request's one-time token (``DatabaseReplayGuard``), so a failure stores nothing and
burns nothing. Per request, set-based, never a query per event (PERFORMANCE.md):

1. match contacts: our id from the message metadata when that contact exists, else the
   normalised recipient address (one query for the batch);
2. store each provider event once: a multi-row ``INSERT … ON CONFLICT (dedupe_key) DO NOTHING
   RETURNING dedupe_key`` says which events are new (providers retry whole batches, so
   idempotency is per event);
3. apply the state change for the new events only (warehouse's recipe: drop duplicates before
   the state change), from the ``EFFECTS`` table;
4. recompute the clocks of the contacts that received an interest or an objection, once.

Clocks are a maximum over facts and suppressions keep their latest date, so events arriving out
of order (Brevo often does) never move a clock backwards nor undo a newer suppression.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gatekeeper.domain.retention import interest_counts
from gatekeeper.normalize import CoordinateError, normalise_email
from gatekeeper.register import clocks
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.suppressions import SuppressionRecord, add_suppressions
from gatekeeper.sqlbulk import dialect_of, json_value, read_ts, ts_value
from gatekeeper.timeparse import isoformat
from webhooks.base import NormalizedEvent

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


@dataclass(slots=True)  # not frozen: built per event on the hot path, frozen costs 3x to init
class Delivery:
    """A new provider event with the address and contact it was matched to."""

    event: NormalizedEvent
    address: str | None
    contact_id: int | None
    contact_email: str | None


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    received: int
    stored: int

    @property
    def duplicates(self) -> int:
        return self.received - self.stored


class DatabaseReplayGuard:
    """``webhooks.base.ReplayGuard`` on the ``webhook_tokens`` table, in the caller's transaction:
    the unique (provider, token) index decides, so two concurrent deliveries cannot both pass."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def seen(self, provider: str, token: str, *, now: datetime) -> bool:
        if len(token) > MAX_TOKEN_LENGTH:
            token = "sha256:" + hashlib.sha256(token.encode()).hexdigest()
        dialect = dialect_of(self.session)
        sql = _INSERT_SEEN.format(values=_marks(dialect, 3))
        params = (provider, token, ts_value(dialect, now))
        result = self.session.connection().exec_driver_sql(sql, params)
        if zlib.crc32(token.encode()) % TOKEN_PURGE_EVERY == 0:
            forget_tokens(self.session, now - TOKEN_TTL)
        return result.rowcount == 0


def forget_tokens(session: Session, before: datetime) -> None:
    session.execute(text("DELETE FROM webhook_tokens WHERE seen_at < :before"),
                    {"before": ts_value(dialect_of(session), before)})


def record_delivery_events(
    session: Session, events: Sequence[NormalizedEvent], ctx: RegisterContext, *, now: datetime
) -> DeliveryResult:
    """Store the events of one request once each and apply the new ones to the register."""
    batch = list({e.dedupe_key: e for e in reversed(events)}.values())[::-1]  # first of each key
    if not batch:
        return DeliveryResult(received=len(events), stored=0)
    addresses = [_address(e.email) for e in batch]
    matches = match_contacts(session, batch, addresses)
    fresh = _store(session, batch, [m[0] for m in matches], now)
    new = [Delivery(e, a, m[0], m[1]) for e, a, m in zip(batch, addresses, matches, strict=True)
           if e.dedupe_key in fresh]
    apply_effects(session, new, ctx, now=now)
    return DeliveryResult(received=len(events), stored=len(new))


def _address(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        return normalise_email(raw)
    except CoordinateError:
        return None  # stored with the raw event; nothing to match or suppress


def match_contacts(
    session: Session, batch: Sequence[NormalizedEvent], addresses: Sequence[str | None]
) -> list[tuple[int | None, str | None]]:
    """(contact id, its e-mail) per event: the id we sent in the metadata when that contact still
    exists (the address may have changed since), else the contact with that address."""
    ids = sorted({e.contact_id for e in batch if e.contact_id is not None})
    emails = sorted({a for a in addresses if a})
    by_id: dict[int, str | None] = {}
    for cid, email in _contacts_named(session, ids, emails):
        by_id[int(cid)] = email
    by_email = {email: cid for cid, email in by_id.items() if email}
    found: list[tuple[int | None, str | None]] = []
    for event, address in zip(batch, addresses, strict=True):
        cid = event.contact_id if event.contact_id in by_id else by_email.get(address or "")
        found.append((cid, by_id.get(cid) if cid is not None else None))
    return found


def _contacts_named(session: Session, ids: list[int], emails: list[str]) -> Iterator[Any]:
    """One query per few thousand names (drivers cap bound parameters); ids are ints, inlined."""
    mark = "?" if dialect_of(session) == "sqlite" else "%s"
    for start in range(0, max(len(ids), len(emails), 1), MATCH_CHUNK):
        some_ids = ", ".join(str(int(i)) for i in ids[start:start + MATCH_CHUNK]) or "NULL"
        some_emails = emails[start:start + MATCH_CHUNK]
        marks = ", ".join([mark] * len(some_emails)) or "NULL"
        yield from session.connection().exec_driver_sql(
            _MATCH.format(ids=some_ids, marks=marks), tuple(some_emails))


# Only placeholders and integers are ever formatted into these: values are bound parameters.
_INSERT_SEEN = (
    "INSERT INTO webhook_tokens (provider, token, seen_at) VALUES {values}"
    " ON CONFLICT (provider, token) DO NOTHING"
)
_MATCH = (
    "SELECT id, email FROM contacts WHERE anonymised_at IS NULL"
    " AND (id IN ({ids}) OR email IN ({marks}))"
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


def _marks(dialect: str, columns: int) -> str:
    mark = "?" if dialect == "sqlite" else "%s"  # the drivers' own paramstyles
    return f"({', '.join([mark] * columns)})"


@lru_cache(maxsize=16)
def _insert_raw_sql(dialect: str, rows: int) -> str:
    return _INSERT_RAW.format(values=", ".join([_marks(dialect, 9)] * rows))


def _store(
    session: Session, batch: Sequence[NormalizedEvent], contact_ids: Sequence[int | None],
    now: datetime,
) -> set[str]:
    """Insert the raw events; the keys RETURNING gives back are the events not seen before
    (exact under concurrency: a concurrent duplicate waits on the unique index, then skips)."""
    dialect = dialect_of(session)
    created = ts_value(dialect, now)
    connection = session.connection()
    fresh: set[str] = set()
    for start in range(0, len(batch), INSERT_CHUNK):
        chunk = batch[start:start + INSERT_CHUNK]
        params: list[Any] = []
        for event, cid in zip(chunk, contact_ids[start:start + INSERT_CHUNK], strict=True):
            params += (event.provider, event.dedupe_key, event.kind,
                       event.provider_event[:MAX_PROVIDER_EVENT_LENGTH],
                       ts_value(dialect, event.occurred_at), cid, event.campaign_id,
                       json_value(event.raw if isinstance(event.raw, dict) else dict(event.raw)),
                       created)
        result = connection.exec_driver_sql(_insert_raw_sql(dialect, len(chunk)), tuple(params))
        fresh.update(row[0] for row in result)
    return fresh


def apply_effects(
    session: Session, deliveries: Sequence[Delivery], ctx: RegisterContext, *, now: datetime
) -> None:
    sent_at = _send_times(session, deliveries)
    facts: list[tuple[Any, ...]] = []
    entries: dict[str, list[SuppressionRecord]] = {}
    touched: set[int] = set()
    dialect = dialect_of(session)
    for row, d in enumerate(deliveries):
        effect = EFFECTS.get(d.event.kind)
        if effect is None:
            continue
        # A fact cannot have happened after we heard of it: a clock never runs from the future.
        at = min(d.event.occurred_at, now)
        if effect.event_type and d.contact_id is not None:
            data = _event_data(effect.event_type, d, at, sent_at, ctx)
            facts.append(_event_row(dialect, d, effect.event_type, data, at=at, now=now))
            if effect.event_type == "opposition" or data.get("counts"):
                touched.add(d.contact_id)
        if effect.reason:
            entries.setdefault(d.event.provider, []).extend(_suppressions(row, d, effect, at))
    _insert_facts(session, facts)
    for provider, records in entries.items():
        add_suppressions(session, records, ctx.hasher, origin=f"webhook:{provider}")
    clocks.refresh(session, touched, ctx.policy)


def _event_data(
    event_type: str, d: Delivery, at: datetime, sent_at: dict[int, datetime],
    ctx: RegisterContext,
) -> dict[str, Any]:
    when = isoformat(at)
    if event_type == "interest":
        send = sent_at.get(d.event.campaign_id) if d.event.campaign_id is not None else None
        after_send = None if send is None else (d.event.occurred_at - send).total_seconds()
        # Link scanners click within seconds of delivery, or say who they are (RULES.md §4).
        counts = interest_counts("click", d.event.user_agent, after_send, "GET", policy=ctx.policy)
        return {"kind": "click", "occurred_at": when, "counts": counts, "detail": d.event.url}
    if event_type == "opposition":
        return {"channels": ["email"], "occurred_at": when, "via": "link"}
    return {"occurred_at": when}


def _event_row(
    dialect: str, d: Delivery, event_type: str, data: dict[str, Any], *, at: datetime,
    now: datetime,
) -> tuple[Any, ...]:
    # The provider event is stored once, so its key also fingerprints the register fact.
    key = hashlib.sha256(f"webhook|{d.event.dedupe_key}|{event_type}".encode()).hexdigest()
    return (d.contact_id, event_type, ts_value(dialect, at), json_value(data),
            f"webhook:{d.event.provider}", key, ts_value(dialect, now))


def _insert_facts(session: Session, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    sql = _INSERT_FACT.format(values=_marks(dialect_of(session), 7))
    session.connection().exec_driver_sql(sql, rows)


def _suppressions(
    row: int, d: Delivery, effect: Effect, at: datetime
) -> Iterator[SuppressionRecord]:
    """The address the provider reported; an unsubscribe also covers the contact's own address
    when the metadata named a contact whose address has changed since the send."""
    assert effect.reason is not None
    addresses = {d.address or d.contact_email}
    if effect.reason == "unsubscribe":
        addresses.add(d.contact_email)
    for address in sorted(a for a in addresses if a):
        yield SuppressionRecord(row, "email", address, effect.reason, effect.channels, at)


def _send_times(session: Session, deliveries: Sequence[Delivery]) -> dict[int, datetime]:
    """When our campaigns of the clicked messages were sent, to tell scanners from people."""
    ids = sorted({d.event.campaign_id for d in deliveries
                  if d.event.kind == "click" and d.event.campaign_id is not None
                  and d.contact_id is not None})
    if not ids:
        return {}
    sql = _SEND_TIMES.format(ids=", ".join(str(int(i)) for i in ids))
    return {int(cid): read_ts(at) for cid, at in session.connection().exec_driver_sql(sql)}
