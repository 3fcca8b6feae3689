"""Contact upsert (API.md ``POST /api/v1/contacts`` and CSV imports of contacts).

Identity is ``external_id`` when given, else the normalised e-mail, else the E.164 phone. Rows
are staged in a temporary table and applied with three set-based statements (resolve, update,
insert); a row that conflicts with another contact or repeats an identity in the same batch is
reported and the whole batch is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import available_timezones

from sqlalchemy import text
from sqlalchemy.orm import Session

from gatekeeper.errors import ValidationError
from gatekeeper.models import utcnow
from gatekeeper.register import clocks
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.schema import (
    MAX_ERRORS,
    PURPOSES,
    SOURCE_TYPES,
    FieldError,
    Problems,
    Spec,
    apply_specs,
    instant,
    one_of,
    parse_coordinates,
    str_list,
)
from gatekeeper.register.schema import text as text_field
from gatekeeper.security import KeyedHasher
from gatekeeper.sqlbulk import create_temp, dialect_of, drop_temp, json_value, load_rows, ts_value

_TIMEZONES = frozenset(available_timezones())
NESTED = ("source", "postal_address", "attributes")


NAME_MAX = 200  # the contacts' String(200) columns: PostgreSQL refuses a longer value


def short_text(value: Any) -> str | None:
    """Text that fits a String(200) column of contacts (SQLite would store more, PostgreSQL
    would fail the whole batch on the insert instead of naming the row)."""
    out = text_field(value)
    if out is not None and len(out) > NAME_MAX:
        raise FieldError(f"text longer than {NAME_MAX} characters")
    return out


def timezone_name(value: Any) -> str | None:
    name = text_field(value)
    if name is not None and name not in _TIMEZONES:
        raise FieldError(f"unknown time zone {name!r} (expected e.g. Europe/Paris)")
    return name


CONTACT_SPECS: dict[str, Spec] = {
    "external_id": Spec(short_text),
    "first_name": Spec(short_text),
    "last_name": Spec(short_text),
    "audience": Spec(one_of("b2c", "b2b")),
    "profession_tags": Spec(str_list),
    "collected_at": Spec(instant, required=True),
    "collected_by": Spec(short_text),
    "source.type": Spec(one_of(*SOURCE_TYPES)),
    "source.name": Spec(short_text),
    "source.proof_ref": Spec(short_text),
    "purpose": Spec(one_of(*PURPOSES)),
    "timezone": Spec(timezone_name),
}
ADDRESS_FIELDS = ("line1", "line2", "postcode", "city", "country")


@dataclass(frozen=True, slots=True)
class ContactRecord:
    row: int
    external_id: str | None
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    postal_address: dict[str, str] | None
    audience: str
    profession_tags: list[str]
    collected_at: datetime
    collected_by: str | None
    source_type: str
    source_name: str | None
    source_proof_ref: str | None
    purpose: str
    timezone: str | None
    attributes: dict[str, Any] | None


def flatten(raw: Mapping[str, Any]) -> dict[str, Any]:
    """JSON nesting to the dotted names CSV columns use (``source.type``)."""
    flat = dict(raw)
    for key in NESTED:
        value = flat.pop(key, None)
        if isinstance(value, Mapping):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif value is not None:
            flat[f"{key}.?"] = value
    return flat


def parse_contact(raw: Mapping[str, Any], row: int, problems: Problems, region: str) -> ContactRecord | None:
    flat = flatten(raw)
    for key in NESTED:
        if f"{key}.?" in flat:
            problems.add(row, key, "expected an object")
    email, phone, coords_ok = parse_coordinates(flat, row, problems, region)
    values = apply_specs(flat, CONTACT_SPECS, row, problems)
    if values is None or not coords_ok:
        return None
    if not (values["external_id"] or email or phone):
        problems.add(row, "external_id", "a contact needs an external_id, an email or a phone")
        return None
    return _record(row, flat, values, email, phone)


def _record(
    row: int, flat: Mapping[str, Any], v: Mapping[str, Any], email: str | None, phone: str | None
) -> ContactRecord:
    address = {
        f: str(flat[f"postal_address.{f}"])
        for f in ADDRESS_FIELDS
        if flat.get(f"postal_address.{f}") not in (None, "")
    }
    attributes = {
        k.split(".", 1)[1]: val
        for k, val in flat.items()
        if k.startswith("attributes.") and val not in (None, "")
    }
    return ContactRecord(
        row=row,
        external_id=v["external_id"],
        email=email,
        phone=phone,
        first_name=v["first_name"],
        last_name=v["last_name"],
        postal_address=address or None,
        audience=v["audience"] or "b2c",
        profession_tags=v["profession_tags"] or [],
        collected_at=v["collected_at"],
        collected_by=v["collected_by"],
        source_type=v["source.type"] or "direct",
        source_name=v["source.name"],
        source_proof_ref=v["source.proof_ref"],
        purpose=v["purpose"] or "marketing",
        timezone=v["timezone"],
        attributes=attributes or None,
    )


# --- applying a validated batch ------------------------------------------------------------

STAGE = "stage_contacts"
DATA_COLUMNS: list[tuple[str, str]] = [
    ("external_id", "text"),
    ("email", "text"),
    ("phone", "text"),
    ("first_name", "text"),
    ("last_name", "text"),
    ("postal_address", "json"),
    ("audience", "text"),
    ("profession_tags", "json"),
    ("collected_at", "ts"),
    ("collected_by", "text"),
    ("source_type", "text"),
    ("source_name", "text"),
    ("source_proof_ref", "text"),
    ("purpose", "text"),
    ("timezone", "text"),
    ("attributes", "json"),
]
HASH_COLUMNS: list[tuple[str, str]] = [("email_hash", "text"), ("phone_hash", "text")]
CLOCK_COLUMNS: list[tuple[str, str]] = [
    ("clock", "text"),
    ("clock_anchor_at", "ts"),
    ("clock_anchor_kind", "text"),
    ("deadline", "ts"),
    ("reconsent_at", "ts"),
    ("profile_key", "text"),
    ("instants", "json"),
]
STAGE_COLUMNS = [
    ("row_no", "int"),
    *DATA_COLUMNS,
    *HASH_COLUMNS,
    *CLOCK_COLUMNS,
    ("contact_id", "int"),
]


@dataclass(frozen=True, slots=True)
class UpsertResult:
    created: int
    updated: int
    unchanged: int
    ids: dict[int, tuple[int, str | None]]  # row -> (contact id, external_id)


def upsert_contacts(
    session: Session,
    records: Iterable[ContactRecord],
    ctx: RegisterContext,
    *,
    want_ids: bool = True,
    before_apply: Callable[[], None] = lambda: None,
) -> UpsertResult:
    """Stage, check, then apply. ``before_apply`` runs once every record was consumed (a
    streaming import raises there if any row was invalid, before anything is written)."""
    dialect = dialect_of(session)
    create_temp(session, STAGE, STAGE_COLUMNS)
    summaries = clocks.NewContactSummaries(ctx.policy)
    load_rows(session, STAGE, STAGE_COLUMNS, _stage_rows(records, dialect, summaries, ctx.hasher))
    before_apply()
    summaries.store_profiles(session)
    _check_duplicates(session)
    _resolve(session)
    _check_conflicts(session)
    updated = _update_existing(session, dialect)
    existing = session.execute(
        text(f"SELECT count(*) FROM {STAGE} WHERE contact_id IS NOT NULL")  # noqa: S608
    ).scalar_one()
    created = _insert_new(session)
    refreshed_ids = [
        r[0]
        for r in session.execute(
            text(f"SELECT contact_id FROM {STAGE} WHERE contact_id IS NOT NULL")  # noqa: S608
        )
    ]
    _resolve(session)
    ids = _ids(session) if want_ids else {}
    drop_temp(session, STAGE)
    # Existing contacts may have events: their clock is recomputed from all their facts.
    clocks.refresh(session, refreshed_ids, ctx.policy)
    return UpsertResult(created=created, updated=updated, unchanged=existing - updated, ids=ids)


def _stage_rows(
    records: Iterable[ContactRecord],
    dialect: str,
    summaries: clocks.NewContactSummaries,
    hasher: KeyedHasher,
) -> Iterator[tuple[Any, ...]]:
    for r in records:
        s = summaries.for_record(r)
        email_hash = hasher.coordinate("email", r.email) if r.email else None
        phone_hash = hasher.coordinate("phone", r.phone) if r.phone else None
        yield (
            r.row,
            r.external_id,
            r.email,
            r.phone,
            r.first_name,
            r.last_name,
            json_value(r.postal_address),
            r.audience,
            json_value(r.profession_tags or None),
            ts_value(dialect, r.collected_at),
            r.collected_by,
            r.source_type,
            r.source_name,
            r.source_proof_ref,
            r.purpose,
            r.timezone,
            json_value(r.attributes),
            email_hash,
            phone_hash,
            s.clock,
            ts_value(dialect, s.anchor_at),
            s.anchor_kind,
            ts_value(dialect, s.deadline),
            ts_value(dialect, s.reconsent_at),
            s.profile_key,
            json_value(s.instants),
            None,
        )


def _check_duplicates(session: Session) -> None:
    columns = ("external_id", "email", "phone")
    for col in columns:
        session.execute(text(f"CREATE INDEX ix_{STAGE}_{col} ON {STAGE} ({col})"))
    refuse_repeats(session, STAGE, columns, "IS NOT NULL")


def refuse_repeats(session: Session, stage: str, columns: Iterable[str], present: str) -> None:
    """Refuse a batch naming one identity on several rows: each later row is named with the
    first row that has it. ``present`` is the SQL test of a stage cell holding a value."""
    problems = Problems()
    for col in columns:
        rows = session.execute(
            text(
                f"SELECT s.row_no, d.first FROM {stage} s JOIN (SELECT {col} AS v, "  # noqa: S608
                f"min(row_no) AS first FROM {stage} WHERE {col} {present} GROUP BY {col} "
                f"HAVING count(*) > 1) d ON d.v = s.{col} "
                f"WHERE s.row_no > d.first ORDER BY s.row_no LIMIT {MAX_ERRORS}"
            )
        )
        for row, first in rows:
            problems.add(row, col, f"same {col} as row {first}: a contact appears once per batch")
    if problems:
        raise ValidationError("duplicate contacts in the batch; nothing was stored", problems.items)


_RESOLVE = (
    "UPDATE {s} SET contact_id = (SELECT c.id FROM contacts c WHERE c.external_id = {s}.external_id)"
    " WHERE contact_id IS NULL AND external_id IS NOT NULL",
    # Without a match on external_id, an e-mail or phone already in the register identifies the
    # contact only if that contact has no other external_id (a CRM adding its ids later).
    "UPDATE {s} SET contact_id = (SELECT c.id FROM contacts c WHERE c.email = {s}.email"
    " AND c.external_id IS NULL) WHERE contact_id IS NULL AND email IS NOT NULL",
    "UPDATE {s} SET contact_id = (SELECT c.id FROM contacts c WHERE c.phone = {s}.phone"
    " AND c.external_id IS NULL) WHERE contact_id IS NULL AND phone IS NOT NULL",
)


def _resolve(session: Session) -> None:
    for statement in _RESOLVE:
        session.execute(text(statement.format(s=STAGE)))


def _check_conflicts(session: Session) -> None:
    problems = Problems()
    for col in ("email", "phone"):
        rows = session.execute(
            text(
                f"SELECT s.row_no, c.id, c.external_id FROM {STAGE} s JOIN contacts c ON c.{col} = s.{col} "  # noqa: S608
                f"WHERE s.contact_id IS NULL OR c.id <> s.contact_id ORDER BY s.row_no LIMIT 100"
            )
        )
        for row, cid, ext in rows:
            owner = f"contact {cid}" + (f" (external_id {ext})" if ext else "")
            problems.add(row, col, f"this {col} already belongs to {owner}")
    if problems:
        raise ValidationError("contacts conflict with the register; nothing was stored", problems.items)


def _changed_predicate(dialect: str) -> str:
    op = "IS DISTINCT FROM" if dialect == "postgresql" else "IS NOT"
    cast = "::jsonb" if dialect == "postgresql" else ""
    parts = []
    for col, kind in DATA_COLUMNS:
        # Absent fields (NULL in the stage) keep the stored value: an upsert never blanks data.
        stored = f"contacts.{col}{cast if kind == 'json' else ''}"
        parts.append(f"(s.{col} IS NOT NULL AND s.{col}{cast if kind == 'json' else ''} {op} {stored})")
    return " OR ".join(parts)


def _update_existing(session: Session, dialect: str) -> int:
    sets = ", ".join(f"{col} = COALESCE(s.{col}, contacts.{col})" for col, _ in DATA_COLUMNS + HASH_COLUMNS)
    result = session.execute(
        text(
            f"UPDATE contacts SET {sets}, updated_at = :now FROM {STAGE} s "  # noqa: S608
            f"WHERE contacts.id = s.contact_id AND ({_changed_predicate(dialect)})"
        ),
        {"now": ts_value(dialect, utcnow())},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _insert_new(session: Session) -> int:
    cols = [c for c, _ in DATA_COLUMNS + HASH_COLUMNS + CLOCK_COLUMNS]
    names = ", ".join(cols)
    values = ", ".join(f"COALESCE({c}, {d})" if d else c for c, d in _defaults(cols))
    result = session.execute(
        text(
            f"INSERT INTO contacts ({names}, created_at, updated_at) "  # noqa: S608
            f"SELECT {values}, :now, :now FROM {STAGE} WHERE contact_id IS NULL ORDER BY row_no"
        ),
        {"now": ts_value(dialect_of(session), utcnow())},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _defaults(cols: list[str]) -> Iterator[tuple[str, str | None]]:
    defaults = {
        "audience": "'b2c'",
        "source_type": "'direct'",
        "purpose": "'marketing'",
        "clock": "'prospect'",
    }
    for col in cols:
        yield col, defaults.get(col)


def _ids(session: Session) -> dict[int, tuple[int, str | None]]:
    rows = session.execute(
        text(
            f"SELECT s.row_no, s.contact_id, c.external_id FROM {STAGE} s "  # noqa: S608
            f"JOIN contacts c ON c.id = s.contact_id"
        )
    )
    return {row: (cid, ext) for row, cid, ext in rows}
