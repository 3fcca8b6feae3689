"""SQLite's WAL stays bounded under constant load (``db.checkpoint_wal``). SQLite only: the WAL
is SQLite's; PostgreSQL checkpoints by itself.

Under load some reader always holds an older snapshot when a passive checkpoint runs: it never
copies the last frames, SQLite never starts the WAL over, and the file grows by every page
written for as long as the load lasts (measured: 600+ MiB after 5 s of webhook batches with two
workers). Past its limit the checkpoint waits a little for the readers, which are short, and
empties the file."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from gatekeeper.db import checkpoint_wal

LIMIT = 256 * 1024
PATIENT_MS = 5000  # the readers below let go after 50 ms; this much is never the limit


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")  # as the kept connections: ours to checkpoint
    return conn


def batch(writer: sqlite3.Connection, n: int) -> None:
    writer.execute("BEGIN IMMEDIATE")
    writer.executemany("INSERT INTO t (v) VALUES (?)", [(f"{n}-{i}-" + "x" * 200,) for i in range(200)])
    writer.execute("COMMIT")


def under_load(writer: sqlite3.Connection, reader: sqlite3.Connection, batches: int, **limits: int) -> None:
    """As two workers interleave under constant load: each batch is committed while the other
    worker's read holds the snapshot from before it, and that read ends shortly after the
    checkpoint has begun."""
    for n in range(batches):
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchone()  # its snapshot: before this batch
        batch(writer, n)
        done = threading.Timer(0.05, reader.execute, ["COMMIT"])
        done.start()
        checkpoint_wal(writer, **limits)
        done.join()


def test_the_wal_stays_bounded_while_readers_always_hold_an_older_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "load.db"
    writer, reader = connect(path), connect(path)
    writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    wal = Path(f"{path}-wal")
    # What a passive checkpoint alone does under this load: the WAL holds every batch.
    under_load(writer, reader, 10, truncate_above=2**62)
    grown = wal.stat().st_size
    assert grown > 10 * 200 * 200
    # Past the limit, the checkpoint waits for the reader and empties the file.
    under_load(writer, reader, 20, truncate_above=LIMIT, wait_ms=PATIENT_MS)
    assert wal.stat().st_size < LIMIT + 100 * 1024, "the WAL kept growing under constant load"
    assert writer.execute("PRAGMA busy_timeout").fetchone()[0] == 30000  # put back
    assert writer.execute("SELECT count(*) FROM t").fetchone()[0] == 30 * 200


def test_a_long_reader_makes_the_checkpoint_give_up_and_lose_nothing(tmp_path: Path) -> None:
    """A campaign list being decided reads for seconds: the checkpoint gives up after its short
    wait (writers wait meanwhile) instead of the busy timeout; once the reader is gone the WAL
    starts over."""
    path = tmp_path / "long.db"
    writer, reader = connect(path), connect(path)
    writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()
    for n in range(10):
        batch(writer, n)
    wal = Path(f"{path}-wal")
    before = wal.stat().st_size
    checkpoint_wal(writer, truncate_above=LIMIT, wait_ms=10)
    assert wal.stat().st_size == before
    assert writer.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
    reader.execute("COMMIT")
    checkpoint_wal(writer, truncate_above=LIMIT, wait_ms=10)  # all copied now
    batch(writer, 10)
    _busy, frames, _copied = writer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert frames * 4096 < before / 5  # the WAL started over: it holds the last batch alone
    assert writer.execute("SELECT count(*) FROM t").fetchone()[0] == 11 * 200
