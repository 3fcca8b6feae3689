"""The legal archive: records kept for a legal obligation, never for marketing (RULES.md §4).

Invoices (our ``purchase`` events) must be kept 10 years after the close of the financial year
(Code de commerce L123-22; LPF L102 B). They leave the register when the contact is anonymised
and live here, in their own database (``archive_database_url``), with their own deadline. No
marketing code imports this module except the purge, which only writes; every read goes
through ``ArchiveStore.read`` and is logged with who read and why.

The archive is written and committed before the register's transaction deletes the events:
if the register's transaction then fails, the copy stays and the next purge writes it again
(the source key is unique), so a record is never lost between the two stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from gatekeeper.db import make_engine
from gatekeeper.models import UtcDateTime, utcnow

PARIS = ZoneInfo("Europe/Paris")
# Code de commerce L123-22: accounting documents are kept ten years.
INVOICE_YEARS = 10
# The financial year is taken as the calendar year [cautious: a later close only shortens].
FINANCIAL_YEAR_END_MONTH = 12

metadata = MetaData()
records = Table(
    "archived_records",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("source_ref", String(100), nullable=False, unique=True),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("keep_until", UtcDateTime, nullable=False, index=True),
    Column("data", JSON, nullable=False),
    Column("archived_at", UtcDateTime, nullable=False),
)
reads = Table(
    "archive_reads",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("reader", String(200), nullable=False),
    Column("purpose", String(500), nullable=False),
    Column("records", Integer, nullable=False),
    Column("read_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True, slots=True)
class ArchivedRecord:
    kind: str
    source_ref: str  # e.g. "event:123" in the register it came from
    occurred_at: datetime
    keep_until: datetime
    data: dict[str, Any]


def invoice_keep_until(occurred_at: datetime) -> datetime:
    """Ten years after the close of the financial year of the sale (Paris time)."""
    year = occurred_at.astimezone(PARIS).year
    close_year = year if FINANCIAL_YEAR_END_MONTH == 12 else year + 1
    return datetime(close_year + INVOICE_YEARS + 1, 1, 1, tzinfo=PARIS)


class ArchiveStore:
    """Its own engine and schema (created on first use: it is not the register's database)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        metadata.create_all(self.engine)

    def put(self, items: Sequence[ArchivedRecord], now: datetime) -> int:
        if not items:
            return 0
        rows = [
            {
                "kind": r.kind,
                "source_ref": r.source_ref,
                "occurred_at": r.occurred_at,
                "keep_until": r.keep_until,
                "data": r.data,
                "archived_at": now,
            }
            for r in items
        ]
        upsert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        statement = upsert(records).on_conflict_do_nothing(index_elements=["source_ref"])
        with self.engine.begin() as conn:
            return int(conn.execute(statement, rows).rowcount)

    def read(self, reader: str, purpose: str, *, kind: str | None = None) -> list[dict[str, Any]]:
        """Records for an auditor or an accountant; the read itself is logged (RULES.md §4)."""
        query = select(records).order_by(records.c.id)
        if kind is not None:
            query = query.where(records.c.kind == kind)
        with self.engine.begin() as conn:
            found = [dict(r._mapping) for r in conn.execute(query)]
            conn.execute(
                insert(reads),
                {"reader": reader, "purpose": purpose, "records": len(found), "read_at": utcnow()},
            )
        return found

    def purge(self, as_of: datetime) -> int:
        """Records past their own deadline leave the archive too."""
        with self.engine.begin() as conn:
            result = conn.execute(records.delete().where(records.c.keep_until <= as_of))
            return int(result.rowcount)

    def dispose(self) -> None:
        self.engine.dispose()
