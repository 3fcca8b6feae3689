"""What the bulk path (gate/bulk.py) reads from the register, and on which connections.

Per chunk one statement reads, per contact named, its id, its keyed hashes and one text
``facts`` built by the database: the gate profile key, the date comparisons the rules need,
the contact's reachable coordinates and, when the rules read them (calls, contracts), the
stored instants. ``engine.Decider`` reads the full row only for a situation not seen before.

The active suppressions of the channel are read once per run when the list is large next to
the suppressions table; otherwise they are probed per chunk by hash (``probe.RegisterProbe``).
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from gatekeeper.errors import GatekeeperError
from gatekeeper.gate.engine import Decider
from gatekeeper.gate.probe import RegisterProbe, fetch_rows

# Suppressions are read once per run when the list has at least this many rows per
# suppression of the register (a per-chunk probe costs a few times more per hash than a read).
PRELOAD_RATIO = 0.25
PRELOAD_MAX = 2_000_000  # beyond this many suppressions the per-chunk probe keeps memory flat

SQLITE_READERS = 2  # reader processes for a SQLite register (the machines have two cores)
# Below this many rows the processes' start and the rows' pickling cost more than they save.
SQLITE_READERS_FROM = 200_000
Slim = tuple[Any, ...]  # (coordinate, id, email_hash, phone_hash, facts)


class Lane(NamedTuple):
    """A connection the register is read on, one statement at a time (its lock)."""

    conn: Any  # a DBAPI connection
    probe: RegisterProbe  # on that connection
    lock: threading.Lock


def _flag(condition: str) -> str:
    return f"CASE WHEN {condition} THEN '1' ELSE '0' END"


def facts_sql(postgres: bool, phone_like: bool) -> str:
    """One text per contact holding everything of the reference key except the suppressions."""
    contracts = (
        "json_array_length(instants->'contracts')"
        if postgres
        else "json_array_length(instants, '$.contracts')"
    )
    instants = "instants::text" if postgres else "instants"
    when = "instants IS NOT NULL" + ("" if phone_like else f" AND COALESCE({contracts}, -1) <> 0")
    flags = " || ".join(
        _flag(c)
        for c in (
            "deadline IS NULL",
            "deadline <= {p}",
            "reconsent_at <= {p}",
            "deadline <= {p}",
            "refused_at IS NOT NULL",
            "anonymised_at IS NOT NULL",
            "email IS NOT NULL",
            "phone IS NOT NULL",
        )
    )
    return f"profile_key || '|' || {flags} || CASE WHEN {when} THEN '|' || {instants} ELSE '' END"


class BulkReader:
    """The bulk path's statements, on the session's connection or another lane's."""

    def __init__(self, session: Session, ref: Decider, kind: str) -> None:
        self.session, self.ref = session, ref
        self.postgres = ref.probe.postgres
        self.conn = ref.probe.conn
        p = "%s" if self.postgres else "?"
        columns = (
            f"{kind}, id, email_hash, phone_hash, {facts_sql(self.postgres, ref.phone_like).format(p=p)}"
        )
        if self.postgres:
            # One index lookup per value whatever the statistics say: without them (a register
            # just imported, autovacuum off) the planner read the whole table for every chunk.
            # OFFSET 0 keeps the subquery from being flattened into a hash join.
            self.contacts_sql = (
                f"SELECT c.* FROM unnest(%s::text[]) AS v(value) CROSS JOIN LATERAL"  # noqa: S608 - constants
                f" (SELECT {columns} FROM contacts WHERE {kind} = v.value OFFSET 0) AS c"
            )
        else:
            self.contacts_sql = f"SELECT {columns} FROM contacts WHERE {kind} IN "  # noqa: S608 - constants

    def contacts(self, values: Sequence[str], conn: Any) -> dict[str, Slim]:
        """The contacts named by these coordinates, by coordinate."""
        if not values:
            return {}
        ref = self.ref
        if self.postgres:
            sql, params = self.contacts_sql, [list(values), ref.as_of_v, ref.as_of_v, ref.send_v]
        else:
            marks = ",".join("?" * len(values))
            sql, params = self.contacts_sql + f"({marks})", [ref.as_of_v, ref.as_of_v, ref.send_v, *values]
        return {row[0]: row for row in self.fetch(sql, params, conn)}

    def instants(self, ids: list[int], conn: Any) -> dict[int, Any]:
        """The stored instants of these contacts, as text."""
        if not ids:
            return {}
        if self.postgres:
            return dict(self.fetch("SELECT id, instants::text FROM contacts WHERE id = ANY(%s)", [ids], conn))
        marks = ",".join("?" * len(ids))
        return dict(self.fetch(f"SELECT id, instants FROM contacts WHERE id IN ({marks})", ids, conn))  # noqa: S608

    def fetch(self, sql: str, params: Sequence[Any], conn: Any = None) -> list[Any]:
        return fetch_rows(conn or self.conn, sql, params)

    def suppressions(self, expected_rows: int) -> dict[str, list[str]] | None:
        """All active suppressions of the channel by hash, when the list is large enough next to
        the suppressions table for one read to cost less than a probe per chunk (else None)."""
        top = self.fetch("SELECT max(id) FROM suppressions", ())[0][0] or 0
        if top == 0:
            return {}
        if expected_rows < top * PRELOAD_RATIO or top > PRELOAD_MAX:
            return None
        at = "occurred_at::text" if self.postgres else "occurred_at"
        p = "%s" if self.postgres else "?"
        rows = self.fetch(
            f"SELECT coord_hash, reason, channels, {at} FROM suppressions WHERE occurred_at <= {p}",  # noqa: S608 - constants
            [self.ref.as_of_v],
        )
        channel = self.ref.campaign.channel
        found: dict[str, list[str]] = {}
        for coord_hash, reason, channels, when in rows:  # as RegisterProbe.suppressions
            if channels == "all" or channel in channels.split(","):
                found.setdefault(coord_hash, []).append(f"{reason}|{channels}|{when}")
        return found

    def more_connections(self, expected_rows: int) -> list[Any]:
        """More connections to read the register with (to close after the run), or none. Only
        when the session has written nothing yet (another connection would not see those
        writes) and the database is shared (not an in-memory SQLite): both drivers read
        committed data statement by statement already, so they read what the session would.
        PostgreSQL: one pooled connection (its server works while a thread waits). SQLite: two
        reader processes (see gate.sqliteworker), one per core, for a list large enough."""
        bind = self.session.get_bind()
        engine = bind if isinstance(bind, Engine) else bind.engine
        if self.postgres:
            if self.fetch("SELECT txid_current_if_assigned()", ())[0][0] is not None:
                return []
            return [engine.raw_connection()]  # the pool rolls it back when it is closed
        database = engine.url.database
        if self.conn.in_transaction or database in (None, "", ":memory:") or not Path(database).is_file():
            return []
        if expected_rows < SQLITE_READERS_FROM:
            return []
        readers: list[Any] = []
        try:
            while len(readers) < SQLITE_READERS:
                readers.append(_SqliteProcess(database))
        except BaseException:
            for reader in readers:
                reader.close()
            raise
        return readers


class _SqliteProcess:
    """A connection-like handle on a gate.sqliteworker process (see there why a process): a
    lane calls ``driver_connection.cursor()`` on it as on a DBAPI connection."""

    def __init__(self, path: str) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 - our own module, no shell
            [sys.executable, "-m", "gatekeeper.gate.sqliteworker", path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.driver_connection = self

    def cursor(self) -> _ProcessCursor:
        return _ProcessCursor(self)

    def call(self, sql: str, params: Sequence[Any]) -> list[Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            pickle.dump((sql, list(params)), self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
            status, payload = pickle.load(self.proc.stdout)  # noqa: S301 - our own child process
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            raise GatekeeperError(f"the register's reader process failed: {exc!r}") from exc
        if status != "ok":
            raise GatekeeperError(f"the register's reader process failed: {payload}")
        rows: list[Any] = payload
        return rows

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # the worker's loop ends at end of input
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class _ProcessCursor:
    def __init__(self, owner: _SqliteProcess) -> None:
        self.owner = owner
        self.rows: list[Any] = []

    def execute(self, sql: str, params: Sequence[Any]) -> None:
        self.rows = self.owner.call(sql, params)

    def fetchall(self) -> list[Any]:
        return self.rows

    def close(self) -> None:
        self.rows = []
