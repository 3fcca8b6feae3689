"""Raw DB-API connections kept open by the clicks' drainer (``spooled``), in autocommit mode.

Checking a connection out of SQLAlchemy's pool and handing it back (with its reset rollback)
costs as much as a small batch's work, so the drainer keeps connections of its own: a read is
one statement and no transaction, and each batch of clicks is an explicit ``BEGIN … COMMIT``
(``Raw.begin``). (The unsubscribe page, which used them too, no longer reads the database.)

They are closed when the engine is disposed (tests, shutdown); a forked child never touches
its parent's, not even at exit (closing a psycopg handle ends the parent's session; SQLite
forbids using a handle across fork) and opens its own. A connection that failed in the middle
of a batch is closed, not reused.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import weakref
from typing import Any

from sqlalchemy import Engine, event

from gatekeeper.db import _sqlite_pragmas
from gatekeeper.links.records import Raw

_INHERITED: list[Raw] = []  # a forked child's copies of its parent's: referenced, never closed


class LinkConnections:
    """A small free list of autocommit connections (one per thread that uses it at once)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._idle: list[Raw] = []
        # The process whose handles ``_idle`` holds, in a box the finalizer shares: a forked
        # worker that never borrowed still holds its parent's at exit, and must not close them.
        self._owner = [os.getpid()]
        event.listen(engine, "engine_disposed", self._on_dispose)
        weakref.finalize(self, _close_own, self._idle, self._owner)

    def borrow(self) -> Raw:
        if self._owner[0] != os.getpid():  # forked: the parent's handles stay open, untouched
            _INHERITED.extend(self._idle)
            self._idle.clear()
            self._owner[0] = os.getpid()
        try:
            return self._idle.pop()
        except IndexError:
            return Raw(self._open(), self.dialect)

    def give_back(self, raw: Raw, *, healthy: bool = True) -> None:
        """Keep ``raw`` for the next request, or close it after a failure."""
        if healthy and not _in_transaction(raw):
            self._idle.append(raw)
        else:
            with contextlib.suppress(Exception):
                raw.connection.close()

    def _open(self) -> Any:
        if self.dialect == "sqlite":
            path = self.engine.url.database or ":memory:"
            lite = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            _sqlite_pragmas(lite, None)  # the engine's settings, but for the checkpoint
            # An automatic checkpoint runs inside the COMMIT that crosses the threshold and
            # holds the write lock while it copies: the clicks' drainer (``spooled``)
            # checkpoints between its batches instead (PASSIVE: it waits for no reader or writer).
            lite.execute("PRAGMA wal_autocheckpoint=0")
            return lite
        # The dialect's own arguments (host, user, its type adapters), as the pool would pass.
        cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
        conn: Any = self.engine.dialect.connect(*cargs, **cparams)
        conn.autocommit = True
        # Fully durable (synchronous_commit stays on): the web workers only read here, and the
        # clicks' drainer flushes once per batch of thousands, so it costs nothing per click and
        # a database crash can no longer lose clicks the spool already counts as stored.
        return conn

    def _on_dispose(self, _engine: Engine) -> None:
        _close_own(self._idle, self._owner)


def _in_transaction(raw: Raw) -> bool:
    conn = raw.connection
    if isinstance(conn, sqlite3.Connection):
        return conn.in_transaction
    return bool(conn.info.transaction_status != 0)  # psycopg: 0 is IDLE


def _close_own(connections: list[Raw], owner: list[int]) -> None:
    # Never a parent's handles: psycopg's close sends a Terminate on the shared socket.
    if owner[0] == os.getpid():
        _close_all(connections)


def _close_all(connections: list[Raw]) -> None:
    while connections:
        with contextlib.suppress(Exception):
            connections.pop().connection.close()
