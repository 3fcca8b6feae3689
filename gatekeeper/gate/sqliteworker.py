"""A process of its own that runs the bulk path's SQLite statements (gate/bulkread.py).

sqlite3 releases the GIL inside each step, but a step returns one row: while the list is keyed
and written on the main thread, a probe thread of the same process waits for the GIL at every
row, so the two barely overlap. This process reads the register on the other core.

The same for PostgreSQL when the bulk path reads the register whole (see ``scan``): started
without a file, its first request names the database (``("postgresql", url)``).

Protocol, over stdin and stdout: pickled requests in, pickled ``("ok", result)`` or
``("error", message)`` out, until stdin closes. Only the parent that started it writes to it.

* ``(sql, params)``: the rows of one statement.
* ``("scan", sql, params, suppressed)``: read every row of ``sql`` (a range of the contacts:
  coordinate, id, email hash, phone hash, facts, instants) into a dict by coordinate; the
  result is the number of rows. When ``suppressed`` (the hashes that have a suppression) is
  given, a hash not among them is kept as ``""``: present, suppressing nothing (fewer bytes to
  send back), and the instants are kept only for a contact with a suppressed hash (an
  objection a newer consent may lift: the parent's key then holds them), else False. The
  facts, a few distinct texts, are kept once each, so a reply pickles each once.
* ``("lookup", values)``: per value, its row from the scan (``(None, id, email hash, phone
  hash, facts)``, and the instants or False when ``suppressed`` was given) or None.

A register read whole costs about a quarter of an indexed lookup per contact (the rows are read
in order, a few to a page, with no index descent): for a list about as long as the register,
two processes each read half and answer the lookups from memory (sending the rows to the
parent once would cost it more than it saves: it would hold and unpickle every contact).

It imports nothing of gatekeeper, so it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import pickle
import queue
import sqlite3
import sys
import threading
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
        self.rows: dict[Any, tuple[Any, ...]] = {}

    def handle(self, request: tuple[Any, ...]) -> Any:
        if request[0] == "lookup":
            return list(map(self.rows.get, request[1]))
        if request[0] == "scan":
            _, sql, params, suppressed = request
            return self.scan(sql, params, suppressed)
        if request[0] == "postgresql":
            return self.connect(request[1])
        sql, params = request
        return self.conn.execute(sql, params).fetchall()

    def connect(self, url: str) -> None:
        """PostgreSQL: each statement on its own (autocommit), read-only, as the parent's
        other connections read committed data statement by statement."""
        import psycopg  # noqa: PLC0415 - only for PostgreSQL, so a SQLite worker starts faster

        self.errors = (psycopg.Error,)
        self.postgres = True
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("SET default_transaction_read_only = on")

    def scan(self, sql: str, params: list[Any], suppressed: list[str] | None) -> int:
        if self.postgres:
            # A server-side cursor: the rows come 10,000 at a time, not all into libpq's memory.
            with self.conn.transaction(), self.conn.cursor(name="gate_scan") as cur:
                cur.execute(sql, params)
                return self.fill(cur, suppressed)
        return self.fill(self.conn.execute(sql, params), suppressed)

    def fill(self, cur: Any, suppressed: list[str] | None) -> int:
        rows = self.rows
        facts: dict[str, str] = {}
        keep = facts.setdefault
        hit = set(suppressed or ())
        mark = suppressed is not None
        while batch := cur.fetchmany(10_000):
            if mark:
                rows.update(
                    (
                        v,
                        (
                            None,
                            i,
                            eh if eh is None or eh in hit else "",
                            ph if ph is None or ph in hit else "",
                            f if f is None else keep(f, f),
                            inst
                            if (eh is not None and eh in hit) or (ph is not None and ph in hit)
                            else False,
                        ),
                    )
                    for v, i, eh, ph, f, inst in batch
                )
            else:
                rows.update(
                    (v, (None, i, eh, ph, f if f is None else keep(f, f))) for v, i, eh, ph, f, _ in batch
                )
        return len(rows)


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
