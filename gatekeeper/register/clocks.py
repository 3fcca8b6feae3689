"""The bridge between stored rows and the domain's retention clock and gate profile.

After any change to a contact's facts the shell calls ``refresh``: it loads the facts of the
touched contacts set-based (one query for contacts, one for their events, per chunk), lets the
pure core summarise them, and writes the clock, deadline and profile back in one executemany.
Statements run on the session's own DB-API connection (``Sql``): SQLAlchemy's per-statement
machinery cost more than the queries on the webhook hot path.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from gatekeeper.domain.facts import (
    ALL_CHANNELS,
    ConsentFact,
    ContactFacts,
    Contract,
    InterestFact,
    Objection,
    Purchase,
)
from gatekeeper.domain.policy import Policy
from gatekeeper.domain.profile import summarise
from gatekeeper.domain.retention import compute_clock, reconsent_refused
from gatekeeper.register.codec import key_of, to_data
from gatekeeper.register.rawsql import Sql, ints
from gatekeeper.sqlbulk import json_value, read_ts
from gatekeeper.timeparse import parse_instant

CHUNK = 500


@dataclass(frozen=True, slots=True)
class Stored:
    """What is written on the contact row."""

    clock: str
    anchor_at: datetime | None
    anchor_kind: str | None
    deadline: datetime | None
    reconsent_at: datetime | None
    refused_at: datetime | None
    profile_key: str
    instants: dict[str, Any] | None


def _opt(data: Mapping[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    return None if value in (None, "") else parse_instant(value)


def facts_from(
    contact: Mapping[str, Any], events: Sequence[tuple[str, datetime, Mapping[str, Any]]]
) -> ContactFacts:
    collected_by = contact["collected_by"] or ""
    buckets: dict[str, list[Any]] = defaultdict(list)
    for etype, at, data in events:
        fact = _fact(etype, at, data, collected_by)
        if fact is not None:
            buckets[etype].append(fact)
    tags = contact["profession_tags"]
    return ContactFacts(
        audience=contact["audience"],
        collected_at=contact["collected_at"],
        collected_by=collected_by,
        source_type=contact["source_type"],
        purpose=contact["purpose"],
        timezone=contact["timezone"],
        profession_tags=frozenset(json.loads(tags) if isinstance(tags, str) else tags or ()),
        purchases=tuple(buckets["purchase"]),
        contracts=tuple(buckets["contract"]),
        consents=tuple(buckets["consent"]),
        objections=tuple(buckets["opposition"]),
        interests=tuple(buckets["interest"]),
        accounts_created=tuple(buckets["account_created"]),
        opens=tuple(buckets["open"]),
        anonymised=contact.get("anonymised_at") is not None,
    )


def _fact(etype: str, at: datetime, d: Mapping[str, Any], collected_by: str) -> Any:
    match etype:
        case "purchase":
            return Purchase(
                at,
                d.get("product_category") or "",
                d.get("seller") or collected_by,
                _opt(d, "warranty_until"),
            )
        case "contract":
            return Contract(d["kind"], at, _opt(d, "ends_at"), d.get("product_category") or "")
        case "consent":
            return ConsentFact(
                d["channel"],
                bool(d["given"]),
                at,
                d.get("method") or "checkbox",
                bool(d.get("prechecked")),
                bool(d.get("bundled_with_terms")),
                d.get("sender") or "",
                tuple(d.get("partners") or ()),
            )
        case "opposition":
            chans = d["channels"]
            return Objection(ALL_CHANNELS if "all" in chans else frozenset(chans), at, d.get("via") or "form")
        case "interest":
            return InterestFact(d["kind"], at, bool(d.get("counts", True)))
        case "account_created" | "open":
            return at
    return None


def stored_summary(facts: ContactFacts, policy: Policy) -> tuple[Stored, dict[str, Any]]:
    summary = summarise(facts, policy)
    profile = to_data(summary.profile)
    clock = summary.clock
    instants = to_data(summary.instants)
    # A "stop" answer to the reconsent expires the contact at once (RULES.md §4).
    refused = clock.anchor_at if reconsent_refused(facts, clock) else None
    return Stored(
        clock=str(clock.clock),
        anchor_at=clock.anchor_at,
        anchor_kind=clock.anchor_kind,
        deadline=clock.deadline,
        reconsent_at=clock.reconsent_at,
        refused_at=refused,
        profile_key=key_of(profile),
        instants=instants if any(instants.values()) else None,
    ), profile


class NewContactSummaries:
    """Summaries of contacts being imported, memoised: a contact without events has a clock
    that depends only on its collection date and a profile that depends only on a few
    discrete fields, so a million-row import computes each distinct case once."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.profiles: dict[str, dict[str, Any]] = {}
        self._profile_memo: dict[tuple[Any, ...], tuple[str, dict[str, Any] | None]] = {}
        self._clock_memo: dict[tuple[datetime, str], Stored] = {}

    def for_record(self, r: Any) -> Stored:
        pkey = (
            r.audience,
            r.collected_by,
            r.source_type,
            r.purpose,
            r.timezone,
            tuple(r.profession_tags),
        )
        ckey = (r.collected_at, r.audience)
        if pkey not in self._profile_memo or ckey not in self._clock_memo:
            facts = ContactFacts(
                audience=r.audience,
                collected_at=r.collected_at,
                collected_by=r.collected_by or "",
                source_type=r.source_type,
                purpose=r.purpose,
                timezone=r.timezone,
                profession_tags=frozenset(r.profession_tags),
            )
            stored, profile = stored_summary(facts, self.policy)
            self.profiles[stored.profile_key] = profile
            self._profile_memo[pkey] = (stored.profile_key, stored.instants)
            self._clock_memo[ckey] = stored
        key, instants = self._profile_memo[pkey]
        clock = self._clock_memo[ckey]
        return Stored(
            clock.clock,
            clock.anchor_at,
            clock.anchor_kind,
            clock.deadline,
            clock.reconsent_at,
            None,
            key,
            instants,
        )

    def store_profiles(self, session: Session) -> None:
        store_profiles(session, self.profiles)


def store_profiles(session: Session, profiles: Mapping[str, Mapping[str, Any]]) -> None:
    store_profiles_sql(Sql.of(session), profiles)


def store_profiles_sql(sql: Sql, profiles: Mapping[str, Mapping[str, Any]]) -> None:
    sql.many(
        "INSERT INTO gate_profiles (key, data) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
        [(k, json_value(v)) for k, v in profiles.items()],
    )


_CONTACT_COLS = (
    "id, audience, collected_at, collected_by, source_type, purpose, timezone, profession_tags, anonymised_at"
)
_CONTACT_NAMES = tuple(name.strip() for name in _CONTACT_COLS.split(","))
_UPDATE = (
    "UPDATE contacts SET clock = ?, clock_anchor_at = ?, clock_anchor_kind = ?, deadline = ?,"
    " reconsent_at = ?, refused_at = ?, profile_key = ?, instants = ? WHERE id = ?"
)
# An interest never changes the gate profile or its instants (they hold consents, objections,
# purchases and contracts): after new clicks only the clock columns are written.
_UPDATE_CLOCK = (
    "UPDATE contacts SET clock = ?, clock_anchor_at = ?, clock_anchor_kind = ?, deadline = ?,"
    " reconsent_at = ?, refused_at = ? WHERE id = ?"
)
Events = dict[int, list[tuple[str, datetime, Mapping[str, Any]]]]


def refresh(session: Session, contact_ids: Iterable[int], policy: Policy) -> int:
    return refresh_sql(Sql.of(session), contact_ids, policy)


def refresh_sql(sql: Sql, contact_ids: Iterable[int], policy: Policy, *, lock: bool = False) -> int:
    """``refresh`` on a raw connection; ``lock`` takes the contacts' rows first on PostgreSQL,
    so two writers recomputing one contact run one after the other (SQLite: one writer)."""
    ids = sorted(set(contact_ids))
    for start in range(0, len(ids), CHUNK):
        _refresh_chunk(sql, ids[start : start + CHUNK], policy, lock)
    return len(ids)


def _refresh_chunk(sql: Sql, ids: list[int], policy: Policy, lock: bool) -> None:
    contacts = _contacts(sql, ids, lock)
    events = _events(sql, [row[0] for row in contacts])
    updates, profiles = [], {}
    for row in contacts:
        stored, profile = stored_summary(facts_from(_contact(row), events[row[0]]), policy)
        profiles[stored.profile_key] = profile
        updates.append(
            (
                stored.clock,
                sql.ts(stored.anchor_at),
                stored.anchor_kind,
                sql.ts(stored.deadline),
                sql.ts(stored.reconsent_at),
                sql.ts(stored.refused_at),
                stored.profile_key,
                json_value(stored.instants),
                row[0],
            )
        )
    store_profiles_sql(sql, profiles)
    sql.many(_UPDATE, updates)


def refresh_after_interest(sql: Sql, latest: Mapping[int, datetime], policy: Policy) -> int:
    """Recompute the clocks that new counting interests can move: ``latest`` maps each contact
    to its latest new interest. A clock is a maximum over facts, so an interest older than the
    stored anchor changes nothing and that contact is skipped without reading its events.
    Returns how many clocks were recomputed."""
    ids = sorted(latest)
    done = 0
    for start in range(0, len(ids), CHUNK):
        rows = _contacts(sql, ids[start : start + CHUNK], True, extra=", clock_anchor_at")
        movable = [r for r in rows if r[-1] is None or read_ts(r[-1]) <= latest[r[0]]]
        events = _events(sql, [row[0] for row in movable])
        updates = []
        for row in movable:
            facts = facts_from(_contact(row), events[row[0]])
            clock = compute_clock(facts, policy)
            refused = clock.anchor_at if reconsent_refused(facts, clock) else None
            updates.append(
                (
                    str(clock.clock),
                    sql.ts(clock.anchor_at),
                    clock.anchor_kind,
                    sql.ts(clock.deadline),
                    sql.ts(clock.reconsent_at),
                    sql.ts(refused),
                    row[0],
                )
            )
        sql.many(_UPDATE_CLOCK, updates)
        done += len(updates)
    return done


def _contacts(sql: Sql, ids: list[int], lock: bool, extra: str = "") -> list[Any]:
    # NO KEY UPDATE: serialises two recomputations of a contact without waiting on the key-share
    # locks that inserting its events (foreign keys) takes; in id order, so no deadlock.
    suffix = " ORDER BY id FOR NO KEY UPDATE" if lock and sql.dialect == "postgresql" else ""
    query = f"SELECT {_CONTACT_COLS}{extra} FROM contacts WHERE id IN ({ints(ids)}){suffix}"  # noqa: S608
    return sql.all(query)


def _contact(row: Sequence[Any]) -> dict[str, Any]:
    contact = dict(zip(_CONTACT_NAMES, row, strict=False))
    contact["collected_at"] = read_ts(contact["collected_at"])
    return contact


def _events(sql: Sql, ids: list[int]) -> Events:
    events: Events = defaultdict(list)
    if ids:
        query = f"SELECT contact_id, type, occurred_at, data FROM events WHERE contact_id IN ({ints(ids)})"  # noqa: S608
        for cid, etype, at, data in sql.all(query):
            events[cid].append((etype, read_ts(at), json.loads(data) if isinstance(data, str) else data))
    return events
