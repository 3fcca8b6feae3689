"""Appending facts about contacts (API.md ``POST /api/v1/events`` and CSV imports of events).

Events name their contact by external_id, e-mail or phone; they are staged, resolved to
contacts with joins, inserted with ``ON CONFLICT DO NOTHING`` on a fingerprint of the fact (the
same fact twice is stored once), then the clocks of the touched contacts are recomputed from
all their facts, so an older event arriving late never moves a clock backwards.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gatekeeper.errors import ValidationError
from gatekeeper.models import utcnow
from gatekeeper.normalize import CoordinateError, normalise_email, normalise_phone
from gatekeeper.proof import journal
from gatekeeper.register import clocks, suppressions
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.schema import (
    CHANNELS,
    Problems,
    Spec,
    apply_specs,
    boolean,
    channels,
    dedupe_key,
    instant,
    jsonable,
    number,
    one_of,
    str_list,
)
from gatekeeper.register.schema import text as text_field
from gatekeeper.security import KeyedHasher
from gatekeeper.sqlbulk import create_temp, dialect_of, drop_temp, json_value, load_rows, ts_value
from gatekeeper.timeparse import parse_instant

_AT = Spec(instant, required=True)
EVENT_SPECS: dict[str, dict[str, Spec]] = {
    "purchase": {
        "occurred_at": _AT,
        "product_category": Spec(text_field),
        "seller": Spec(text_field),
        "amount": Spec(number),
        "warranty_until": Spec(instant),
    },
    "contract": {
        "kind": Spec(one_of("subscription", "warranty", "service"), required=True),
        "starts_at": Spec(instant, required=True),
        "ends_at": Spec(instant),
        "product_category": Spec(text_field),
    },
    "consent": {
        "channel": Spec(one_of(*CHANNELS), required=True),
        "given": Spec(boolean, required=True),
        "occurred_at": _AT,
        "method": Spec(one_of("checkbox", "double_opt_in", "paper", "oral", "reconsent")),
        "prechecked": Spec(boolean),
        "bundled_with_terms": Spec(boolean),
        "text_version": Spec(text_field),
        "form_id": Spec(text_field),
        "url": Spec(text_field),
        "ip": Spec(text_field),
        "user_agent": Spec(text_field),
        "sender": Spec(text_field),
        "partners": Spec(str_list),
    },
    "opposition": {
        "channels": Spec(channels, required=True),
        "occurred_at": _AT,
        "via": Spec(one_of("link", "email", "phone", "letter", "form")),
    },
    "interest": {
        "kind": Spec(one_of("click", "download", "reply", "inbound_request", "demo"), required=True),
        "occurred_at": _AT,
        "detail": Spec(text_field),
    },
    "open": {"occurred_at": _AT},
    "call_attempt": {"occurred_at": _AT, "outcome": Spec(text_field)},
    "account_created": {"occurred_at": _AT},
}
# A fact dated in the future would push a retention clock forward: refuse it.
FUTURE_TOLERANCE = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class EventRecord:
    row: int
    ref_kind: str
    ref_value: str
    type: str
    occurred_at: datetime
    data: dict[str, Any]


def contact_ref(raw: Mapping[str, Any], row: int, problems: Problems, region: str) -> tuple[str, str] | None:
    ref = raw.get("contact")
    if not isinstance(ref, Mapping):
        ref = {k.split(".", 1)[1]: v for k, v in raw.items() if k.startswith("contact.") and v}
    try:
        if ref.get("external_id"):
            return "external_id", str(ref["external_id"]).strip()
        if ref.get("email"):
            return "email", normalise_email(str(ref["email"]))
        if ref.get("phone"):
            return "phone", normalise_phone(str(ref["phone"]), region)
    except CoordinateError as exc:
        problems.add(row, "contact", str(exc))
        return None
    problems.add(row, "contact", "name the contact by external_id, email or phone")
    return None


def parse_event(
    raw: Mapping[str, Any], row: int, problems: Problems, region: str, now: datetime
) -> EventRecord | None:
    kind = raw.get("type")
    specs = EVENT_SPECS.get(kind) if isinstance(kind, str) else None
    ref = contact_ref(raw, row, problems, region)
    if specs is None:
        problems.add(row, "type", f"unknown event type {kind!r}; expected one of {', '.join(EVENT_SPECS)}")
        return None
    values = apply_specs(raw, specs, row, problems)
    if values is None or ref is None:
        return None
    occurred_at = values.get("occurred_at") or values["starts_at"]
    if occurred_at > now + FUTURE_TOLERANCE:
        problems.add(row, "occurred_at", "is in the future")
        return None
    data = {k: v for k, v in values.items() if v not in (None, [], "")}
    return EventRecord(row, ref[0], ref[1], str(kind), occurred_at, data)


STAGE = "stage_events"
STAGE_COLUMNS = [
    ("row_no", "int"),
    ("ref_kind", "text"),
    ("ref_value", "text"),
    ("type", "text"),
    ("occurred_at", "ts"),
    ("data", "json"),
    ("dedupe_key", "text"),
    ("origin", "text"),
    ("contact_id", "int"),
]


@dataclass(frozen=True, slots=True)
class AppendResult:
    stored: int
    duplicates: int
    contact_ids: list[int]


def append_events(
    session: Session,
    records: Iterable[EventRecord],
    ctx: RegisterContext,
    *,
    origin: str = "api",
    before_apply: Callable[[], None] = lambda: None,
) -> AppendResult:
    dialect = dialect_of(session)
    create_temp(session, STAGE, STAGE_COLUMNS)
    total = load_rows(session, STAGE, STAGE_COLUMNS, _stage_rows(records, dialect, origin, ctx.hasher))
    before_apply()
    for kind in ("external_id", "email", "phone"):
        session.execute(
            text(
                f"UPDATE {STAGE} SET contact_id = (SELECT c.id FROM contacts c "  # noqa: S608
                f"WHERE c.{kind} = {STAGE}.ref_value AND c.anonymised_at IS NULL) WHERE ref_kind = '{kind}'"
            )
        )
    _check_unknown(session)
    stored = _insert(session, dialect)
    touched = [r[0] for r in session.execute(text(f"SELECT DISTINCT contact_id FROM {STAGE}"))]  # noqa: S608
    _oppositions_to_suppressions(session, ctx.hasher)
    journal.record_events(session, ctx.hasher, STAGE)  # proof of every fact (RULES.md §6)
    drop_temp(session, STAGE)
    clocks.refresh(session, touched, ctx.policy)
    return AppendResult(stored=stored, duplicates=total - stored, contact_ids=touched)


def _stage_rows(
    records: Iterable[EventRecord], dialect: str, origin: str, hasher: KeyedHasher
) -> Iterator[tuple[Any, ...]]:
    for r in records:
        data = jsonable(r.data)
        # Keyed: the fingerprint covers the e-mail or phone, and a plain SHA-256 of it could
        # be reversed by trying likely addresses.
        key = dedupe_key(r.ref_kind, r.ref_value, r.type, data, hasher=hasher)
        yield (
            r.row,
            r.ref_kind,
            r.ref_value,
            r.type,
            ts_value(dialect, r.occurred_at),
            json_value(data),
            key,
            origin,
            None,
        )


def _check_unknown(session: Session) -> None:
    rows = session.execute(
        text(
            f"SELECT row_no, ref_kind, ref_value FROM {STAGE} WHERE contact_id IS NULL "  # noqa: S608
            "ORDER BY row_no LIMIT 100"
        )
    ).all()
    if rows:
        problems = Problems()
        for row, kind, _value in rows:
            problems.add(row, "contact", f"no contact in the register with this {kind}")
        raise ValidationError("events name unknown contacts; nothing was stored", problems.items)


def _insert(session: Session, dialect: str) -> int:
    result = session.execute(
        text(
            "INSERT INTO events (contact_id, type, occurred_at, data, origin, dedupe_key, created_at) "  # noqa: S608
            f"SELECT contact_id, type, occurred_at, data, origin, dedupe_key, :now FROM {STAGE} "
            # Each person's facts in time order, whatever the request's order: two requests
            # carrying the same events in other orders then wait for each other on the unique
            # key instead of deadlocking (PostgreSQL), and the proof journal tells each story
            # in the order it happened.
            "ORDER BY contact_id, occurred_at, dedupe_key ON CONFLICT (dedupe_key) DO NOTHING"
        ),
        {"now": ts_value(dialect, utcnow())},
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def _oppositions_to_suppressions(session: Session, hasher: KeyedHasher) -> None:
    # An objection must block the coordinate itself (and survive an erasure), so it also
    # becomes keyed-hash suppressions of the contact's e-mail and phone (RULES.md §2-§4).
    rows = session.execute(
        text(
            f"SELECT s.row_no, c.email, c.phone, s.data, s.occurred_at FROM {STAGE} s "  # noqa: S608
            "JOIN contacts c ON c.id = s.contact_id WHERE s.type = 'opposition'"
        )
    ).all()
    entries: list[suppressions.SuppressionRecord] = []
    for row, email, phone, data, _at in rows:
        payload = data if isinstance(data, dict) else json.loads(data)
        at = parse_instant(payload["occurred_at"])
        entries.extend(
            suppressions.SuppressionRecord(row, kind, value, "unsubscribe", payload["channels"], at)
            for kind, value in (("email", email), ("phone", phone))
            if value
        )
    suppressions.add_suppressions(session, entries, hasher, origin="opposition")
