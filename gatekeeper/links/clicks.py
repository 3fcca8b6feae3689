"""Recording a tracked click or download: the hot path of the public links.

One per recipient and link, in bursts right after a send, so it is one short transaction on the
fast path's own connection: insert the interest event and, only when it counts (not a scanner,
RULES.md §4), move the contact's stored clock forward with the domain's ``clock_after_interest``
(equal to ``compute_clock`` over all the facts, proven in tests/domain) in one compare-and-set
``UPDATE``: it only applies if the clock columns are still those the card was read with.
Otherwise (another writer got there first, a refused reconsent, a clock never written) the
register's ``clocks.refresh_after_interest`` recomputes it from the row and every fact. An
interest never changes the gate profile or its instants (they hold consents, objections,
purchases and contracts), so only the clock columns are written; a test proves the row then
equals what ``clocks.refresh`` writes.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gatekeeper.domain.policy import Policy
from gatekeeper.domain.retention import (
    clock_after_interest,
    interest_counts,
)
from gatekeeper.links.records import USER_AGENT_MAX, ContactCard, Raw, from_epoch
from gatekeeper.links.tokens import LinkClaims
from gatekeeper.register.clocks import refresh_after_interest
from gatekeeper.register.rawsql import Sql
from gatekeeper.register.schema import dedupe_key
from gatekeeper.timeparse import isoformat

# json.dumps(data, separators=(",", ":"), ensure_ascii=False) without an encoder built per call.
_compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class Interest:
    """A click or download ready to store, everything computed before the write lock is taken:
    the event row and, when it counts, the clock it moves the contact to."""

    card: ContactCard
    at: datetime
    event: tuple[Any, ...]  # the INSERT's parameters
    counts: bool
    recompute: bool  # no usable stored clock: every fact decides (``compute_clock``)
    as_read: tuple[Any, ...]  # the clock columns as read with the card, to compare-and-set
    move: tuple[Any, ...] | None  # the UPDATE's parameters; None when the clock stays


def plan_interest(
    raw: Raw,
    policy: Policy,
    card: ContactCard,
    claims: LinkClaims,
    *,
    method: str,
    user_agent: str | None,
    now: datetime,
) -> Interest:
    """What storing this click will write (no database access)."""
    since_send = None if claims.sent_at is None else now.timestamp() - claims.sent_at
    counts = interest_counts(claims.purpose, user_agent, since_send, method, policy=policy)
    data = {
        "kind": claims.purpose,
        "occurred_at": isoformat(now),
        "counts": counts,
        "detail": claims.url,
        "campaign_id": claims.campaign_id,
        "method": method.upper(),
        "user_agent": (user_agent or "")[:USER_AGENT_MAX] or None,
        "sent_at": None if claims.sent_at is None else isoformat(from_epoch(claims.sent_at)),
    }
    data = {k: v for k, v in data.items() if v is not None}
    at = raw.ts(now)
    event = (
        card.id,
        at,
        _compact_json(data),
        dedupe_key("contact_id", card.id, "interest", data),
        at,
    )
    stored = card.stored_clock
    # A refused reconsent's instant is not in the clock: such a contact is recomputed.
    recompute = stored is None or card.refused
    as_read = (card.id, *card.stored_columns)
    move = None
    if counts and stored is not None and not recompute:
        clock = clock_after_interest(stored, card.audience, claims.purpose, now, policy)
        if clock is not stored:
            moved = (clock.anchor_at, clock.deadline, clock.reconsent_at)
            anchor, deadline, reconsent = (raw.ts(t) for t in moved)
            move = (anchor, clock.anchor_kind, deadline, reconsent, *as_read)
    return Interest(card, now, event, counts, recompute, as_read, move)


def store_interest(raw: Raw, policy: Policy, interest: Interest) -> None:
    """Insert the event and move the clock; inside the caller's write transaction."""
    raw.run(_INSERT_INTEREST, interest.event)
    if not interest.counts:
        return
    if interest.recompute:
        _refresh_clock(raw, policy, interest)
    elif interest.move is None:
        # An older interest: nothing to write, provided the row is still as it was read.
        if raw.one(_STILL_AS_READ, interest.as_read) is None:
            _refresh_clock(raw, policy, interest)
    elif raw.count(_MOVE_CLOCK, interest.move) == 0:
        # Another writer changed the clock since the card was read (a click of the same person
        # in the other worker, a purchase imported): recompute from all the facts.
        _refresh_clock(raw, policy, interest)


def store_at_once(raw: Raw, interest: Interest) -> bool:
    """PostgreSQL, autocommit: the event and the moved clock in one statement, so one round
    trip and one transaction. False when that does not apply or the compare-and-set missed;
    the event may then be stored already, and ``store_interest`` in a transaction completes
    the click (its INSERT finds the same dedupe key and does nothing)."""
    if interest.move is None or raw.dialect != "postgresql":
        return False
    return raw.count(_INSERT_AND_MOVE, interest.event + interest.move) > 0


def record_interest(
    raw: Raw,
    policy: Policy,
    card: ContactCard,
    claims: LinkClaims,
    *,
    method: str,
    user_agent: str | None,
    now: datetime,
) -> bool:
    """Plan and store a click; True when it counts as interest and restarted the clock.
    The caller has begun the write transaction (``Raw.begin``) and commits it."""
    interest = plan_interest(raw, policy, card, claims, method=method, user_agent=user_agent, now=now)
    store_interest(raw, policy, interest)
    return interest.counts


_INSERT_INTEREST = (
    "INSERT INTO events (contact_id, type, occurred_at, data, origin, dedupe_key, created_at)"
    " VALUES (?, 'interest', ?, ?, 'link', ?, ?) ON CONFLICT (dedupe_key) DO NOTHING"
)
_AS_READ = (
    "id = ? AND clock = ? AND clock_anchor_at = ? AND clock_anchor_kind = ?"
    " AND deadline IS NOT DISTINCT FROM ? AND refused_at IS NULL"
)
_STILL_AS_READ = f"SELECT 1 FROM contacts WHERE {_AS_READ}"  # noqa: S608 - constant
_MOVE_CLOCK = (
    "UPDATE contacts SET clock_anchor_at = ?, clock_anchor_kind = ?, deadline = ?, reconsent_at = ?"  # noqa: S608 - constant
    f" WHERE {_AS_READ}"
)
# A data-modifying WITH runs whether or not it is referenced (PostgreSQL only).
_INSERT_AND_MOVE = f"WITH inserted AS ({_INSERT_INTEREST} RETURNING id) {_MOVE_CLOCK}"


def _refresh_clock(raw: Raw, policy: Policy, interest: Interest) -> None:
    # The register's own recomputation: it locks the row (PostgreSQL; SQLite has one writer)
    # and reads it again, so a contact changed since the card was read is computed as it is.
    sql = Sql(raw.connection, raw.dialect, _driver_error(raw.dialect))
    refresh_after_interest(sql, {interest.card.id: interest.at}, policy)


def _driver_error(dialect: str) -> type[Exception]:
    if dialect == "sqlite":
        return sqlite3.Error
    import psycopg  # noqa: PLC0415 - only ever loaded with PostgreSQL

    return psycopg.Error
