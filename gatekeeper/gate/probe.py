"""What the gate reads from the register for one chunk of recipients: three indexed probes.

A chunk of a few thousand normalised coordinates is looked up with one statement per table
(``IN (…)`` on SQLite, ``= ANY(array)`` on PostgreSQL), through the unique indexes of the
contacts and the hash index of the suppressions. Nothing is staged: the work is proportional
to the list, not to the register, and a list of any length streams through in constant memory.
The statements run on the DBAPI connection of the caller's session (same transaction, same
snapshot) because SQLAlchemy's row objects cost more per row than the probe itself.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from gatekeeper.sqlbulk import dialect_of

# How a recipient may name a contact: each is a unique column of ``contacts``.
KINDS = ("email", "phone", "external_id")


class ContactRow(NamedTuple):
    """The gate's columns of one contact, in the probe's SELECT order. The date comparisons
    the rules depend on are made by the database (``dated``: six flags), so rows with the same
    flags share one memo entry without a datetime being built in Python."""

    key: str
    id: int
    profile_key: str | None
    no_deadline: Any
    expired_at_as_of: Any
    reconsent_open: Any
    expired_at_send: Any
    refused: Any
    anonymised: Any
    contracts: Any  # 1 unless the stored instants hold an empty list of contracts
    email_hash: str | None
    phone_hash: str | None
    has_email: Any
    has_phone: Any
    deadline: Any
    reconsent_at: Any
    instants: Any
    clock: str | None
    clock_anchor_at: Any
    clock_anchor_kind: str | None


DATED = slice(3, 9)  # ContactRow fields no_deadline … anonymised


def contact_columns(postgres: bool) -> str:
    """ContactRow's columns after the coordinate, with ``{p}`` for as_of, as_of and the send."""
    contracts = (
        "json_array_length(instants->'contracts')"
        if postgres
        else "json_array_length(instants, '$.contracts')"
    )
    raw = _RAW_PG if postgres else _RAW
    # {p}: the placeholders of as_of, as_of and the send, filled in by RegisterProbe._fetch.
    return (
        "id, profile_key, deadline IS NULL, COALESCE(deadline <= {p}, FALSE),"
        " COALESCE(reconsent_at <= {p}, FALSE), COALESCE(deadline <= {p}, FALSE),"
        " refused_at IS NOT NULL, anonymised_at IS NOT NULL,"
        f" COALESCE({contracts}, -1) <> 0, email_hash, phone_hash,"
        f" email IS NOT NULL, phone IS NOT NULL, {raw}"
    )


# Read back only on a memo miss or for the retention view: as text, because psycopg would
# otherwise build a datetime per timestamp and parse every JSON document of a million rows.
_RAW = "deadline, reconsent_at, instants, clock, clock_anchor_at, clock_anchor_kind"
_RAW_PG = (
    "deadline::text, reconsent_at::text, instants::text, clock, clock_anchor_at::text, clock_anchor_kind"
)


class RegisterProbe:
    """Reads contacts, suppressions and call attempts for a chunk of recipients."""

    def __init__(self, session: Session, channel: str, connection: Any = None) -> None:
        """On the session's DBAPI connection, or on ``connection`` (another of the same
        database: the bulk path reads chunks on two connections at once)."""
        self.dialect = dialect_of(session)
        self.conn: Any = connection or session.connection().connection.driver_connection
        self.channel = channel
        self.postgres = self.dialect == "postgresql"
        at_text = "occurred_at::text" if self.postgres else "occurred_at"
        columns = contact_columns(self.postgres)
        self._sql = {
            kind: f"SELECT {kind}, {columns} FROM contacts WHERE {kind} {{in}}"  # noqa: S608 - constants
            for kind in KINDS
        }
        self._sql["suppressions"] = (
            f"SELECT coord_hash, reason, channels, {at_text} FROM suppressions"  # noqa: S608 - constants
            " WHERE occurred_at <= {p} AND coord_hash {in}"
        )
        self._sql["attempts"] = (
            "SELECT contact_id, count(*) FROM events WHERE type = 'call_attempt'"
            " AND occurred_at >= {p} AND occurred_at <= {p} AND contact_id {in} GROUP BY contact_id"
        )

    def _fetch(self, name: str, fixed: Sequence[Any], values: Collection[Any]) -> list[Any]:
        p = "%s" if self.postgres else "?"
        if self.postgres:
            sql = self._sql[name].format(p=p, **{"in": "= ANY(%s)"})
            params: list[Any] = [*fixed, list(values)]
        else:
            marks = ",".join("?" * len(values))
            sql = self._sql[name].format(p=p, **{"in": f"IN ({marks})"})
            params = [*fixed, *values]
        return fetch_rows(self.conn, sql, params)

    def contacts(self, kind: str, values: Collection[str], as_of: Any, send_at: Any) -> dict[str, ContactRow]:
        """The contacts named by these coordinates of one kind, by coordinate, with their
        dates compared to ``as_of`` and the send."""
        if not values:
            return {}
        # tuple.__new__ is what ContactRow._make calls, without a Python frame per row.
        new, cls = tuple.__new__, ContactRow
        return {row[0]: new(cls, row) for row in self._fetch(kind, (as_of, as_of, send_at), values)}

    def suppressions(self, as_of: Any, hashes: Collection[str]) -> dict[str, list[str]]:
        """Active suppressions known at ``as_of`` that cover the channel, as
        ``reason|channels|at`` entries by keyed hash."""
        found: dict[str, list[str]] = {}
        if not hashes:
            return found
        channel = self.channel
        for coord_hash, reason, channels, at in self._fetch("suppressions", (as_of,), hashes):
            if channels == "all" or channel in channels.split(","):
                found.setdefault(coord_hash, []).append(f"{reason}|{channels}|{at}")
        return found

    def attempts(self, since: Any, until: Any, contact_ids: Collection[int]) -> dict[int, int]:
        """Call attempts per contact inside the D223-9 window."""
        if not contact_ids:
            return {}
        return dict(self._fetch("attempts", (since, until), contact_ids))


def fetch_rows(conn: Any, sql: str, params: Sequence[Any]) -> list[Any]:
    """Every row of one statement on a DB-API connection, the cursor closed either way."""
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        rows: list[Any] = cur.fetchall()
    finally:
        cur.close()
    return rows
