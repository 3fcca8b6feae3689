"""``Sql``: one DB-API connection, statements written with ``?`` marks, no SQLAlchemy per call.

The webhook hot path runs a handful of statements per request; SQLAlchemy's per-statement
machinery (compilation cache lookup, result wrapping, session state checks) costs more than
SQLite itself does for them. ``Sql`` keeps one cursor, translates the marks for psycopg once per
statement text, and turns driver errors into SQLAlchemy's ``DBAPIError`` so callers keep
catching one family. ``Sql.of(session)`` runs inside the session's own transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from gatekeeper.sqlbulk import ts_value

_SESSION_KEY = "gatekeeper.rawsql"


class Sql:
    """A DB-API connection with its dialect; the caller owns the transaction."""

    __slots__ = ("connection", "cursor", "dialect", "error")

    def __init__(self, connection: Any, dialect: str, error: type[Exception]) -> None:
        self.connection = connection
        self.dialect = dialect
        self.error = error
        self.cursor = connection.cursor()

    @classmethod
    def of(cls, session: Session) -> Sql:
        """The session's transaction connection, looked up once per transaction (each lookup
        walks SQLAlchemy's session state machine)."""
        transaction = session.get_transaction()
        cached = session.info.get(_SESSION_KEY)
        if cached is None or transaction is None or cached[0] is not transaction:
            connection = session.connection()
            dialect = connection.dialect
            sql = cls(connection.connection.driver_connection, dialect.name, dialect.loaded_dbapi.Error)
            cached = (session.get_transaction(), sql)
            session.info[_SESSION_KEY] = cached
        # Raw statements do not autoflush: pending ORM objects must reach the database first,
        # as they would before any session.execute.
        session.flush()
        found: Sql = cached[1]
        return found

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute one statement; the number of rows it changed."""
        try:
            self.cursor.execute(_marks(sql, self.dialect), params)
        except self.error as exc:
            raise DBAPIError.instance(sql, params, exc, self.error) from exc
        return int(self.cursor.rowcount)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        self.run(sql, params)
        try:
            return list(self.cursor.fetchall())
        except self.error as exc:
            raise DBAPIError.instance(sql, params, exc, self.error) from exc

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self.all(sql, params)
        return rows[0] if rows else None

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Execute one statement per row; the number of rows changed in all."""
        if not rows:
            return 0
        try:
            self.cursor.executemany(_marks(sql, self.dialect), rows)
        except self.error as exc:
            raise DBAPIError.instance(sql, None, exc, self.error) from exc
        return int(self.cursor.rowcount)

    def ts(self, value: datetime | None) -> Any:
        """A datetime as the driver stores it."""
        return ts_value(self.dialect, value)

    def values(self, columns: int, rows: int) -> str:
        """``(?, ?), (?, ?)`` for a multi-row VALUES of ``rows`` rows."""
        return _values(columns, rows)

    def commit(self) -> None:
        try:
            self.connection.commit()
        except self.error as exc:
            raise DBAPIError.instance("COMMIT", None, exc, self.error) from exc

    def rollback(self) -> None:
        # Wrapped too: a connection lost mid-write fails its rollback as well, and the caller
        # must see a database error (503, connection replaced), not a driver error (500).
        try:
            self.connection.rollback()
        except self.error as exc:
            raise DBAPIError.instance("ROLLBACK", None, exc, self.error) from exc


def ints(ids: Sequence[int]) -> str:
    """Ids inlined in an ``IN (...)``: ints only, so nothing else can ever be formatted in."""
    return ", ".join(str(int(i)) for i in ids) or "NULL"


@lru_cache(maxsize=256)
def _marks(sql: str, dialect: str) -> str:
    return sql.replace("?", "%s") if dialect == "postgresql" else sql


@lru_cache(maxsize=64)
def _values(columns: int, rows: int) -> str:
    one = "(" + ", ".join(["?"] * columns) + ")"
    return ", ".join([one] * rows)
