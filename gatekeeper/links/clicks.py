"""Recording a tracked click or download: the hot path of the public links.

One per recipient and link, in bursts right after a send, so it runs on one raw DB-API
connection: insert the interest event and, only when it counts (not a scanner, RULES.md §4),
recompute the contact's retention clock with the domain's own ``compute_clock``. An interest
never changes the gate profile or its instants (they hold consents, objections, purchases and
contracts), so only the clock columns are written; a test proves the row then equals what
``clocks.refresh`` writes.
"""

from __future__ import annotations

import json
from datetime import datetime

from gatekeeper.domain.policy import Policy
from gatekeeper.domain.retention import compute_clock, interest_counts, reconsent_refused
from gatekeeper.links.records import USER_AGENT_MAX, ContactCard, Raw, from_epoch
from gatekeeper.links.tokens import LinkClaims
from gatekeeper.register.clocks import facts_from
from gatekeeper.register.schema import dedupe_key
from gatekeeper.sqlbulk import read_json, read_ts
from gatekeeper.timeparse import isoformat


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
    """Store a click or download; True when it counts as interest and restarted the clock.
    The caller commits."""
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
    _lock_contact(raw, card.id)
    raw.run(
        "INSERT INTO events (contact_id, type, occurred_at, data, origin, dedupe_key, created_at)"
        " VALUES (?, 'interest', ?, ?, 'link', ?, ?) ON CONFLICT (dedupe_key) DO NOTHING",
        (
            card.id,
            raw.ts(now),
            json.dumps(data, separators=(",", ":"), ensure_ascii=False),
            dedupe_key("contact_id", card.id, "interest", data),
            raw.ts(now),
        ),
    )
    if counts:
        _refresh_clock(raw, policy, card)
    return counts


def _lock_contact(raw: Raw, contact_id: int) -> None:
    # Two clicks of one person in two workers: the second clock computation must see the first
    # click, or it could write an older anchor (never unlawful, but wrong).
    if raw.dialect == "sqlite":
        raw.run("BEGIN IMMEDIATE")
    else:
        raw.run("SELECT id FROM contacts WHERE id = ? FOR UPDATE", (contact_id,))


def _refresh_clock(raw: Raw, policy: Policy, card: ContactCard) -> None:
    events = [
        (etype, read_ts(at), read_json(data))
        for etype, at, data in raw.all(
            "SELECT type, occurred_at, data FROM events WHERE contact_id = ?", (card.id,)
        )
    ]
    facts = facts_from(card.facts_row, events)
    clock = compute_clock(facts, policy)
    refused = clock.anchor_at if reconsent_refused(facts, clock) else None
    raw.run(
        "UPDATE contacts SET clock = ?, clock_anchor_at = ?, clock_anchor_kind = ?,"
        " deadline = ?, reconsent_at = ?, refused_at = ? WHERE id = ?",
        (
            clock.clock,
            raw.ts(clock.anchor_at),
            clock.anchor_kind,
            raw.ts(clock.deadline),
            raw.ts(clock.reconsent_at),
            raw.ts(refused),
            card.id,
        ),
    )
