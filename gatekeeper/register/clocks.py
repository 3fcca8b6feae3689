"""The bridge between stored rows and the domain's retention clock and gate profile.

After any change to a contact's facts the shell calls ``refresh``: it loads the facts of the
touched contacts set-based (one query for contacts, one for their events, per chunk), lets the
pure core summarise them, and writes the clock, deadline and profile back in one executemany.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
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
from gatekeeper.domain.retention import reconsent_refused
from gatekeeper.register.codec import key_of, to_data
from gatekeeper.sqlbulk import dialect_of, json_value, read_ts, ts_value
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
    if profiles:
        session.execute(
            text("INSERT INTO gate_profiles (key, data) VALUES (:k, :d) ON CONFLICT (key) DO NOTHING"),
            [{"k": k, "d": json_value(v)} for k, v in profiles.items()],
        )


_CONTACT_COLS = (
    "id, audience, collected_at, collected_by, source_type, purpose, timezone, profession_tags, anonymised_at"
)


def refresh(session: Session, contact_ids: Iterable[int], policy: Policy) -> int:
    ids = sorted(set(contact_ids))
    for start in range(0, len(ids), CHUNK):
        _refresh_chunk(session, ids[start : start + CHUNK], policy)
    return len(ids)


def _refresh_chunk(session: Session, ids: list[int], policy: Policy) -> None:
    dialect = dialect_of(session)
    marks = ", ".join(str(int(i)) for i in ids)  # ints only: safe to inline
    contacts = (
        session.execute(text(f"SELECT {_CONTACT_COLS} FROM contacts WHERE id IN ({marks})"))  # noqa: S608
        .mappings()
        .all()
    )
    events: dict[int, list[tuple[str, datetime, Mapping[str, Any]]]] = defaultdict(list)
    for cid, etype, at, data in session.execute(
        text(
            f"SELECT contact_id, type, occurred_at, data FROM events WHERE contact_id IN ({marks})"  # noqa: S608
        )
    ):
        events[cid].append((etype, read_ts(at), json.loads(data) if isinstance(data, str) else data))
    updates, profiles = [], {}
    for row in contacts:
        contact = dict(row) | {"collected_at": read_ts(row["collected_at"])}
        stored, profile = stored_summary(facts_from(contact, events[row["id"]]), policy)
        profiles[stored.profile_key] = profile
        updates.append(
            {
                "id": row["id"],
                "clock": stored.clock,
                "anchor": ts_value(dialect, stored.anchor_at),
                "kind": stored.anchor_kind,
                "deadline": ts_value(dialect, stored.deadline),
                "reconsent": ts_value(dialect, stored.reconsent_at),
                "refused": ts_value(dialect, stored.refused_at),
                "pkey": stored.profile_key,
                "instants": json_value(stored.instants),
            }
        )
    store_profiles(session, profiles)
    if updates:
        session.execute(
            text(
                "UPDATE contacts SET clock = :clock, clock_anchor_at = :anchor, clock_anchor_kind = :kind,"
                " deadline = :deadline, reconsent_at = :reconsent, refused_at = :refused,"
                " profile_key = :pkey, instants = :instants"
                " WHERE id = :id"
            ),
            updates,
        )
