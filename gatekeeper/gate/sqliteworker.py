"""A process of its own that runs the bulk path's SQLite statements (gate/bulkread.py).

sqlite3 releases the GIL inside each step, but a step returns one row: while the list is keyed
and written on the main thread, a probe thread of the same process waits for the GIL at every
row, so the two barely overlap. This process reads the register on the other core.

The same for PostgreSQL when the bulk path reads the register whole (see ``scan``): started
without a file, its first request names the database (``("postgresql", url)``).

Protocol, over stdin and stdout: pickled requests in, pickled ``("ok", result)`` or
``("error", message)`` out, until stdin closes. Only the parent that started it writes to it.

* ``(sql, params)``: the rows of one statement.
* ``("scan", sql, params, suppressions_sql, suppressions_params, liftable, number, count, own,
  want_ids, rows_sql, rows_params)``: read this process's share of the contacts (a range of
  ids: coordinate, id, email hash, phone hash, facts) and give each coordinate a *situation
  code*: equal codes for contacts whose facts, suppressions (the canonical string of
  ``engine.suppression_key``, over the active suppressions of the channel, which this process
  reads with ``suppressions_sql``) and, when a suppression holds ``liftable``, stored instants
  are equal (read for those contacts only); a code of its own for a contact without facts or
  without the hash of its own coordinate (``own``: the index of that hash in the row, None for
  external ids). Codes are ``number + 1 + count * n``: the codes of ``count`` processes never
  meet and none is 0. The result is the number of rows.
* ``("codes", values)``: per value, its code (0: no contact in this share) as the bytes of an
  ``array("q")``; when ``want_ids`` was given, the contact ids the same way (else None); and
  the *situation* of each code not told before: ``{code: (row, suppressions, alone)}``, the
  full row of one contact with that code (``rows_sql`` followed by ``IN (…)`` or ``= ANY(…)``,
  with ``rows_params`` then the values), the canonical suppressions the code was made with
  and whether the code is the contact's own (its suppressions are then the parent's to find);
  and the gate profiles those rows name, not told before, by key.

The scan and every later read run in one read transaction, held until the process ends: a
code and the row the parent decides it on come from the same snapshot of the register,
whatever is written meanwhile (a contact erased, anonymised by the retention purge, rectified
or created while the list is decided). SQLite in WAL mode lets writers commit meanwhile;
PostgreSQL reads in REPEATABLE READ.

A register read whole costs about a quarter of an indexed lookup per contact (the rows are read
in order, a few to a page, with no index descent): for a list about as long as the register,
two processes each read half and answer the lookups from memory with a number per value (the
parent keys a row by it: no contact row crosses the pipe, nor a Python step per row of the
parent).

It imports nothing of gatekeeper, so it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import pickle
import queue
import sqlite3
import sys
import threading
from array import array
from itertools import compress, repeat
from operator import itemgetter
from typing import Any

# Read-only; no memory-mapped reads and a small page cache: its memory stays small.
PRAGMAS = ("query_only=ON", "mmap_size=0", "cache_size=-16384", "busy_timeout=30000")


class Worker:
    def __init__(self, path: str) -> None:
        self.conn: Any = None
        self.postgres = False
        self.errors: tuple[type[Exception], ...] = (sqlite3.Error,)
        if path:
            self.conn = sqlite3.connect(path, timeout=30)
            for pragma in PRAGMAS:
                self.conn.execute(f"PRAGMA {pragma}")
        self.codes: dict[Any, int] = {}
        self.ids: dict[Any, int] | None = None
        self.coder: _Coder | None = None
        self.told: set[int] = {0}  # the codes whose situation the parent has (0: no contact)
        self.profiles_told: set[Any] = {None}
        self.rows_sql, self.rows_params = "", list[Any]()

    def handle(self, request: tuple[Any, ...]) -> Any:
        if request[0] == "codes":
            return self.lookup(request[1])
        if request[0] == "scan":
            return self.scan(*request[1:])
        if request[0] == "postgresql":
            return self.connect(request[1])
        sql, params = request
        return self.conn.execute(sql, params).fetchall()

    def lookup(self, values: list[Any]) -> tuple[bytes, bytes | None, dict[int, Any], dict[str, Any]]:
        """A chunk's codes, ids, the situations of its codes and the profiles of their rows
        not told before."""
        found = list(map(self.codes.get, values, repeat(0)))
        codes = array("q", found).tobytes()
        ids = None if self.ids is None else array("q", map(self.ids.get, values, repeat(0))).tobytes()
        new = set(found) - self.told
        if not new:
            return codes, ids, {}, {}
        # One contact per new code, its row read in the scan's snapshot (see the docstring).
        first = {c: v for v, c in zip(values, found, strict=True) if c in new}
        rows = self.rows(self.rows_sql, self.rows_params, list(first.values()))
        assert self.coder is not None
        situations = {c: self.coder.situation(c, rows[v]) for c, v in first.items()}
        self.told.update(new)
        # Their gate profiles too: a profile written since the parent's snapshot began is not
        # in it (profiles are only ever added, under a key of their content).
        keys = list({row[PROFILE_KEY] for row in rows.values()} - self.profiles_told)
        self.profiles_told.update(keys)
        profiles = self.rows(PROFILES_SQL, [], keys) if keys else {}
        return codes, ids, situations, {k: row[1] for k, row in profiles.items()}

    def rows(self, sql: str, params: list[Any], values: list[Any]) -> dict[Any, tuple[Any, ...]]:
        """The rows of ``sql`` (a statement ending ``WHERE column ``) for these values of the
        column, by value (each row's first item)."""
        found: dict[Any, tuple[Any, ...]] = {}
        if self.postgres:
            rows = self.conn.execute(sql + "= ANY(%s)", [*params, values]).fetchall()
            found.update((r[0], r) for r in rows)
            return found
        for start in range(0, len(values), 10_000):  # within SQLite's limit of parameters
            part = values[start : start + 10_000]
            marks = ",".join("?" * len(part))
            found.update(
                (r[0], r) for r in self.conn.execute(f"{sql}IN ({marks})", [*params, *part]).fetchall()
            )
        return found

    def connect(self, url: str) -> None:
        """PostgreSQL: each statement on its own (autocommit), read-only, as the parent's
        other connections read committed data statement by statement."""
        import psycopg  # noqa: PLC0415 - only for PostgreSQL, so a SQLite worker starts faster

        self.errors = (psycopg.Error,)
        self.postgres = True
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("SET default_transaction_read_only = on")

    def scan(
        self,
        sql: str,
        params: list[Any],
        suppressions_sql: str,
        suppressions_params: list[Any],
        liftable: str,
        number: int,
        count: int,
        own: int | None,
        want_ids: bool,
        rows_sql: str,
        rows_params: list[Any],
    ) -> int:
        self.snapshot()
        self.rows_sql, self.rows_params = rows_sql, rows_params
        found = self.suppressions(suppressions_sql, suppressions_params)
        coder = self.coder = _Coder(found, liftable, number, count, own)
        if want_ids:
            self.ids = {}
        if self.postgres:
            # A server-side cursor: the rows come 10,000 at a time, not all into libpq's memory.
            with self.conn.cursor(name="gate_scan") as cur:
                cur.execute(sql, params)
                return self.fill(cur, coder)
        return self.fill(self.conn.execute(sql, params), coder)

    def snapshot(self) -> None:
        """Begin the read transaction every later statement runs in (see the docstring): on
        SQLite a deferred BEGIN (its snapshot is taken by the first read), on PostgreSQL
        REPEATABLE READ, begun by the first statement and never committed."""
        if self.postgres:
            import psycopg  # noqa: PLC0415 - as in connect()

            self.conn.autocommit = False
            self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        else:
            self.conn.execute("BEGIN")

    def suppressions(self, sql: str, params: list[Any]) -> dict[str, list[str]]:
        """The active suppressions of the channel by hash, as BulkReader.suppressions reads
        them (the same entries, so the same canonical strings)."""
        found: dict[str, list[str]] = {}
        for coord_hash, entry in self.conn.execute(sql, params).fetchall():
            found.setdefault(coord_hash, []).append(entry)
        return found

    def fill(self, cur: Any, coder: _Coder) -> int:
        codes, ids = self.codes, self.ids
        suppressed, own = coder.found.__contains__, coder.own
        by_facts = _FactsCodes(coder).__getitem__
        while batch := cur.fetchmany(10_000):
            coordinates = list(map(_COORDINATE, batch))
            # Most contacts: nothing but their facts to tell (one code per facts text), in C.
            facts = list(map(_FACTS, batch))
            codes.update(zip(coordinates, map(by_facts, facts), strict=True))
            if ids is not None:
                ids.update(zip(coordinates, map(_ID, batch), strict=True))
            # The others, coded again one by one: a suppressed hash (found in C), no facts, no
            # hash of their own.
            special = list(compress(batch, map(suppressed, map(_EMAIL_HASH, batch))))
            special += compress(batch, map(suppressed, map(_PHONE_HASH, batch)))
            if None in facts or (own is not None and None in map(itemgetter(own), batch)):
                special += filter(coder.alone, batch)
            waiting = [row for row in special if not coder.special(row, codes)]
            if waiting:
                # An objection a newer consent may lift: the instants tell (a few contacts).
                instants = self.instants(sorted({row[1] for row in waiting}))
                for row in waiting:
                    codes[row[0]] = coder.lifted(row, instants.get(row[1]))
        return len(codes)

    def instants(self, ids: list[int]) -> dict[int, Any]:
        """The stored instants of these contacts, as text (in the scan's snapshot on SQLite:
        the scan's statement is still open on this connection)."""
        if self.postgres:
            sql = "SELECT id, instants::text FROM contacts WHERE id = ANY(%s)"
            return dict(self.conn.execute(sql, [ids]).fetchall())
        found: dict[int, Any] = {}
        for start in range(0, len(ids), 10_000):  # within SQLite's limit of parameters
            part = ids[start : start + 10_000]
            sql = f"SELECT id, instants FROM contacts WHERE id IN ({','.join('?' * len(part))})"  # noqa: S608
            found.update(self.conn.execute(sql, part).fetchall())
        return found


_COORDINATE, _ID, _EMAIL_HASH, _PHONE_HASH, _FACTS = map(itemgetter, range(5))
PROFILE_KEY = 2  # in a row of ``rows_sql`` (gate.probe.ContactRow)
PROFILES_SQL = "SELECT key, data FROM gate_profiles WHERE key "


class _Coder:
    """The situation codes of one process's share (see the module's docstring)."""

    def __init__(
        self, found: dict[str, list[str]], liftable: str, number: int, count: int, own: int | None
    ) -> None:
        self.found, self.liftable, self.own = found, liftable, own
        self.number, self.count = number, count
        self.situations: dict[Any, int] = {}
        self.by_code: dict[int, Any] = {}

    def code(self, situation: Any) -> int:
        code = self.situations.get(situation)
        if code is None:
            code = self.situations[situation] = self.number + 1 + self.count * len(self.situations)
            self.by_code[code] = situation
        return code

    def situation(self, code: int, row: tuple[Any, ...]) -> tuple[tuple[Any, ...], str | None, bool]:
        """What the parent decides a code on: a contact's full row, the suppressions the code
        was made with, and whether the code is that contact's own (see ``alone``)."""
        situation = self.by_code[code]
        alone = situation[0] == "contact"
        return row, None if alone else situation[1], alone

    def alone(self, row: tuple[Any, ...]) -> bool:
        """Whether a contact is a situation of its own: no gate profile (the parent's reference
        decides it), or suppressions the parent finds by hashing the coordinate itself."""
        return row[4] is None or (self.own is not None and row[self.own] is None)

    def special(self, row: tuple[Any, ...], codes: dict[Any, int]) -> bool:
        """Code a contact with a suppressed hash or alone (False: its instants are needed)."""
        if self.alone(row):
            codes[row[0]] = self.code(("contact", row[1]))
            return True
        supp = self.suppressions(row)
        if supp and self.liftable in supp:
            return False
        codes[row[0]] = self.code((row[4], supp, None))
        return True

    def lifted(self, row: tuple[Any, ...], instants: Any) -> int:
        """The code of a contact whose objection a newer consent may lift."""
        return self.code((row[4], self.suppressions(row), instants))

    def suppressions(self, row: tuple[Any, ...]) -> str | None:
        # As engine.suppression_key: the entries of both hashes, sorted, joined.
        entries = self.found.get(row[2], []) + self.found.get(row[3], [])
        return ";".join(sorted(entries)) if entries else None


class _FactsCodes(dict[str | None, int]):
    """The code of a contact with these facts and nothing else, made at the first ask (0 for
    no facts: the row is then coded on its own by ``_Coder.special``)."""

    def __init__(self, coder: _Coder) -> None:
        super().__init__()
        self.coder = coder

    def __missing__(self, facts: str | None) -> int:
        code = self[facts] = 0 if facts is None else self.coder.code((facts, None, None))
        return code


def serve(path: str) -> None:
    worker = Worker(path)
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    # Replies are written by a thread of their own: a parent that sends requests ahead and
    # reads the replies later never finds this loop stuck on a full pipe, not reading its own.
    replies: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def write() -> None:
        while (data := replies.get()) is not None:
            sink.write(data)
            sink.flush()

    writer = threading.Thread(target=write, name="replies", daemon=True)
    writer.start()
    while True:
        try:
            request = pickle.load(source)  # noqa: S301 - from the parent process only
        except EOFError:
            break
        try:
            reply: tuple[str, object] = ("ok", worker.handle(request))
        except worker.errors as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        replies.put(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
    replies.put(None)
    writer.join()
    if worker.conn is not None:
        worker.conn.close()


if __name__ == "__main__":
    serve(sys.argv[1])
