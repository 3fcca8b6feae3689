"""What the bulk path (gate/bulk.py) reads from the register, and on which connections.

Per contact named: its id, its keyed hashes and one text ``facts`` built by the database: the
gate profile key, the date comparisons the rules need (bits of one integer), the contact's
reachable coordinates and, when the rules read them (calls, contracts), the stored instants.
``engine.Decider`` reads the full row only for a situation not seen before.

How: for a list about as long as the register (``SCAN_RATIO``), two reader processes
(gate/sqliteworker.py, on either database) each read a range of ids of the contacts once, in
order (a few rows a page, no index descent: about a quarter of a lookup's cost), give each
contact a situation code, and answer each chunk's lookup from memory with a code per value
(``ScannedRegister``). Each process reads in one snapshot, held to the end, and hands the parent
the full row of each new code from it: the register may change meanwhile (an erasure, the
retention purge, a rectification, an import), each contact is decided as one snapshot holds it.
Otherwise one indexed statement per chunk, on the session's connection, a second PostgreSQL
connection, or SQLite reader processes; the full row of a new key is then read with its facts,
so a contact changed in between is told apart (gate/bulk.py, ``_decide_missing``).

The active suppressions of the channel are read once per run when the list is large next to
the suppressions table, or the register is read whole; otherwise they are probed per chunk by
hash (``probe.RegisterProbe``).
"""

from __future__ import annotations

import pickle
import queue
import subprocess
import sys
import threading
from array import array
from collections import deque
from collections.abc import Collection, Sequence
from operator import add
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from gatekeeper.errors import GatekeeperError
from gatekeeper.gate.engine import LIFTABLE, Decider
from gatekeeper.gate.probe import ContactRow, RegisterProbe, contact_columns, fetch_rows

# Suppressions are read once per run when the list has at least this many rows per
# suppression of the register (a per-chunk probe costs a few times more per hash than a read).
PRELOAD_RATIO = 0.25
PRELOAD_MAX = 2_000_000  # beyond this many suppressions the per-chunk probe keeps memory flat

SQLITE_READERS = 2  # reader processes for a SQLite register (the machines have two cores)
# Below this many rows the processes' start and the rows' pickling cost more than they save
# (on PostgreSQL too, where reader processes only read the register whole).
SQLITE_READERS_FROM = 200_000
# The reader processes read the whole register once (each a range of ids, see
# gate.sqliteworker) instead of an indexed lookup per recipient when the list has at least
# this many rows per contact: a contact read in order costs about a quarter of a lookup.
SCAN_RATIO = 0.25
SCAN_MAX = 2_000_000  # beyond this many contacts, the lookups keep the processes' memory flat
Slim = tuple[Any, ...]  # (coordinate, id, email_hash, phone_hash, facts)
ROW_FACTS = len(ContactRow._fields)  # in a row of ``BulkReader.rows_sql``: its facts, after the ContactRow
# The register's first and last ids, each by one index descent. Not ``SELECT min(id), max(id)``:
# SQLite only finds a lone min() or max() by its index, and with both it reads every contact
# through the smallest covering index (at 1M contacts, ~110 MiB of mapped pages and a tenth
# of a second before the reader processes could start).
ID_RANGE_SQL = "SELECT (SELECT min(id) FROM contacts), (SELECT max(id) FROM contacts)"


class Situation(NamedTuple):
    """What a situation code of the reader processes is decided on (see gate.sqliteworker)."""

    row: ContactRow  # one contact with that code, as the code's snapshot holds it
    suppressions: str | None  # the canonical suppressions of the code (when not alone)
    alone: bool  # the code is that contact's own: its suppressions are the parent's to find


class Lane(NamedTuple):
    """A connection the register is read on, one statement at a time (its lock)."""

    conn: Any  # a DBAPI connection
    probe: RegisterProbe  # on that connection
    lock: threading.Lock


def facts_sql(postgres: bool, phone_like: bool) -> str:
    """One text per contact holding everything of the reference key except the suppressions:
    the gate profile, the date comparisons and presences as the bits of one integer (cheaper
    for the database than a text per flag), and the instants when the rules read them."""
    contracts = (
        "json_array_length(instants->'contracts')"
        if postgres
        else "json_array_length(instants, '$.contracts')"
    )
    instants = "instants::text" if postgres else "instants"
    when = "instants IS NOT NULL" + ("" if phone_like else f" AND COALESCE({contracts}, -1) <> 0")
    as_int = "::int" if postgres else ""
    false = "FALSE" if postgres else "0"
    conditions = (
        "deadline IS NULL",
        f"COALESCE(deadline <= {{p}}, {false})",
        f"COALESCE(reconsent_at <= {{p}}, {false})",
        f"COALESCE(deadline <= {{p}}, {false})",
        "refused_at IS NOT NULL",
        "anonymised_at IS NOT NULL",
        "email IS NOT NULL",
        "phone IS NOT NULL",
    )
    flags = " + ".join(f"({c}){as_int} * {1 << n}" for n, c in enumerate(conditions))
    return f"profile_key || '|' || ({flags}) || CASE WHEN {when} THEN '|' || {instants} ELSE '' END"


class BulkReader:
    """The bulk path's statements, on the session's connection or another lane's."""

    def __init__(self, session: Session, ref: Decider, kind: str) -> None:
        self.session, self.ref = session, ref
        self._ids: tuple[int, int] | None = None  # the contacts' first and last id
        self.postgres = ref.probe.postgres
        self.conn = ref.probe.conn
        p = "%s" if self.postgres else "?"
        columns = (
            f"{kind}, id, email_hash, phone_hash, {facts_sql(self.postgres, ref.phone_like).format(p=p)}"
        )
        self.columns = columns
        self.kind = kind
        # A contact's full row (what the reference decides on) and its facts, which tell
        # whether it is still the contact a key was made from (``rows``); followed by
        # ``IN (…)`` on SQLite, ``= ANY(…)`` on PostgreSQL. Its fixed parameters: ``row_params``.
        full = contact_columns(self.postgres).format(p=p)
        self.rows_sql = (
            f"SELECT {kind}, {full}, {facts_sql(self.postgres, ref.phone_like).format(p=p)}"  # noqa: S608 - constants
            f" FROM contacts WHERE {kind} "
        )
        self.row_params = [ref.as_of_v, ref.as_of_v, ref.send_v] * 2
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

    def contacts(self, values: Sequence[str | None], conn: Any) -> list[Slim | None]:
        """The contact each coordinate names (None: none, or an invalid coordinate)."""
        wanted = [v for v in values if v]
        if not wanted:
            return [None] * len(values)
        ref = self.ref
        if self.postgres:
            sql, params = self.contacts_sql, [wanted, ref.as_of_v, ref.as_of_v, ref.send_v]
        else:
            marks = ",".join("?" * len(wanted))
            sql, params = self.contacts_sql + f"({marks})", [ref.as_of_v, ref.as_of_v, ref.send_v, *wanted]
        found = {row[0]: row for row in self.fetch(sql, params, conn)}
        return [found.get(v) if v else None for v in values]

    def rows(self, values: Collection[str], conn: Any) -> dict[str, tuple[ContactRow, str | None]]:
        """The full row and the facts of the contact each coordinate names, by coordinate."""
        if not values:
            return {}
        if self.postgres:
            sql, params = self.rows_sql + "= ANY(%s)", [*self.row_params, list(values)]
        else:
            sql = self.rows_sql + f"IN ({','.join('?' * len(values))})"
            params = [*self.row_params, *values]
        new, cls = tuple.__new__, ContactRow
        return {r[0]: (new(cls, r[:ROW_FACTS]), r[ROW_FACTS]) for r in self.fetch(sql, params, conn)}

    def instants(self, rows: list[Slim], conn: Any) -> dict[int, Any]:
        """The stored instants of these contacts, as text, by id."""
        return self._instants([c[1] for c in rows], conn) if rows else {}

    def _instants(self, ids: list[int], conn: Any) -> dict[int, Any]:
        if self.postgres:
            return dict(self.fetch("SELECT id, instants::text FROM contacts WHERE id = ANY(%s)", [ids], conn))
        marks = ",".join("?" * len(ids))
        return dict(self.fetch(f"SELECT id, instants FROM contacts WHERE id IN ({marks})", ids, conn))  # noqa: S608

    def fetch(self, sql: str, params: Sequence[Any], conn: Any = None) -> list[Any]:
        return fetch_rows(conn or self.conn, sql, params)

    def preloads(self, expected_rows: int) -> bool | None:
        """Whether the active suppressions are read once for the run (``suppressions``): when
        the list is large enough next to the suppressions table for one read to cost less than
        a probe per chunk, or the register is read whole (see ``scans``: its processes key
        each contact with its suppressions). None: there is no suppression at all."""
        top = self.fetch("SELECT max(id) FROM suppressions", ())[0][0] or 0
        if top == 0:
            return None
        return (expected_rows >= top * PRELOAD_RATIO or self.scans(expected_rows)) and top <= PRELOAD_MAX

    def suppressions(self) -> dict[str, list[str]]:
        """All active suppressions of the channel by hash."""
        found: dict[str, list[str]] = {}
        for coord_hash, entry in self.fetch(self.suppressions_sql, self.suppressions_params):
            found.setdefault(coord_hash, []).append(entry)
        return found

    @property
    def suppressions_sql(self) -> str:
        """The active suppressions of the channel, each entry as RegisterProbe.suppressions
        writes it ("reason|channels|occurred_at"), made and chosen by the database: a third
        of the time of a Python step per row. The channel is among the comma-separated
        ``channels`` (or they are "all")."""
        if self.postgres:
            entry, listed = "occurred_at::text", "position(%s in ',' || channels || ',') > 0"
        else:
            entry, listed = "occurred_at", "instr(',' || channels || ',', ?) > 0"
        return (
            f"SELECT coord_hash, reason || '|' || channels || '|' || {entry} FROM suppressions"  # noqa: S608 - constants
            f" WHERE occurred_at <= {'%s' if self.postgres else '?'} AND (channels = 'all' OR {listed})"
        )

    @property
    def suppressions_params(self) -> list[Any]:
        return [self.ref.as_of_v, f",{self.ref.campaign.channel},"]

    def scans(self, expected_rows: int) -> bool:
        """Whether the reader processes would read the register whole for a list this long
        (each reads a range of ids: ``ids``)."""
        if self._ids is None:
            lo, hi = self.fetch(ID_RANGE_SQL, ())[0]
            self._ids = (0, -1) if lo is None else (lo, hi)  # (0, -1): no contact
        lo, hi = self._ids
        return (
            hi >= lo
            and expected_rows >= max(SQLITE_READERS_FROM, (hi - lo + 1) * SCAN_RATIO)
            and hi - lo < SCAN_MAX
        )

    def more_connections(
        self,
        expected_rows: int,
        preloaded: bool = False,
        unwritten: bool = False,
        want_ids: bool = False,
    ) -> list[Any]:
        """More connections to read the register with (to close after the run), or none. Only
        when the session has written nothing yet (another connection would not see those
        writes) and the database is shared (not an in-memory SQLite): both drivers read
        committed data statement by statement already, so they read what the session would.
        PostgreSQL: one pooled connection (its server works while a thread waits). SQLite: two
        reader processes (see gate.sqliteworker), one per core, for a list large enough. For a
        list long next to the register, on either database, when the suppressions are read
        whole (``preloaded``), two reader processes read it whole (``ScannedRegister``), and
        tell the contact ids too when asked (``want_ids``). PostgreSQL tells whether the
        transaction has written; SQLite only whether one is open (a session that may write
        begins IMMEDIATE): then only the caller knows (``unwritten``)."""
        bind = self.session.get_bind()
        engine = bind if isinstance(bind, Engine) else bind.engine
        scan = preloaded and self.scans(expected_rows)
        if self.postgres:
            if self.fetch("SELECT txid_current_if_assigned()", ())[0][0] is not None:
                return []
            if not scan:
                return [engine.raw_connection()]  # the pool rolls it back when it is closed
            # The driver's own URL (libpq's), sent to the processes on their input, not argv.
            target = "postgresql://" + engine.url.render_as_string(hide_password=False).split("://", 1)[1]
        else:
            database = engine.url.database
            written = self.conn.in_transaction and not unwritten
            if written or database in (None, "", ":memory:") or not Path(database).is_file():
                return []
            if expected_rows < SQLITE_READERS_FROM:
                return []
            target = database
        readers: list[Any] = []
        try:
            while len(readers) < SQLITE_READERS:
                readers.append(_ReaderProcess(target, self.postgres))
            if scan:
                self._scan(readers, want_ids)
                return [ScannedRegister(readers)]
        except BaseException:
            for reader in readers:
                reader.close()
            raise
        return readers

    def _scan(self, readers: list[_ReaderProcess], want_ids: bool) -> None:
        """Each reader reads an equal range of the contacts' ids, in the background (its first
        lookup waits): a value is then looked up in every process, and found in one at most."""
        ref = self.ref
        p = "%s" if self.postgres else "?"
        col = self.kind
        sql = (
            f"SELECT {self.columns} FROM contacts"  # noqa: S608 - constants
            f" WHERE {col} IS NOT NULL AND id >= {p} AND id < {p}"
        )
        assert self._ids is not None  # scans() was asked
        lo, hi = self._ids
        n = len(readers)
        bounds = [lo + (hi - lo + 1) * k // n for k in range(n + 1)]
        # Open at both ends: a contact created since the range was read (in the session's
        # snapshot, on SQLite an older one than the readers') is in the last reader's share.
        bounds[0], bounds[n] = -(1 << 63), (1 << 63) - 1
        own = {"email": 2, "phone": 3}.get(col)  # the hash of the coordinate, in the row
        for k, reader in enumerate(readers):
            params = [ref.as_of_v, ref.as_of_v, ref.send_v, bounds[k], bounds[k + 1]]
            supp = [self.suppressions_sql, self.suppressions_params, LIFTABLE]
            rows = [self.rows_sql, self.row_params]
            reader.start(("scan", sql, params, *supp, k, n, own, want_ids, *rows))


class ScannedRegister:
    """The register read whole by the reader processes, each a range of ids, each contact
    coded by its situation (see gate.sqliteworker). A chunk's values are sent to every process
    as soon as the chunk is read (``send``) and the replies read when the chunk is decided
    (``receive``, in the same order), both on the thread that decides: the processes answer
    the next chunks while this one is keyed and written (they queue their replies, so a
    parent that sends ahead never blocks them). Statements run on the session's connection."""

    def __init__(self, readers: list[_ReaderProcess]) -> None:
        self.readers = readers
        self.driver_connection = self
        # The requests are written by a thread of this one: a process still reading the
        # register reads none, and its pipe holds 64 KiB, about half a chunk's lookup.
        self.outbox: queue.SimpleQueue[tuple[_ReaderProcess, bytes] | None] = queue.SimpleQueue()
        self.failure: BaseException | None = None
        self.sender = threading.Thread(target=self._send_all, name="gate-lookups", daemon=True)
        self.sender.start()

    def send(self, values: Sequence[str | None]) -> None:
        request = pickle.dumps(("codes", values), protocol=pickle.HIGHEST_PROTOCOL)
        for reader in self.readers:
            reader.expected.append(True)
            self.outbox.put((reader, request))

    def _send_all(self) -> None:
        try:
            while (item := self.outbox.get()) is not None:
                reader, request = item
                reader.write(request)
        except BaseException as exc:
            self.failure = exc

    def receive(self) -> tuple[list[int], list[int] | None, dict[int, Situation], dict[str, Any]]:
        """Per value of the oldest lookup sent, its situation code (0: no contact) and, when
        asked for at the scan, its contact's id (else None); the situation of each code not
        told before (see gate.sqliteworker): what the parent decides that code on, read in
        the snapshot the code was made in; and the gate profiles of those rows (data by key)."""
        if self.failure is not None:
            raise GatekeeperError(f"the register's reader process failed: {self.failure!r}")
        codes: list[int] | None = None
        ids: list[int] | None = None
        situations: dict[int, Situation] = {}
        profiles: dict[str, Any] = {}
        # A value is found in one process at most, the others answer 0: the sum is its answer.
        for reader in self.readers:
            code_bytes, id_bytes, told, data = reader.receive()
            profiles.update(data)
            codes = _merged(codes, code_bytes)
            if id_bytes is not None:
                ids = _merged(ids, id_bytes)
            new, cls = tuple.__new__, ContactRow
            for code, (row, supp, alone) in told.items():
                situations[code] = Situation(new(cls, row[:ROW_FACTS]), supp, alone)
        assert codes is not None
        return codes, ids, situations, profiles

    def close(self) -> None:
        self.outbox.put(None)
        for reader in self.readers:
            reader.close()  # a write the sender is blocked in fails: the thread ends
        self.sender.join()


def _merged(merged: list[int] | None, data: bytes) -> list[int]:
    numbers = array("q")
    numbers.frombytes(data)
    return numbers.tolist() if merged is None else list(map(add, merged, numbers))


class _ReaderProcess:
    """A connection-like handle on a gate.sqliteworker process (see there why a process): a
    lane calls ``driver_connection.cursor()`` on it as on a DBAPI connection. Its replies come
    in the order of the requests; ``expected`` says, per request not answered yet, whether a
    caller reads its reply (else ``receive`` checks it and drops it first)."""

    def __init__(self, target: str, postgres: bool = False) -> None:
        """``target``: the SQLite file, or PostgreSQL's URL (sent as the first request)."""
        self.proc = subprocess.Popen(  # noqa: S603 - our own module, no shell
            [sys.executable, "-m", "gatekeeper.gate.sqliteworker", "" if postgres else target],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.driver_connection = self
        self.lock = threading.Lock()  # one statement at a time; held from request to reply
        self.expected: deque[bool] = deque()
        self.closed = False
        if postgres:
            self.start(("postgresql", target))

    def cursor(self) -> _ProcessCursor:
        return _ProcessCursor(self)

    def call(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self.lock:
            self.send((sql, list(params)), wanted=True)
            rows: list[Any] = self.receive()
        return rows

    def start(self, request: tuple[Any, ...]) -> None:
        """Send a request without waiting for its reply (a later receive checks it)."""
        with self.lock:
            self.send(request, wanted=False)

    def send(self, request: tuple[Any, ...], wanted: bool) -> None:
        self.send_bytes(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL), wanted)

    def send_bytes(self, request: bytes, wanted: bool) -> None:
        self.write(request)
        self.expected.append(wanted)

    def write(self, request: bytes) -> None:
        """A request pickled already (the same lookup goes to every process)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(request)
            self.proc.stdin.flush()
        except (OSError, ValueError) as exc:  # ValueError: closed meanwhile
            raise GatekeeperError(f"the register's reader process failed: {exc!r}") from exc

    def receive(self) -> Any:
        """The reply to the oldest request a caller reads."""
        while True:
            wanted = self.expected.popleft()
            payload = self._reply()
            if wanted:
                return payload

    def _reply(self) -> Any:
        assert self.proc.stdout is not None
        try:
            status, payload = pickle.load(self.proc.stdout)  # noqa: S301 - our own child process
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            raise GatekeeperError(f"the register's reader process failed: {exc!r}") from exc
        if status != "ok":
            raise GatekeeperError(f"the register's reader process failed: {payload}")
        return payload

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.expected:
            self.proc.kill()  # replies not read: no need to let it finish them
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
    def __init__(self, owner: _ReaderProcess) -> None:
        self.owner = owner
        self.rows: list[Any] = []

    def execute(self, sql: str, params: Sequence[Any]) -> None:
        self.rows = self.owner.call(sql, params)

    def fetchall(self) -> list[Any]:
        return self.rows

    def close(self) -> None:
        self.rows = []
