"""Read models of the register: a contact as the API shows it, with its retention view."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gatekeeper.domain.retention import RetentionClock, retention_state
from gatekeeper.errors import NotFoundError
from gatekeeper.models import Contact, Event, Suppression
from gatekeeper.register.context import RegisterContext
from gatekeeper.timeparse import isoformat


def clock_of(contact: Contact, ctx: RegisterContext) -> RetentionClock:
    deadline = contact.deadline
    reminder = None if deadline is None else deadline - timedelta(days=ctx.policy.reconsent_reminder_days)
    return RetentionClock(
        contact.clock,
        contact.clock_anchor_at or contact.collected_at,
        contact.clock_anchor_kind or "collection",
        deadline,
        contact.reconsent_at,
        reminder,
    )


def state_of(contact: Contact, ctx: RegisterContext, as_of: datetime) -> str:
    return retention_state(
        clock_of(contact, ctx),
        as_of,
        anonymised=contact.anonymised_at is not None,
        refused=contact.refused_at is not None,
        policy=ctx.policy,
    )


def contact_view(session: Session, ctx: RegisterContext, contact_id: int, as_of: datetime) -> dict[str, Any]:
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise NotFoundError(f"no contact {contact_id}")
    events = session.scalars(
        select(Event).where(Event.contact_id == contact_id).order_by(Event.occurred_at)
    ).all()
    return {
        "id": contact.id,
        "external_id": contact.external_id,
        "email": contact.email,
        "phone": contact.phone,
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "postal_address": contact.postal_address,
        "audience": contact.audience,
        "profession_tags": contact.profession_tags or [],
        "collected_at": isoformat(contact.collected_at),
        "collected_by": contact.collected_by,
        "source": {
            "type": contact.source_type,
            "name": contact.source_name,
            "proof_ref": contact.source_proof_ref,
        },
        "purpose": contact.purpose,
        "timezone": contact.timezone,
        "attributes": contact.attributes or {},
        "retention": _retention(contact, ctx, as_of, events),
        "consents": _consents(events),
        "suppressions": _suppressions(session, ctx, contact),
        "events": len(events),
    }


def _retention(contact: Contact, ctx: RegisterContext, as_of: datetime, events: Any) -> dict[str, Any]:
    anchor_at, kind = contact.clock_anchor_at, contact.clock_anchor_kind
    started_by: dict[str, Any] = {"kind": kind, "occurred_at": isoformat(anchor_at)}
    match = next((e for e in events if e.occurred_at == anchor_at), None)
    if match is not None:
        started_by.update({"event_id": match.id, "type": match.type})
    return {
        "state": state_of(contact, ctx, as_of),
        "deadline": isoformat(contact.deadline),
        "clock": contact.clock,
        "reconsent_from": isoformat(contact.reconsent_at),
        "started_by": started_by,
        "as_of": isoformat(as_of),
    }


def _consents(events: Any) -> dict[str, Any]:
    latest: dict[str, Any] = {}
    for e in events:  # ordered by time: the last one per channel is the one in force
        if e.type == "consent":
            latest[e.data["channel"]] = {
                "given": e.data["given"],
                "occurred_at": isoformat(e.occurred_at),
                "method": e.data.get("method"),
                "sender": e.data.get("sender"),
                "event_id": e.id,
            }
    return latest


def _suppressions(session: Session, ctx: RegisterContext, contact: Contact) -> list[dict[str, Any]]:
    hashes = [
        ctx.hasher.coordinate(k, v) for k, v in (("email", contact.email), ("phone", contact.phone)) if v
    ]
    rows = (
        session.scalars(select(Suppression).where(Suppression.coord_hash.in_(hashes))).all() if hashes else []
    )
    return [
        {
            "coordinate": r.coord_kind,
            "reason": r.reason,
            "channels": r.channels,
            "occurred_at": isoformat(r.occurred_at),
        }
        for r in rows
    ]
