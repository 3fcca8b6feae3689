"""Suppressions: objections, bounces, complaints, erasures and Bloctel listings, stored as
keyed hashes of the coordinate (never in clear, RULES.md §4), idempotently: the same entry
twice keeps one row, and a later date for it wins (a re-objection after a consent)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gatekeeper.models import BloctelCheck, utcnow
from gatekeeper.normalize import CoordinateError, normalise_phone
from gatekeeper.proof import journal
from gatekeeper.register.rawsql import Sql
from gatekeeper.register.schema import (
    SUPPRESSION_REASONS,
    Problems,
    Spec,
    apply_specs,
    channels,
    instant,
    one_of,
    parse_coordinates,
)
from gatekeeper.security import KeyedHasher
from gatekeeper.sqlbulk import dialect_of, ts_value

# Rows per multi-row upsert: 7 parameters each, far under PostgreSQL's 65,535 per statement
# (a bounce storm's batch can name more addresses than one statement may carry).
UPSERT_CHUNK = 1_000

SPECS = {
    "reason": Spec(one_of(*SUPPRESSION_REASONS), required=True),
    "channels": Spec(channels),  # absent: all channels (applied below)
    "occurred_at": Spec(instant),
}


@dataclass(frozen=True, slots=True)
class SuppressionRecord:
    row: int
    coord_kind: str
    coordinate: str
    reason: str
    channels: Sequence[str]
    occurred_at: datetime


def parse_suppression(
    raw: Mapping[str, Any], row: int, problems: Problems, region: str, now: datetime
) -> list[SuppressionRecord]:
    email, phone, ok = parse_coordinates(raw, row, problems, region)
    values = apply_specs(raw, SPECS, row, problems)
    if values is None or not ok:
        return []
    if not (email or phone):
        problems.add(row, "email", "a suppression needs an email or a phone")
        return []
    at = values["occurred_at"] or now
    chans = values["channels"] or ["all"]
    return [
        SuppressionRecord(row, kind, value, values["reason"], chans, at)
        for kind, value in (("email", email), ("phone", phone))
        if value
    ]


def channels_key(chans: Sequence[str]) -> str:
    return "all" if "all" in chans else ",".join(sorted(set(chans)))


def add_suppressions(
    session: Session, entries: Iterable[SuppressionRecord], hasher: KeyedHasher, *, origin: str
) -> int:
    dialect = dialect_of(session)
    latest = "GREATEST" if dialect == "postgresql" else "MAX"
    # In key order: concurrent writers (two workers' webhook batches, an import) then lock
    # the rows they share in the same order, and PostgreSQL never aborts one as a deadlock.
    rows = sorted(_rows(entries, hasher, dialect, origin), key=_row_key)
    if not rows:
        return 0
    session.execute(
        text(
            "INSERT INTO suppressions (coord_hash, coord_kind, reason, channels, occurred_at,"  # noqa: S608
            " origin, created_at) VALUES (:h, :k, :r, :c, :at, :o, :now)"
            " ON CONFLICT (coord_hash, reason, channels) DO UPDATE SET occurred_at ="
            f" {latest}(suppressions.occurred_at, excluded.occurred_at)"
        ),
        rows,
    )
    journal.record_suppressions(session, hasher, ((r["h"], r["r"], r["c"]) for r in rows))  # RULES.md §6
    return len(rows)


def upsert_suppressions(
    sql: Sql, entries: Iterable[SuppressionRecord], hasher: KeyedHasher, *, origin: str, now: datetime
) -> list[Any]:
    """``add_suppressions`` on a raw connection, one statement per ``UPSERT_CHUNK`` entries,
    for a caller that journals them itself: returns the upserted rows
    (``journal.SUPPRESSION_COLUMNS``). One row per entry key with its latest date: a statement
    may not upsert the same row twice."""
    latest: dict[tuple[str, str, str], tuple[str, Any]] = {}
    for e in entries:
        key = (hasher.coordinate(e.coord_kind, e.coordinate), e.reason, channels_key(e.channels))
        at = sql.ts(e.occurred_at)
        if key not in latest or at > latest[key][1]:
            latest[key] = (e.coord_kind, at)
    greatest = "GREATEST" if sql.dialect == "postgresql" else "MAX"
    created = sql.ts(now)
    # In key order, for the same reason as ``add_suppressions`` (no deadlock between writers).
    rows = [
        (h, kind, why, chans, at, origin, created) for (h, why, chans), (kind, at) in sorted(latest.items())
    ]
    upserted: list[Any] = []
    for start in range(0, len(rows), UPSERT_CHUNK):
        chunk = rows[start : start + UPSERT_CHUNK]
        upserted += sql.all(
            "INSERT INTO suppressions (coord_hash, coord_kind, reason, channels, occurred_at, origin,"  # noqa: S608
            f" created_at) VALUES {sql.values(7, len(chunk))}"
            " ON CONFLICT (coord_hash, reason, channels) DO UPDATE SET occurred_at ="
            f" {greatest}(suppressions.occurred_at, excluded.occurred_at)"
            " RETURNING id, coord_hash, coord_kind, reason, channels, occurred_at, origin",
            [value for row in chunk for value in row],
        )
    return upserted


def _row_key(row: Mapping[str, Any]) -> tuple[str, str, str]:
    return row["h"], row["r"], row["c"]  # the unique key (coord_hash, reason, channels)


def _rows(
    entries: Iterable[SuppressionRecord], hasher: KeyedHasher, dialect: str, origin: str
) -> Iterator[dict[str, Any]]:
    now = ts_value(dialect, utcnow())
    for e in entries:
        yield {
            "h": hasher.coordinate(e.coord_kind, e.coordinate),
            "k": e.coord_kind,
            "r": e.reason,
            "c": channels_key(e.channels),
            "at": ts_value(dialect, e.occurred_at),
            "o": origin,
            "now": now,
        }


def parse_bloctel(body: str, region: str, checked_at: datetime) -> tuple[list[SuppressionRecord], Problems]:
    """A Bloctel scrub result: one listed number a line (blank lines and # comments skipped)."""
    problems = Problems()
    entries = []
    for row, line in enumerate(body.splitlines(), start=1):
        number = line.strip().split(";")[0].strip()
        if not number or number.startswith("#"):
            continue
        try:
            phone = normalise_phone(number, region)
        except CoordinateError as exc:
            problems.add(row, "phone", str(exc))
            continue
        entries.append(SuppressionRecord(row, "phone", phone, "bloctel", ["phone"], checked_at))
    return entries, problems


def record_bloctel_check(session: Session, checked_at: datetime, numbers: int) -> None:
    session.add(BloctelCheck(checked_at=checked_at, numbers=numbers))
