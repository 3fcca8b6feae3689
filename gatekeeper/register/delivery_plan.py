"""Planning the storage of provider events: everything that only reads (deliveries.py phase 1).

Per request, set-based: normalise the addresses, match contacts in one query (our id from the
message metadata when that contact still exists, else the address), read the send times of the
clicked campaigns in one more; then each event becomes its raw row (a tuple, as the driver
takes it) and, only for the kinds that change the register (``EFFECTS``), a ``Consequence``.
A newsletter's batch is mostly "processed" and "delivered": those cost a tuple each.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from gatekeeper.domain.retention import interest_counts
from gatekeeper.normalize import CoordinateError, normalise_email
from gatekeeper.proof.journal import coordinate_of
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.rawsql import Sql, ints
from gatekeeper.register.suppressions import SuppressionRecord
from gatekeeper.sqlbulk import json_value, read_ts
from gatekeeper.timeparse import isoformat
from webhooks.base import NormalizedEvent

# Names per contact-matching query: well under every driver's bound-parameter limit.
MATCH_CHUNK = 5_000
MAX_PROVIDER_EVENT_LENGTH = 64
# Brevo's documented click payload carries no user agent: there, a missing agent says nothing
# about the clicker, and the scanner rule falls back on the other signals (time since send).
PLATFORMS_WITHOUT_AGENT = frozenset({"brevo"})


@dataclass(frozen=True, slots=True)
class Effect:
    """What one kind of provider event does to the register besides being stored."""

    event_type: str | None = None  # register event for the matched contact
    reason: str | None = None  # suppression of the address
    channels: tuple[str, ...] = ()


# open, soft_bounce, delivered and other are stored only: the provider's event, kept with its
# raw payload and found by contact (the access export, the evidence pack), is the record of an
# open. An open never restarts a clock (CNIL, Spartoo 2020) and proves neither consent nor
# objection, so it makes no register fact and no journal entry: a newsletter's batch carries a
# sixth of opens, and their facts and entries were most of what its clicks' cost again.
EFFECTS: dict[str, Effect] = {
    "click": Effect(event_type="interest"),
    "unsubscribe": Effect(event_type="opposition", reason="unsubscribe", channels=("email",)),
    "hard_bounce": Effect(reason="hard_bounce", channels=("email",)),
    # A spam complaint is the strongest objection a mailbox lets a person make: every channel.
    "complaint": Effect(reason="complaint", channels=("all",)),
}


_SUPPRESSING = frozenset(kind for kind, effect in EFFECTS.items() if effect.reason)
# What must reach the database before the 2xx (an objection, a suppression): the rest may wait
# in the spool (gatekeeper.webhook_spooled) a moment.
URGENT = _SUPPRESSING | {kind for kind, effect in EFFECTS.items() if effect.event_type == "opposition"}


def may_wait(events: Sequence[NormalizedEvent]) -> bool:
    """True when no event of the request has legal urgency."""
    return not any(e.kind in URGENT for e in events)


def unique_events(events: Sequence[NormalizedEvent]) -> list[NormalizedEvent]:
    """The first event of each dedupe key, in order: a provider may repeat one in a batch."""
    return list({e.dedupe_key: e for e in reversed(events)}.values())[::-1]


@dataclass(slots=True)
class FactRow:
    """A register fact an event makes for its contact; its id comes back from the insert."""

    contact_id: int
    type: str
    at: datetime
    data: dict[str, Any]
    # Its dedupe key: here the part that names the provider event (``fact_key_tail``); the
    # raw event's id is put in front once that event is stored (``delivery_apply.fact_key``).
    key: str
    origin: str
    coordinate: str | None  # the contact's, for the journal's subject hash


@dataclass(slots=True)  # not frozen: frozen dataclasses cost 3x more to build
class Consequence:
    """What one provider event changes in the register, if it turns out to be new."""

    key: str  # the provider event's dedupe key
    origin: str
    fact: FactRow | None = None
    suppressions: list[SuppressionRecord] = field(default_factory=list)
    objection: bool = False  # the contact's whole summary must be recomputed
    interest_at: datetime | None = None  # a counting click: the contact's clock may move


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    received: int
    rows: list[tuple[Any, ...]]  # webhook_events rows; the dedupe key is at index 1
    consequences: list[Consequence]
    now: datetime


class Contact(NamedTuple):
    """A matched contact: a named tuple, built several times faster than a frozen dataclass
    (one per contact of a batch), and truthy like any non-empty tuple."""

    id: int
    email: str | None
    phone: str | None
    external_id: str | None

    @property
    def coordinate(self) -> str | None:
        return coordinate_of(self.email, self.phone, self.external_id)


Contacts = dict[int | str | None, Contact]  # by id and by e-mail (None: a look-up that finds none)
_MATCH = (
    "SELECT id, email, phone, external_id FROM contacts WHERE anonymised_at IS NULL AND {column} IN ({marks})"
)
_SEND_TIMES = "SELECT id, send_at FROM campaigns WHERE send_at IS NOT NULL AND id IN ({ids})"


def plan(sql: Sql, events: Sequence[NormalizedEvent], ctx: RegisterContext, now: datetime) -> DeliveryPlan:
    batch = unique_events(events) if len(events) > 1 else events
    contacts: Contacts = {}
    _add(sql, contacts, "id", sorted({e.contact_id for e in batch if e.contact_id is not None}))
    # An address is normalised only where it serves: to match an event our id did not, or to
    # be suppressed. Most events of our own sends carry our id.
    addresses = [
        _address(e.email) if e.contact_id not in contacts or e.kind in _SUPPRESSING else None for e in batch
    ]
    unmatched = {a for e, a in zip(batch, addresses, strict=True) if a and e.contact_id not in contacts}
    _add(sql, contacts, "email", sorted(unmatched))
    # Our id from the metadata when that contact still exists (the address may have changed
    # since the send), else the contact with that address (contacts are truthy).
    found = [
        contacts.get(e.contact_id) or (contacts.get(a) if a else None)
        for e, a in zip(batch, addresses, strict=True)
    ]
    planner = _Planner(ctx, sql, now, _send_times(sql, batch, found))
    consequences = [
        planner.consequence(e, a, c)
        for e, a, c in zip(batch, addresses, found, strict=True)
        if e.kind in EFFECTS
    ]
    return DeliveryPlan(len(events), planner.rows(batch, found), consequences, now)


def live_contacts(sql: Sql, ids: Sequence[int]) -> dict[int, Contact]:
    """The contacts of ``ids`` that are not anonymised, by id."""
    found: Contacts = {}
    _add(sql, found, "id", ids)
    return {key: contact for key, contact in found.items() if isinstance(key, int)}


def _address(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        return normalise_email(raw)
    except CoordinateError:
        return None  # stored with the raw event; nothing to match or suppress


def _add(sql: Sql, found: Contacts, column: str, names: Sequence[int | str]) -> None:
    """One query per few thousand names (drivers cap bound parameters). Bound, never inlined:
    a single event's query is then the same text every time, and its prepared statement is
    reused."""
    for start in range(0, len(names), MATCH_CHUNK):
        some = names[start : start + MATCH_CHUNK]
        for cid, email, phone, external_id in sql.all(
            _MATCH.format(column=column, marks=_marks(len(some))), some
        ):
            contact = Contact(int(cid), email, phone, external_id)
            found[contact.id] = contact
            if email:
                found[email] = contact


def _marks(count: int) -> str:
    return ", ".join("?" * count) or "NULL"


def _send_times(
    sql: Sql, batch: Sequence[NormalizedEvent], contacts: Sequence[Contact | None]
) -> dict[int, datetime]:
    """When our campaigns of the clicked messages were sent, to tell scanners from people."""
    ids = sorted(
        {
            e.campaign_id
            for e, contact in zip(batch, contacts, strict=True)
            if e.kind == "click" and e.campaign_id is not None and contact is not None
        }
    )
    if not ids:
        return {}
    return {int(cid): read_ts(at) for cid, at in sql.all(_SEND_TIMES.format(ids=ints(ids)))}


class _Planner:
    """Turns one matched event into its raw row and its consequences (``EFFECTS``)."""

    def __init__(self, ctx: RegisterContext, sql: Sql, now: datetime, sent_at: dict[int, datetime]) -> None:
        self.ctx, self.sql, self.now, self.sent_at = ctx, sql, now, sent_at
        self.created = sql.ts(now)
        self.texts: dict[datetime, str | None] = {}

    def rows(
        self, batch: Sequence[NormalizedEvent], found: Sequence[Contact | None]
    ) -> list[tuple[Any, ...]]:
        """The ``webhook_events`` rows, as the driver takes them (one loop, no call per event)."""
        ts, created = self.sql.ts, self.created
        stamps = {at: ts(at) for at in {e.occurred_at for e in batch}}  # a batch shares a few
        return [
            (
                e.provider,
                e.dedupe_key,
                e.kind,
                e.provider_event[:MAX_PROVIDER_EVENT_LENGTH],
                stamps[e.occurred_at],
                contact.id if contact else None,
                e.campaign_id,
                e.raw_json if e.raw_json is not None else raw_text(e.raw),
                created,
            )
            for e, contact in zip(batch, found, strict=True)
        ]

    def consequence(self, e: NormalizedEvent, address: str | None, contact: Contact | None) -> Consequence:
        effect = EFFECTS[e.kind]
        planned = Consequence(e.dedupe_key, f"webhook:{e.provider}")
        # A fact cannot have happened after we heard of it: a clock never runs from the future.
        at = min(e.occurred_at, self.now)
        if effect.event_type and contact is not None:
            data = self._data(effect.event_type, e, at)
            planned.fact = FactRow(
                contact.id,
                effect.event_type,
                at,
                data,
                fact_key_tail(e.dedupe_key, effect.event_type),
                planned.origin,
                contact.coordinate,
            )
            planned.objection = effect.event_type == "opposition"
            if data.get("counts"):
                planned.interest_at = at
        if effect.reason:
            # The reported address; an unsubscribe also covers the contact's own address when
            # the metadata named a contact whose address has changed since the send.
            own = contact.email if contact else None
            wanted = {address or own}
            if effect.reason == "unsubscribe":
                wanted.add(own)
            planned.suppressions = [
                SuppressionRecord(0, "email", a, effect.reason, effect.channels, at)
                for a in sorted(a for a in wanted if a)
            ]
        return planned

    def _data(self, event_type: str, e: NormalizedEvent, at: datetime) -> dict[str, Any]:
        when = self.texts.get(at)
        if when is None:  # a batch's events share a few instants: each formatted once
            when = self.texts[at] = isoformat(at)
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


def fact_key_tail(dedupe_key: str, event_type: str) -> str:
    """The end of a webhook fact's dedupe key: its type and 16 hex digits of the SHA-256 of the
    provider event's key. With the raw event's id in front it is unique even if a deleted raw
    row's id were ever given again (SQLite reuses the largest rowid once it is deleted)."""
    return f"{event_type}:{hashlib.sha256(dedupe_key.encode()).hexdigest()[:16]}"


def raw_text(raw: Mapping[str, Any]) -> str | None:
    """The JSON text stored for an event whose adapter kept no slice of the body."""
    return json_value(raw if isinstance(raw, dict) else dict(raw))
