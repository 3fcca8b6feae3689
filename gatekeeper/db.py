"""Engines and sessions. Services never commit: the request, job or CLI command owns the
transaction (``session_scope``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from flask import Flask, current_app, g, request
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)
T = TypeVar("T")
READ_ONLY = "gatekeeper_read_only"  # an execution option: this session only reads
# An execution option: how long this session's transaction waits for another writer's locks
# (milliseconds) instead of BUSY_TIMEOUT_MS on SQLite and for ever on PostgreSQL.
WAIT_MS = "gatekeeper_wait_ms"
BUSY_TIMEOUT_MS = 30_000
# How long a request's writing transaction waits for another writer: under gunicorn's 30 s
# worker timeout, so a request held up by a long import answers 503 (Retry-After) instead of
# having its worker killed mid-request (no answer at all). Jobs and commands wait longer.
REQUEST_WAIT_MS = 20_000
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # safe methods (RFC 9110): their sessions read


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url, pool_pre_ping=True)
    event.listen(engine, "begin", _postgresql_begin)
    return engine


def _ensure_sqlite_dir(url: str) -> None:
    path = url.split(":///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_connect(dbapi_conn: Any, record: Any) -> None:
    # The driver's own transaction handling off: it would open a deferred transaction at the
    # first write only, and SQLAlchemy's ``begin`` (``_sqlite_begin``) says BEGIN instead.
    dbapi_conn.isolation_level = None
    _sqlite_pragmas(dbapi_conn, record)


def _sqlite_begin(conn: Connection) -> None:
    """Sessions that may write take SQLite's write lock when they begin. A deferred transaction
    that reads first and writes later cannot wait for the lock: if another connection committed
    in between, its write fails at once with "database is locked" (the busy timeout does not
    apply), so two workers writing at the same time would answer 500. Beginning IMMEDIATE, the
    second waits (busy_timeout) and then runs. Read-only sessions (``READ_ONLY``: GET requests)
    begin deferred and never wait for writers (WAL)."""
    options = conn.get_execution_options()
    begin = "BEGIN" if options.get(READ_ONLY, False) else "BEGIN IMMEDIATE"
    wait = options.get(WAIT_MS)
    if wait is None:
        conn.exec_driver_sql(begin)
        return
    # Only the BEGIN waits for another writer: once IMMEDIATE holds the write lock, nothing
    # later in the transaction does (WAL), so the connection's own timeout is put back at once.
    with _busy_timeout(conn.connection.driver_connection, wait):
        conn.exec_driver_sql(begin)


@contextmanager
def _busy_timeout(connection: Any, wait_ms: int) -> Iterator[None]:
    """A SQLite connection waits at most ``wait_ms`` for a lock inside the block, then as before."""
    own = connection.execute("PRAGMA busy_timeout").fetchone()[0]
    connection.execute(f"PRAGMA busy_timeout={int(wait_ms)}")
    try:
        yield
    finally:
        connection.execute(f"PRAGMA busy_timeout={int(own)}")


def _postgresql_begin(conn: Connection) -> None:
    """``WAIT_MS``: the transaction gives up on a lock after that long (``lock_timeout``)."""
    wait = conn.get_execution_options().get(WAIT_MS)
    if wait is not None:
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(wait)}")


# The WAL size past which ``checkpoint_wal`` waits briefly for the readers to reset it.
WAL_TRUNCATE_BYTES = 64 * 1024 * 1024
WAL_TRUNCATE_WAIT_MS = 50  # readers of a request or a batch are done in a few milliseconds


def checkpoint_wal(
    connection: Any, *, truncate_above: int = WAL_TRUNCATE_BYTES, wait_ms: int = WAL_TRUNCATE_WAIT_MS
) -> None:
    """Checkpoint a SQLite connection's WAL between transactions (the kept connections of the
    webhooks and the clicks never checkpoint inside a COMMIT, in the writers' turn).

    PASSIVE waits for nobody and copies what the readers allow. Under constant load (two
    workers, one writing while the other reads) some reader always holds an older snapshot:
    the copy never catches up, SQLite never starts the WAL over, and the file grew by every
    page written (about 2 MiB a 500-event batch) for as long as the load lasted. So once the
    log is past ``truncate_above`` and not fully copied, a TRUNCATE checkpoint waits up to
    ``wait_ms`` for the readers, copies the rest and empties the file. A long
    reader (a campaign list being decided) makes it give up at once; a later call tries again."""
    _busy, frames, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if frames < 0 or copied >= frames:  # not in WAL mode, or all copied: the WAL starts over
        return
    page = connection.execute("PRAGMA page_size").fetchone()[0]
    if frames * page < truncate_above:
        return
    with _busy_timeout(connection, wait_ms):
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the web workers read while an import or the scheduler writes.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    # Checkpoint the WAL less often: each checkpoint syncs, and click links write one row each.
    cur.execute("PRAGMA wal_autocheckpoint=10000")
    # When the WAL starts over, a file a burst of load made larger is cut back to this size.
    cur.execute(f"PRAGMA journal_size_limit={WAL_TRUNCATE_BYTES}")
    # Bulk joins (a campaign list against the register) walk the contact indexes at random:
    # a 64 MiB page cache and memory-mapped reads avoid a system call per B-tree page.
    cur.execute("PRAGMA cache_size=-65536")
    cur.execute("PRAGMA mmap_size=268435456")
    cur.close()


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        # The same pool; on SQLite its transactions begin deferred (``_sqlite_begin``).
        self.read_sessionmaker = sessionmaker(
            self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False
        )
        self._impatient: dict[int, sessionmaker[Session]] = {}

    def impatient_session(self, wait_ms: int) -> Session:
        """A writing session whose transaction waits at most ``wait_ms`` for another writer
        (``WAIT_MS``), then fails as ``unavailable``."""
        maker = self._impatient.get(wait_ms)
        if maker is None:  # a few values in all: one per caller's constant
            bind = self.engine.execution_options(**{WAIT_MS: wait_ms})
            maker = self._impatient[wait_ms] = sessionmaker(bind, expire_on_commit=False)
        return maker()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session_scope(self, *, read_only: bool = False, wait_ms: int | None = None) -> Iterator[Session]:
        """A transaction committed at the end, rolled back on error; ``read_only`` ones never
        wait for SQLite's write lock (``_sqlite_begin``); ``wait_ms``: a writing one waits at
        most that long for another writer (``impatient_session``)."""
        if wait_ms is not None and not read_only:
            session = self.impatient_session(wait_ms)
        else:
            session = (self.read_sessionmaker if read_only else self.sessionmaker)()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


def init_app(app: Flask, database: Database) -> None:
    app.extensions["gatekeeper.db"] = database

    @app.teardown_appcontext
    def _close(_exc: BaseException | None) -> None:
        # Views commit explicitly once everything they were asked to do succeeded; whatever
        # is left uncommitted here belongs to a failed request and is rolled back.
        session: Session | None = g.pop("db_session", None)
        if session is not None:
            session.rollback()
            session.close()


def get_database(app: Flask) -> Database:
    db: Database = app.extensions["gatekeeper.db"]
    return db


def request_session(*, wait_ms: int | None = None) -> Session:
    """The request's session; the view commits, teardown rolls back whatever it did not.
    A GET's session is read-only (``READ_METHODS``); a GET that must write (the journaled
    access export) opens a ``session_scope()`` of its own. Another one waits at most
    ``wait_ms`` (on the first call; default ``REQUEST_WAIT_MS``) for another writer, then the
    request answers 503."""
    if "db_session" not in g:
        database = get_database(current_app)
        if request.method in READ_METHODS:
            g.db_session = database.read_sessionmaker()
        else:
            g.db_session = database.impatient_session(REQUEST_WAIT_MS if wait_ms is None else wait_ms)
    session: Session = g.db_session
    return session


# SQLite raises its OperationalError for a schema or SQL mistake too ("no such table"): only
# these say that the database could not take the statement in time.
_SQLITE_BUSY = ("database is locked", "database table is locked", "database is busy")
# What a request refused by a busy database is told to wait (Retry-After), API and pages alike.
RETRY_AFTER_SECONDS = 60
# How long background work waits to write while another writer holds the database (on SQLite,
# an import of millions of rows holds the only write lock for minutes): ``when_writable``.
WRITABLE_PATIENCE_SECONDS = 3600.0


def unavailable(exc: OperationalError) -> bool:
    """Whether the statement failed because the database could not take it now (SQLite's
    writer held past the busy timeout; on PostgreSQL every OperationalError: a lock or
    statement timeout, a lost connection), so the same request may succeed later. A mistake
    in our SQL or schema is not that: it stays a server error."""
    orig = exc.orig
    if type(orig).__module__ == "sqlite3":
        return any(message in str(orig) for message in _SQLITE_BUSY)
    return True


def when_writable(write: Callable[[], T], patience: float = WRITABLE_PATIENCE_SECONDS) -> T:
    """``write`` (a short transaction of background work: a job's state, a run's record),
    tried again while the database is busy or unreachable, for up to ``patience`` seconds.
    Each try already waited the busy or lock timeout; a request answers 503 instead."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return write()
        except OperationalError as exc:
            if not unavailable(exc) or time.monotonic() >= deadline:
                raise
            log.warning("background write waits for the database: %s", exc.orig)
            time.sleep(1.0)
