"""Set-based bulk loading: a temporary table filled with ``executemany`` of tuples (SQLite)
or ``COPY`` (PostgreSQL), then joins. Never a query or an ORM object per row on a hot path
(PERFORMANCE.md: Core inserts with dicts cost 2.5x raw tuples)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from itertools import islice
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

BATCH = 20_000
_TYPES = {
    "sqlite": {
        "pk": "INTEGER PRIMARY KEY",
        "int": "INTEGER",
        "text": "TEXT",
        "ts": "DATETIME",
        "json": "TEXT",
        "bool": "BOOLEAN",
        "float": "REAL",
    },
    "postgresql": {
        "pk": "BIGINT PRIMARY KEY",
        "int": "BIGINT",
        "text": "TEXT",
        "ts": "TIMESTAMPTZ",
        "json": "JSON",
        "bool": "BOOLEAN",
        "float": "DOUBLE PRECISION",
    },
}

Columns = Sequence[tuple[str, str]]


def dialect_of(session: Session) -> str:
    return session.get_bind().dialect.name


def create_temp(session: Session, name: str, columns: Columns) -> None:
    types = _TYPES[dialect_of(session)]
    cols = ", ".join(f"{col} {types[kind]}" for col, kind in columns)
    session.execute(text(f"DROP TABLE IF EXISTS {name}"))
    session.execute(text(f"CREATE TEMPORARY TABLE {name} ({cols})"))


def ts_value(dialect: str, value: datetime | None) -> Any:
    """A datetime as the driver wants it in raw SQL: SQLite stores naive UTC text in the same
    format SQLAlchemy uses, so raw and ORM rows compare correctly."""
    if value is None:
        return None
    if dialect == "sqlite":
        return _sqlite_ts(value)
    return value


@lru_cache(maxsize=65536)
def _sqlite_ts(value: datetime) -> str:
    # Bulk rows repeat the same instants (collection dates): format each once.
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


# One encoder, built once: json.dumps with non-default arguments builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def json_value(value: Any) -> str | None:
    return None if value is None else _ENCODER.encode(value)


def load_rows(session: Session, name: str, columns: Columns, rows: Iterable[Sequence[Any]]) -> int:
    raw = session.connection().connection.driver_connection
    names = ", ".join(col for col, _ in columns)
    count = 0
    if dialect_of(session) == "postgresql":
        with raw.cursor() as cur, cur.copy(f"COPY {name} ({names}) FROM STDIN") as copy:  # type: ignore[union-attr]
            for row in rows:
                copy.write_row(row)
                count += 1
        return count
    marks = ", ".join("?" for _ in columns)
    cur = raw.cursor()  # type: ignore[union-attr]
    it = iter(rows)
    while batch := list(islice(it, BATCH)):
        cur.executemany(f"INSERT INTO {name} ({names}) VALUES ({marks})", batch)  # noqa: S608
        count += len(batch)
    cur.close()
    return count


def drop_temp(session: Session, name: str) -> None:
    session.execute(text(f"DROP TABLE IF EXISTS {name}"))


def read_ts(value: Any) -> datetime:
    """Raw SQL returns SQLite timestamps as naive UTC text, PostgreSQL ones as aware datetimes."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


def read_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
