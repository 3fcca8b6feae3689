"""A process of its own that runs the bulk path's SQLite statements (gate/bulkread.py).

sqlite3 releases the GIL inside each step, but a step returns one row: while the list is keyed
and written on the main thread, a probe thread of the same process waits for the GIL at every
row, so the two barely overlap. This process reads the register on the other core.

Protocol, over stdin and stdout: pickled ``(sql, params)`` in, pickled ``("ok", rows)`` or
``("error", message)`` out, until stdin closes. Only the parent that started it writes to it.
It imports nothing of gatekeeper, so it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import pickle
import sqlite3
import sys

# Read-only; no memory-mapped reads and a small page cache: its memory stays small.
PRAGMAS = ("query_only=ON", "mmap_size=0", "cache_size=-16384", "busy_timeout=30000")


def serve(path: str) -> None:
    conn = sqlite3.connect(path, timeout=30)
    for pragma in PRAGMAS:
        conn.execute(f"PRAGMA {pragma}")
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            sql, params = pickle.load(source)  # noqa: S301 - from the parent process only
        except EOFError:
            break
        try:
            reply: tuple[str, object] = ("ok", conn.execute(sql, params).fetchall())
        except sqlite3.Error as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        pickle.dump(reply, sink, protocol=pickle.HIGHEST_PROTOCOL)
        sink.flush()
    conn.close()


if __name__ == "__main__":
    serve(sys.argv[1])
