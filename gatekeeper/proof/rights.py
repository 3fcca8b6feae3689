"""The rights of the person (RULES.md §7, GDPR art. 15-17 and 21), as services the API and the
preference centre both call: access, rectification, objection and erasure. Every one of them is
journaled; none commits (the request or the link handler owns the transaction).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gatekeeper.errors import ConflictError, NotFoundError, ValidationError
from gatekeeper.models import Contact
from gatekeeper.normalize import CoordinateError, normalise_email, normalise_phone
from gatekeeper.proof import journal
from gatekeeper.proof.evidence import evidence_pack
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.events import EventRecord, append_events
from gatekeeper.register.views import contact_view
from gatekeeper.register.webhook_queue import EVENTS_OF_CONTACT
from gatekeeper.retention.archive import ArchiveStore
from gatekeeper.retention.purge import anonymise_contacts
from gatekeeper.sqlbulk import read_json, read_ts
from gatekeeper.timeparse import isoformat

RECTIFIABLE = ("first_name", "last_name", "postal_address", "timezone", "email", "phone")


def _contact(session: Session, contact_id: int) -> Contact:
    contact = session.get(Contact, contact_id)
    if contact is None:
        raise NotFoundError(f"no contact {contact_id}")
    return contact


# --- access -----------------------------------------------------------------------------------


def access_export(session: Session, ctx: RegisterContext, contact_id: int, now: datetime) -> bytes:
    """Everything held on the person, machine-readable, in one zip (GDPR art. 15 and 20)."""
    _contact(session, contact_id)
    files = {
        "contact.json": contact_view(session, ctx, contact_id, now),
        "events.json": _all_events(session, contact_id),
        "evidence.json": evidence_pack(session, ctx, contact_id, now),
        "messages.json": _webhook_events(session, contact_id),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, json.dumps(content, ensure_ascii=False, indent=2, default=str))
        archive.writestr("README.txt", _readme(contact_id, now))
    journal.record_other(
        session,
        ctx.hasher,
        "access_export",
        f"contact:{contact_id}",
        {"contact_id": contact_id, "files": sorted(files), "at": now},
        now=now,
    )
    return buffer.getvalue()


def _all_events(session: Session, contact_id: int) -> list[dict[str, Any]]:
    rows = session.execute(
        text(
            "SELECT id, type, occurred_at, data, origin, created_at FROM events"
            " WHERE contact_id = :c ORDER BY occurred_at, id"
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
            "recorded_at": isoformat(read_ts(r.created_at)),
        }
        for r in rows
    ]


def _webhook_events(session: Session, contact_id: int) -> list[dict[str, Any]]:
    rows = session.execute(
        text(
            "SELECT provider, kind, provider_event, occurred_at, campaign_id, raw"  # noqa: S608 - a constant
            f" FROM webhook_events WHERE id IN ({EVENTS_OF_CONTACT}) ORDER BY occurred_at"
        ),
        {"contact": contact_id},
    ).all()
    return [
        {
            "provider": r.provider,
            "kind": r.kind,
            "provider_event": r.provider_event,
            "occurred_at": isoformat(read_ts(r.occurred_at)),
            "campaign_id": r.campaign_id,
            "raw": read_json(r.raw),
        }
        for r in rows
    ]


def _readme(contact_id: int, now: datetime) -> str:
    return (
        f"Data held on contact {contact_id} on {isoformat(now)} (GDPR art. 15).\n"
        "contact.json: identity, source, retention; events.json: every fact recorded;\n"
        "evidence.json: the proof of each consent and objection with its journal position;\n"
        "messages.json: what the emailing platforms reported.\n"
    )


def send_access_export(
    session: Session,
    ctx: RegisterContext,
    contact_id: int,
    now: datetime,
    *,
    sender: str,
    send: Callable[[EmailMessage], None],
) -> None:
    """The preference centre's access right: the export goes only to the person's own address
    on file, never to an address given in the request."""
    contact = _contact(session, contact_id)
    if not contact.email:
        raise ValidationError("this contact has no e-mail address to send the export to")
    message = EmailMessage()
    message["From"], message["To"] = sender, contact.email
    message["Subject"] = "Your data / Vos données"
    message.set_content(
        "You asked for a copy of your data: it is attached (JSON in a zip file).\n"
        "Vous avez demandé une copie de vos données : elle est jointe (JSON dans un zip).\n"
    )
    message.add_attachment(
        access_export(session, ctx, contact_id, now),
        maintype="application",
        subtype="zip",
        filename=f"data-{contact_id}.zip",
    )
    send(message)


# --- rectification ------------------------------------------------------------------------------


def rectify(
    session: Session, ctx: RegisterContext, contact_id: int, changes: Mapping[str, Any], now: datetime
) -> list[str]:
    """Correct the person's data (GDPR art. 16); the journal keeps the fact, the digest of the
    new values and the names of the fields, never the values themselves."""
    contact = _contact(session, contact_id)
    if contact.anonymised_at is not None:
        raise ConflictError("this contact was anonymised: nothing is left to rectify")
    unknown = sorted(set(changes) - set(RECTIFIABLE))
    if unknown:
        raise ValidationError(
            "these fields cannot be rectified here",
            [{"field": f, "problem": f"rectifiable: {', '.join(RECTIFIABLE)}"} for f in unknown],
        )
    values = {k: _normalised(k, v, ctx.region) for k, v in changes.items()}
    _check_coordinates_free(session, contact_id, values)
    for name, value in values.items():
        setattr(contact, name, value)
    contact.email_hash = ctx.hasher.coordinate("email", contact.email) if contact.email else None
    contact.phone_hash = ctx.hasher.coordinate("phone", contact.phone) if contact.phone else None
    contact.updated_at = now
    session.flush()
    journal.record_other(
        session,
        ctx.hasher,
        "rectified",
        f"contact:{contact_id}",
        {"contact_id": contact_id, "fields": sorted(values), "values": values, "at": now},
        now=now,
    )
    return sorted(values)


def _normalised(name: str, value: Any, region: str) -> Any:
    try:
        if name == "email" and value:
            return normalise_email(str(value))
        if name == "phone" and value:
            return normalise_phone(str(value), region)
    except CoordinateError as exc:
        raise ValidationError(str(exc), [{"field": name, "problem": str(exc)}]) from exc
    if name == "postal_address" and value is not None and not isinstance(value, dict):
        raise ValidationError(
            "postal_address must be an object", [{"field": name, "problem": "expected an object"}]
        )
    return value or None


def _check_coordinates_free(session: Session, contact_id: int, values: Mapping[str, Any]) -> None:
    for col in ("email", "phone"):
        if values.get(col):
            other = session.execute(
                text(f"SELECT id FROM contacts WHERE {col} = :v AND id <> :c"),  # noqa: S608
                {"v": values[col], "c": contact_id},
            ).first()
            if other is not None:
                raise ConflictError(f"this {col} already belongs to contact {other[0]}")


# --- objection and erasure ------------------------------------------------------------------------


def object_to(
    session: Session,
    ctx: RegisterContext,
    contact_id: int,
    now: datetime,
    *,
    channels: Sequence[str] | None = None,
    via: str = "form",
) -> None:
    """An objection (GDPR art. 21): every channel when none is named, honoured at once. It goes
    through the register's own fact store, so it becomes keyed-hash suppressions and is journaled."""
    contact = _contact(session, contact_id)
    ref = journal.coordinate_of(contact.email, contact.phone, contact.external_id)
    if ref is None or contact.anonymised_at is not None:
        raise ConflictError("this contact was anonymised: its objection is already kept as a suppression")
    kind, _, value = ref.partition(":")
    data = {"channels": list(channels) if channels else ["all"], "occurred_at": now, "via": via}
    append_events(session, [EventRecord(0, kind, value, "opposition", now, data)], ctx, origin="rights")


def erase(
    session: Session, ctx: RegisterContext, contact_id: int, now: datetime, *, archive: ArchiveStore | None
) -> dict[str, Any]:
    """Erasure (GDPR art. 17): anonymise now; the anonymiser keeps the keyed-hash ``erasure``
    suppression on every channel and moves the invoices to the legal archive. The journal
    records it and forgets the person's subject salt."""
    contact = _contact(session, contact_id)
    if contact.anonymised_at is not None:
        return {"id": contact_id, "anonymised_at": isoformat(contact.anonymised_at), "already": True}
    anonymise_contacts(session, [contact_id], ctx, reason="erasure", archive=archive, now=now)
    return {"id": contact_id, "anonymised_at": isoformat(now), "already": False}
