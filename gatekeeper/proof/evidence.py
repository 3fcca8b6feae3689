"""The evidence pack of one contact: why this person is in the register today, and the journal
entries that vouch for each item (API.md ``GET /api/v1/contacts/{id}/evidence``, RULES.md §6).

It tells the story in the order an inspector asks it: where the data came from, what the person
agreed to and how we can prove it, what set the retention clock and so the deadline, their
objections, the messages sent and the verdict runs that allowed them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gatekeeper.errors import NotFoundError
from gatekeeper.models import Contact
from gatekeeper.proof.journal import chain_hash, select_in
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.views import contact_view
from gatekeeper.register.webhook_queue import EVENTS_OF_CONTACT
from gatekeeper.sqlbulk import read_json, read_ts
from gatekeeper.timeparse import isoformat

CONSENT_PROOF = (
    "channel",
    "given",
    "method",
    "text_version",
    "form_id",
    "url",
    "ip",
    "user_agent",
    "prechecked",
    "bundled_with_terms",
    "sender",
    "partners",
)
Positions = dict[tuple[str, int], list[dict[str, Any]]]


def evidence_pack(session: Session, ctx: RegisterContext, contact_id: int, as_of: datetime) -> dict[str, Any]:
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise NotFoundError(f"no contact {contact_id}")
    view = contact_view(session, ctx, contact_id, as_of)
    entries = journal_entries(session, contact_id, _suppression_ids(session, contact))
    positions = _positions(entries)
    events = _events(session, contact_id, positions)
    messages = _messages(session, contact_id)
    return {
        "contact": {
            "id": contact.id,
            "external_id": contact.external_id,
            "anonymised_at": isoformat(contact.anonymised_at),
        },
        "as_of": isoformat(as_of),
        "policy": {"id": ctx.policy.id, "version": ctx.policy.version},
        "collection": {
            "collected_at": view["collected_at"],
            "collected_by": view["collected_by"],
            "source": view["source"],
            "purpose": view["purpose"],
            "audience": view["audience"],
        },
        "consents": [_consent(e) for e in events if e["type"] == "consent"],
        "retention": _retention(view, events, ctx),
        "suppressions": _suppressions(session, contact, positions),
        "messages": messages,
        "verdict_runs": _runs_for(session, messages, positions),
        "verdicts": _verdicts(session, contact_id),
        "events": events,
        "journal": {"entries": entries, "entries_intact": all(e["intact"] for e in entries)},
    }


def journal_entries(
    session: Session, contact_id: int, suppression_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """The entries about this contact and about the suppressions of its coordinates; each one's
    own hash is recomputed here (the whole chain is walked by ``gatekeeper audit verify``)."""
    rows: list[Any] = list(
        session.execute(
            text(
                "SELECT register, seq, at, kind, subject_ref, subject_hash, fact_table, fact_id,"
                " payload_digest, prev_hash, entry_hash FROM journal WHERE subject_ref = :ref"
                " ORDER BY register, seq"
            ),
            {"ref": f"contact:{contact_id}"},
        ).all()
    )
    rows += select_in(
        session,
        "SELECT register, seq, at, kind, subject_ref, subject_hash, fact_table, fact_id,"
        " payload_digest, prev_hash, entry_hash FROM journal WHERE fact_table = 'suppression'"
        " AND fact_id IN ({})",
        list(suppression_ids),
    )
    return sorted((_entry(r) for r in rows), key=lambda e: (e["register"], e["seq"]))


def _entry(r: Any) -> dict[str, Any]:
    at = read_ts(r.at)
    fact_id = None if r.fact_id is None else int(r.fact_id)
    intact = (
        chain_hash(
            r.register,
            int(r.seq),
            at,
            r.kind,
            r.subject_ref,
            r.subject_hash,
            r.fact_table,
            fact_id,
            r.payload_digest,
            r.prev_hash,
        )
        == r.entry_hash
    )
    return {
        "register": r.register,
        "seq": int(r.seq),
        "at": isoformat(at),
        "kind": r.kind,
        "subject_ref": r.subject_ref,
        "fact": None if fact_id is None else f"{r.fact_table}:{fact_id}",
        "payload_digest": r.payload_digest,
        "prev_hash": r.prev_hash,
        "entry_hash": r.entry_hash,
        "intact": intact,
    }


def _positions(entries: list[dict[str, Any]]) -> Positions:
    found: Positions = defaultdict(list)
    for e in entries:
        if e["fact"]:
            table, _, fid = e["fact"].partition(":")
            found[(table, int(fid))].append(
                {"register": e["register"], "seq": e["seq"], "entry_hash": e["entry_hash"]}
            )
    return found


def _events(session: Session, contact_id: int, positions: Positions) -> list[dict[str, Any]]:
    rows = session.execute(
        text(
            "SELECT id, type, occurred_at, data, origin FROM events WHERE contact_id = :c"
            " ORDER BY occurred_at, id"
        ),
        {"c": contact_id},
    ).all()
    return [
        {
            "id": int(r.id),
            "type": r.type,
            "occurred_at": isoformat(read_ts(r.occurred_at)),
            "data": read_json(r.data),
            "origin": r.origin,
            "journal": positions.get(("event", int(r.id)), []),
        }
        for r in rows
    ]


def _consent(event: dict[str, Any]) -> dict[str, Any]:
    proof = {k: event["data"].get(k) for k in CONSENT_PROOF}
    return {
        "event_id": event["id"],
        "occurred_at": event["occurred_at"],
        **proof,
        "journal": event["journal"],
    }


def _retention(view: dict[str, Any], events: list[dict[str, Any]], ctx: RegisterContext) -> dict[str, Any]:
    retention = dict(view["retention"])
    started = retention["started_by"]
    setting = [e for e in events if e["occurred_at"] == started.get("occurred_at")]
    years = (
        ctx.policy.client_retention_years
        if retention["clock"] == "client"
        else ctx.policy.prospect_retention_years
    )
    start = f"{started.get('kind') or 'collection'} on {started.get('occurred_at')}"
    retention["reason"] = (
        f"{retention['clock']} clock started by {start}; kept {years} years from then "
        f"(policy {ctx.policy.id} {ctx.policy.version}, RULES.md §4)"
    )
    retention["clock_events"] = setting
    return retention


def _suppression_ids(session: Session, contact: Contact) -> list[int]:
    hashes = [h for h in (contact.email_hash, contact.phone_hash) if h]
    rows = session.execute(
        text("SELECT id FROM suppressions WHERE coord_hash IN (:a, :b)"),
        {"a": hashes[0] if hashes else "", "b": hashes[-1] if hashes else ""},
    ).all()
    return [int(r[0]) for r in rows]


def _suppressions(session: Session, contact: Contact, positions: Positions) -> list[dict[str, Any]]:
    rows = select_in(
        session,
        "SELECT id, coord_kind, reason, channels, occurred_at, origin FROM suppressions"
        " WHERE id IN ({}) ORDER BY occurred_at",
        _suppression_ids(session, contact),
    )
    return [
        {
            "id": int(r.id),
            "coordinate": r.coord_kind,
            "reason": r.reason,
            "channels": r.channels,
            "occurred_at": isoformat(read_ts(r.occurred_at)),
            "origin": r.origin,
            "journal": positions.get(("suppression", int(r.id)), []),
        }
        for r in rows
    ]


def _messages(session: Session, contact_id: int) -> list[dict[str, Any]]:
    """What the platforms told us they sent (webhooks) and what we sent ourselves (outbox)."""
    hooks = session.execute(
        text(
            "SELECT provider, kind, occurred_at, campaign_id FROM webhook_events"  # noqa: S608 - a constant
            f" WHERE id IN ({EVENTS_OF_CONTACT}) ORDER BY occurred_at"
        ),
        {"contact": contact_id},
    ).all()
    ours = session.execute(
        text("SELECT kind, state, sent_at, created_at FROM outbox WHERE contact_id = :c ORDER BY id"),
        {"c": contact_id},
    ).all()
    return [
        {
            "via": r.provider,
            "kind": r.kind,
            "occurred_at": isoformat(read_ts(r.occurred_at)),
            "campaign_id": r.campaign_id,
        }
        for r in hooks
    ] + [
        {
            "via": "outbox",
            "kind": r.kind,
            "state": r.state,
            "occurred_at": isoformat(read_ts(r.sent_at or r.created_at)),
            "campaign_id": None,
        }
        for r in ours
    ]


def _runs_for(session: Session, messages: list[dict[str, Any]], positions: Positions) -> list[dict[str, Any]]:
    """Verdicts are stored per run, not per recipient: the runs that decided the campaigns this
    person received, with the policy version that decided."""
    campaigns = sorted({m["campaign_id"] for m in messages if m["campaign_id"] is not None})
    rows = select_in(
        session,
        "SELECT r.id, r.campaign_id, r.kind, r.as_of, r.policy_id, r.policy_version,"
        " (SELECT j.seq FROM journal j WHERE j.fact_table = 'run' AND j.fact_id = r.id) AS seq"
        " FROM verdict_runs r WHERE r.campaign_id IN ({}) ORDER BY r.id",
        campaigns,
    )
    return [
        {
            "id": int(r.id),
            "campaign_id": r.campaign_id,
            "kind": r.kind,
            "as_of": isoformat(read_ts(r.as_of)),
            "policy": {"id": r.policy_id, "version": r.policy_version},
            "journal": [] if r.seq is None else [{"register": "main", "seq": int(r.seq)}],
        }
        for r in rows
    ]


def _verdicts(session: Session, contact_id: int) -> list[dict[str, Any]]:
    """Every verdict the gate gave about this person, with the run and policy that decided."""
    rows = session.execute(
        text(
            "SELECT r.id, r.campaign_id, r.kind, r.as_of, r.policy_id, r.policy_version,"
            " v.decision, v.reasons,"
            " (SELECT j.seq FROM journal j WHERE j.fact_table = 'run' AND j.fact_id = r.id) AS seq"
            " FROM verdict_items v JOIN verdict_runs r ON r.id = v.run_id"
            " WHERE v.contact_id = :c ORDER BY r.id"
        ),
        {"c": contact_id},
    ).all()
    return [
        {
            "run_id": int(r.id),
            "campaign_id": r.campaign_id,
            "kind": r.kind,
            "as_of": isoformat(read_ts(r.as_of)),
            "decision": r.decision,
            "reasons": r.reasons.split(),
            "policy": {"id": r.policy_id, "version": r.policy_version},
            "journal": [] if r.seq is None else [{"register": "main", "seq": int(r.seq)}],
        }
        for r in rows
    ]
