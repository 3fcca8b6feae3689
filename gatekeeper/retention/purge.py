"""Anonymisation: what is left of a person once their data may no longer be kept (RULES.md §4).

Removed: every direct and indirect identifier — e-mail, phone and their keyed hashes, names,
external id, the postal address but its département, free attributes, the IPs, user agents,
URLs and free text inside events, the fingerprints of events (an unkeyed SHA-256 over the
e-mail, reversible by dictionary), the raw payloads of webhook events, queued messages.
Kept: non-identifying statistics — age band, département, category, the counted events.
The objection stays as its keyed-hash suppression, and an ``erasure`` suppression is added so a
stale copy of the address (a CRM re-import, an old export) cannot bring the person back without
a new consent: the one form in which a hashed address may survive (RULES.md §4).
Invoices (purchases) move to the legal archive with the customer's identity, as the law asks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gatekeeper.proof import journal
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.suppressions import SuppressionRecord, add_suppressions
from gatekeeper.register.webhook_queue import EVENTS_OF_CONTACTS
from gatekeeper.retention.archive import ArchivedRecord, ArchiveStore, invoice_keep_until
from gatekeeper.sqlbulk import dialect_of, json_value, read_json, read_ts, ts_value

CHUNK = 1000
# Event fields that say what happened, never who or from where.
KEPT_EVENT_FIELDS = frozenset(
    {
        "occurred_at",
        "starts_at",
        "ends_at",
        "warranty_until",
        "channel",
        "given",
        "method",
        "prechecked",
        "bundled_with_terms",
        "channels",
        "via",
        "kind",
        "counts",
        "outcome",
        "product_category",
        "seller",
        "sender",
        "one_click",
    }
)
KEPT_ATTRIBUTES = frozenset({"category", "age_band"})
_CONTACT_SQL = (
    "SELECT id, email, phone, external_id, first_name, last_name, postal_address,"
    " attributes FROM contacts WHERE anonymised_at IS NULL AND id IN ({ids})"
)


def anonymise_contacts(
    session: Session,
    contact_ids: Sequence[int],
    ctx: RegisterContext,
    *,
    reason: str,
    archive: ArchiveStore | None,
    now: datetime,
) -> int:
    """Anonymise these contacts (already anonymised ones are skipped); the caller commits.

    ``reason`` (expired, refused, erasure…) is kept on the row; ``archive`` receives the
    invoices, or None to keep them here stripped of anything identifying.
    """
    ids = sorted({int(i) for i in contact_ids})
    done = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        done += _anonymise_chunk(session, chunk, ctx, reason, archive, now)
        # RULES.md §6: the anonymisation itself is proof; the journal entry also lets the
        # verifier accept the facts it scrubbed (idempotent per contact).
        journal.record_anonymised(session, ctx.hasher, chunk, reason=reason, now=now)
    return done


def _anonymise_chunk(
    session: Session,
    ids: list[int],
    ctx: RegisterContext,
    reason: str,
    archive: ArchiveStore | None,
    now: datetime,
) -> int:
    marks = ", ".join(str(i) for i in ids)  # ints only: safe to inline
    rows = [dict(r) for r in session.execute(text(_CONTACT_SQL.format(ids=marks))).mappings()]
    if not rows:
        return 0
    found = ", ".join(str(r["id"]) for r in rows)
    _keep_suppressions(session, ctx, rows, now)
    moved = _archive_invoices(session, rows, found, archive, now) if archive is not None else set()
    _scrub_events(session, found, moved)
    _scrub_webhook_events(session, found)
    session.execute(text(f"DELETE FROM outbox WHERE state = 'queued' AND contact_id IN ({found})"))  # noqa: S608
    _scrub_contacts(session, rows, reason, now)
    return len(rows)


def _keep_suppressions(
    session: Session, ctx: RegisterContext, rows: list[dict[str, Any]], now: datetime
) -> None:
    entries = [
        SuppressionRecord(0, kind, r[kind], "erasure", ["all"], now)
        for r in rows
        for kind in ("email", "phone")
        if r[kind]
    ]
    add_suppressions(session, entries, ctx.hasher, origin="anonymisation")


def _archive_invoices(
    session: Session, rows: list[dict[str, Any]], found: str, archive: ArchiveStore, now: datetime
) -> set[int]:
    people = {r["id"]: _customer(r) for r in rows}
    purchases = session.execute(
        text(
            "SELECT id, contact_id, occurred_at, data FROM events"  # noqa: S608
            f" WHERE type = 'purchase' AND contact_id IN ({found})"
        )
    ).all()
    items = [
        ArchivedRecord(
            "invoice",
            f"event:{eid}",
            read_ts(at),
            invoice_keep_until(read_ts(at)),
            {"purchase": read_json(data), "customer": people[cid]},
        )
        for eid, cid, at, data in purchases
    ]
    archive.put(items, now)  # committed first: see archive.py on why nothing can be lost
    moved = {int(p[0]) for p in purchases}
    if moved:
        session.execute(text(f"DELETE FROM events WHERE id IN ({', '.join(map(str, moved))})"))  # noqa: S608
    return moved


def _customer(row: Mapping[str, Any]) -> dict[str, Any]:
    # What an invoice names (Code de commerce L441-9): the buyer's name and address.
    return {
        "first_name": row["first_name"],
        "last_name": row["last_name"],
        "email": row["email"],
        "postal_address": read_json(row["postal_address"]),
        "external_id": row["external_id"],
    }


def _scrub_events(session: Session, found: str, moved: set[int]) -> None:
    events = session.execute(text(f"SELECT id, data FROM events WHERE contact_id IN ({found})")).all()  # noqa: S608
    updates = [
        {"id": eid, "data": json_value(_kept(read_json(data))), "key": f"anon:{eid}"}
        for eid, data in events
        if eid not in moved
    ]
    if updates:
        session.execute(text("UPDATE events SET data = :data, dedupe_key = :key WHERE id = :id"), updates)


def _kept(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k in KEPT_EVENT_FIELDS}


def _scrub_webhook_events(session: Session, found: str) -> None:
    # Provider payloads hold the address; some providers' dedupe keys do too.
    session.execute(
        text(
            "UPDATE webhook_events SET raw = NULL,"  # noqa: S608
            " dedupe_key = 'anon:' || CAST(id AS VARCHAR(20))"
            f" WHERE id IN ({EVENTS_OF_CONTACTS.format(contacts=found)})"
        )
    )


def _scrub_contacts(session: Session, rows: list[dict[str, Any]], reason: str, now: datetime) -> None:
    dialect = dialect_of(session)
    updates = [
        {
            "id": r["id"],
            "address": json_value(_area(read_json(r["postal_address"]))),
            "attributes": json_value(_attributes(read_json(r["attributes"]), reason, now)),
            "now": ts_value(dialect, now),
        }
        for r in rows
    ]
    session.execute(
        text(
            "UPDATE contacts SET email = NULL, phone = NULL, email_hash = NULL, phone_hash = NULL,"
            " external_id = NULL, first_name = NULL, last_name = NULL, postal_address = :address,"
            " attributes = :attributes, source_proof_ref = NULL, instants = NULL,"
            # Dates go too: the daily pass finds due contacts by these indexes, and an anonymised
            # contact is never due again (work proportional to the contacts due).
            " deadline = NULL, reconsent_at = NULL, anonymised_at = :now, updated_at = :now"
            " WHERE id = :id"
        ),
        updates,
    )


def _area(address: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not address:
        return None
    postcode = str(address.get("postcode") or "").strip()
    # Overseas départements have three digits (971-976), Corsica 2A/2B shares "20".
    size = 3 if postcode[:2] in ("97", "98") else 2
    kept = {"departement": postcode[:size] or None, "country": address.get("country")}
    return {k: v for k, v in kept.items() if v}


def _attributes(attributes: Mapping[str, Any] | None, reason: str, now: datetime) -> dict[str, Any]:
    source = dict(attributes or {})
    kept = {k: v for k, v in source.items() if k in KEPT_ATTRIBUTES}
    band = age_band(source.get("birth_year"), now)
    if band:
        kept["age_band"] = band
    kept["anonymised_reason"] = reason
    return kept


def age_band(birth_year: Any, now: datetime) -> str | None:
    """Ten-year bands ("40-49"): enough for statistics, too coarse to single anyone out."""
    try:
        age = now.year - int(birth_year)
    except (TypeError, ValueError):
        return None
    if not 0 <= age < 130:
        return None
    low = age // 10 * 10
    return f"{low}-{low + 9}"
