"""Webhook ingestion, shared by the WSGI fast path and the Flask view (``webhook_views``).

Theory of operation
-------------------
A request with legal urgency (below: the others may be journaled first) is one transaction,
in warehouse's order: verify → parse → drop the events already stored → apply the state change
→ store the raw events → commit → 2xx. The adapter verifies on
the raw bytes; its one-time tokens (Mailgun) are only noted (``TokenBook``) and inserted first
thing in the write phase, in the events' transaction: a replay is refused there by the unique
index, and a request that fails after verification does not burn its token for the provider's
retry. Everything that only reads runs first; the writes take a short turn at the end
(``writers_turn``: one writer at a time on SQLite) and commit before the status is sent, so
such a 2xx means the events are durable and their suppressions in force. Every status
comes from the adapter (``status_for``): a refused request stores nothing, and a database
failure answers the transient code (503) so the provider retries.

Each worker thread keeps one DB-API connection across requests (``Connections``): a request
pays neither a pool checkout nor PostgreSQL's pre-ping. A connection that raised a database
error is closed and replaced by the next request; the provider retries the failed one. On
SQLite these connections never checkpoint inside their COMMIT (the automatic checkpoint copies
and syncs megabytes while holding the writers' turn, stalling every other writer): each
checkpoints after its turn instead, once it has written enough (``Connections.written``).

With a spool, a request whose events have no legal urgency (``delivery_plan.may_wait``:
delivered, open, click, deferred, soft bounce...) skips the transaction: once verified and
parsed, it becomes one line in the local spool (``deliveries.spool_record``, one ``os.write``)
and is answered 200 with ``queued`` (the spool's line is as durable as a commit with SQLite's
synchronous=NORMAL); ``gatekeeper.webhook_spooled`` applies the lines in batches through the
same plan and apply, so a click moves its deadline within a drain pass (a second). A request
carrying an unsubscribe, a hard bounce or a complaint is stored in its transaction before the
2xx, as above, and so is a request whose line would be longer than the drainer reads in one
step (it would skip it as corrupt). A batch mixing both kinds is stored whole (``_journal``).
One-time tokens: a worker refuses at once the tokens it accepted lately (``RecentTokens``); the
drainer inserts the spooled ones with their events, so the unique index decides across workers:
one event per token, never two.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from sqlalchemy import Engine, event
from sqlalchemy.exc import SQLAlchemyError

from gatekeeper.db import checkpoint_wal
from gatekeeper.models import utcnow
from gatekeeper.register import delivery_apply, delivery_plan
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.deliveries import (
    DeliveryResult,
    RecentTokens,
    TokenBook,
    spool_record,
    writers_turn,
)
from gatekeeper.register.rawsql import Sql
from gatekeeper.spool import READ_BYTES, Spool, SpoolError
from webhooks import (
    Adapter,
    AuthenticationError,
    InboundRequest,
    NormalizedEvent,
    PayloadError,
    ReplayError,
    UpstreamError,
    WebhookError,
)

log = logging.getLogger("gatekeeper.webhook_views")
# SNS waits on our answer while we confirm: stay well inside its own timeout.
CONFIRM_TIMEOUT_SECONDS = 5
# Rows a kept SQLite connection writes between its own WAL checkpoints (a commit counts for a
# few): about the 10,000 pages of the engine's automatic checkpoint for a newsletter's events.
CHECKPOINT_ROWS = 5_000
# A web worker's: ten times more. ``gatekeeper drain`` checkpoints after each pass that wrote
# (``Connections.checkpoint``), at its lower CPU priority; the workers, whose writes queue on
# SQLite's single writer and whose CPU is then partly idle, only checkpoint as a backstop when
# no drainer runs. Measured under bench/webhooks.py: the workers' checkpoints took 6 % of
# their time, on the path of the next request.
WORKER_CHECKPOINT_ROWS = 50_000
COMMIT_ROWS = 8

Credentials = dict[str, list[dict[str, str]]]
Answer = tuple[int, dict[str, Any]]


class Connections:
    """One DB-API connection per thread (and process: never shared across a fork), detached
    from the engine's pool and closed when the engine is disposed.

    A forked child never closes what it inherited: closing a psycopg connection ends the
    parent's session on the server, closing a SQLite handle drops the parent's POSIX locks.
    The usual ``engine.dispose(close=False)`` after a fork still fires ``engine_disposed``."""

    def __init__(self, engine: Engine, checkpoint_rows: int = CHECKPOINT_ROWS) -> None:
        self.engine, self.checkpoint_rows = engine, checkpoint_rows
        self.local = threading.local()
        self.opened: list[Sql] = []
        self.inherited: list[Sql] = []  # a fork's parent's: kept, so not even freed, never closed
        self.pid = os.getpid()
        self.lock = threading.Lock()
        event.listen(engine, "engine_disposed", self.close_all)

    @contextmanager
    def __call__(self) -> Iterator[Sql]:
        sql: Sql | None = getattr(self.local, "sql", None)
        if sql is None or self.local.pid != os.getpid():
            sql = self._open()
        try:
            yield sql
        except BaseException as exc:
            with suppress(Exception):
                sql.rollback()
            if isinstance(exc, SQLAlchemyError):  # the connection itself may be what failed
                self._discard(sql)
            raise

    def _open(self) -> Sql:
        proxied = self.engine.raw_connection()  # runs the engine's connect hooks (pragmas)
        connection = proxied.driver_connection
        proxied.detach()  # ours now: the pool neither resets nor pings it per request
        dialect = self.engine.dialect
        sql = Sql(connection, dialect.name, dialect.loaded_dbapi.Error)
        if sql.dialect == "sqlite":
            sql.run("PRAGMA wal_autocheckpoint=0")  # ``written`` checkpoints, out of the turn
            # Transactions are ours to begin (``begin_writes``), whatever the engine's hooks
            # set: reads run outside any, and a write phase is one, begun IMMEDIATE.
            sql.connection.isolation_level = None
        self.local.sql, self.local.pid, self.local.unchecked = sql, os.getpid(), 0
        with self.lock:
            self._forget_inherited()
            self.opened.append(sql)
        return sql

    def written(self, sql: Sql, rows: int) -> None:
        """After a commit, outside the writers' turn: checkpoint the WAL once this connection
        has written about ``checkpoint_rows`` rows since its last one."""
        if sql.dialect != "sqlite":
            return
        self.local.unchecked += rows + COMMIT_ROWS
        if self.local.unchecked >= self.checkpoint_rows:
            self.checkpoint(sql)

    def checkpoint(self, sql: Sql) -> None:
        """Checkpoint the WAL now (``db.checkpoint_wal``: it waits for no reader or writer
        unless the WAL grew large). A failure here loses nothing (committed)."""
        if sql.dialect != "sqlite":
            return
        self.local.unchecked = 0
        try:
            checkpoint_wal(sql.connection)
        except (SQLAlchemyError, sql.error):
            log.warning("webhook connection: WAL checkpoint failed; the next one will copy more")

    def _discard(self, sql: Sql) -> None:
        self.local.sql = None
        with self.lock:
            if sql in self.opened:
                self.opened.remove(sql)
        with suppress(Exception):
            sql.connection.close()

    def close_all(self, _engine: Engine | None = None) -> None:
        with self.lock:
            self._forget_inherited()
            opened, self.opened = self.opened, []
        for sql in opened:
            with suppress(Exception):
                sql.connection.close()
        self.local = threading.local()

    def _forget_inherited(self) -> None:
        """In a forked child, set the parent's connections aside (the lock held): freeing one
        would close it as surely as ``close``."""
        if self.pid != os.getpid():
            self.inherited += self.opened
            self.opened, self.pid = [], os.getpid()


class WebhookService:
    """Everything a webhook request needs, built once per app."""

    def __init__(
        self,
        adapters: Mapping[str, Adapter],
        credentials: Credentials,
        ctx: RegisterContext,
        engine: Engine,
        public_base_url: str,
        spool: Spool | None = None,
    ) -> None:
        self.adapters, self.credentials, self.ctx = adapters, credentials, ctx
        self.spool, self.recent = spool, RecentTokens()
        self.connections = Connections(engine, WORKER_CHECKPOINT_ROWS)
        url = engine.url
        self.sqlite_path = url.database if url.get_backend_name() == "sqlite" else None
        self.base_url = public_base_url.rstrip("/")

    def external_url(self, path: str, query: str) -> str:
        """The URL as configured at the provider (Mandrill signs it): the public one, not ours."""
        return self.base_url + path + ("?" + query if query else "")

    def receive(self, provider: str, inbound: InboundRequest) -> Answer:
        """The HTTP status and JSON body answering one webhook request."""
        with collector_paused():
            return self._receive(provider, inbound)

    def _receive(self, provider: str, inbound: InboundRequest) -> Answer:
        adapter = self.adapters.get(provider)
        if adapter is None:
            return 404, error_body("not_found", f"no webhook for provider {provider!r}")
        try:
            result = self._ingest(provider, adapter, inbound)
        except WebhookError as exc:
            log.warning("webhook %s refused: %s", provider, exc)
            return adapter.status_for(exc), error_body(_code(exc), str(exc))
        except (SQLAlchemyError, SpoolError):
            log.exception("webhook %s: storage failed, the provider will retry", provider)
            status = adapter.status_for(None, transient=True)
            return status, error_body("storage_unavailable", "events not stored; retry later")
        body = {"received": result.received, "stored": result.stored, "duplicates": result.duplicates}
        if result.queued:
            body["queued"] = result.queued
        return adapter.status_for(None), body

    def _ingest(self, provider: str, adapter: Adapter, inbound: InboundRequest) -> DeliveryResult:
        now, book = utcnow(), TokenBook()
        adapter.verify(inbound, self.credentials.get(provider, []), now=now, guard=book)
        parsed = adapter.parse(inbound)
        events = _without_nul(parsed.events) if _may_hold_nul(inbound.body) else parsed.events
        if parsed.subscribe_url:
            confirm_subscription(parsed.subscribe_url)
        if not events and not book.pending:  # Mandrill's probe, an SNS confirmation
            return DeliveryResult(received=0, stored=0)
        self.recent.refuse_replay(book)
        if self.spool is not None and events:
            journaled = self._journal(self.spool, events, book, now)
            if journaled is not None:
                return journaled
        result = self._store(events, book, now)
        self.recent.remember(book)
        return result

    def _journal(
        self, spool: Spool, events: list[NormalizedEvent], book: TokenBook, now: datetime
    ) -> DeliveryResult | None:
        """Journal a request none of whose events has legal urgency; None when it must be
        stored at once: an urgent event, or a line longer than the drainer reads in one step
        (``spool.READ_BYTES``: it would skip it as corrupt).

        A batch mixing both kinds is stored whole in its transaction, not split into an
        urgent part and a journaled one: measured under bench/webhooks.py, the split halved
        the request's CPU but moved the rest to the single drainer (at nice 10), and the events
        were stored no sooner (two workers share the load; one drainer does not)."""
        if not delivery_plan.may_wait(events):
            return None
        line = spool_record(now, book, events)
        if len(line) >= READ_BYTES:
            return None
        spool.append(line)
        self.recent.remember(book)  # only once journaled: a failed append burns nothing
        return DeliveryResult(received=len(events), stored=0, queued=len(events))

    def _store(self, events: list[NormalizedEvent], book: TokenBook, now: datetime) -> DeliveryResult:
        """One transaction: the tokens, the events and their effects, committed."""
        with self.connections() as sql:
            plan = delivery_plan.plan(sql, events, self.ctx, now)  # reads only
            with writers_turn(self.sqlite_path):  # the writes, the token first, then commit
                try:
                    begin_writes(sql)
                    book.record(sql)
                    # With a spool there is a drainer: the clicks' facts may wait for it.
                    result = delivery_apply.apply(sql, plan, self.ctx, defer=self.spool is not None)
                    sql.commit()
                except BaseException:
                    sql.rollback()  # before the turn passes: no one waits for our teardown
                    raise
            self.connections.written(sql, len(plan.rows))
        return result


def begin_writes(sql: Sql) -> None:
    """Open the write phase's transaction. On SQLite, IMMEDIATE: the write lock is taken now,
    waiting (busy timeout) for a writer outside the turn (an import, the API), so no statement
    of the phase can fail on a snapshot another connection made stale. PostgreSQL's driver
    opens its transaction at the first statement."""
    if sql.dialect == "sqlite":
        sql.run("BEGIN IMMEDIATE")


def _may_hold_nul(body: bytes) -> bool:
    # JSON spells a NUL \u0000, a form %00: a byte search keeps the check off the usual path.
    return b"\\u0000" in body or b"%00" in body or b"\x00" in body


def _without_nul(events: list[NormalizedEvent]) -> list[NormalizedEvent]:
    """PostgreSQL text cannot hold a NUL character: a provider's id or user agent carrying one
    would fail the whole batch with a retry, forever. It becomes U+FFFD, the same for every
    redelivery, so the dedupe key still matches; the raw JSON keeps the escape as sent."""
    return [
        e._replace(
            provider_event=_clean(e.provider_event),
            dedupe_key=_clean(e.dedupe_key),
            email=_clean_or_none(e.email),
            url=_clean_or_none(e.url),
            user_agent=_clean_or_none(e.user_agent),
        )
        for e in events
    ]


def _clean(text: str) -> str:
    return text.replace("\x00", "\ufffd")


def _clean_or_none(text: str | None) -> str | None:
    return None if text is None else _clean(text)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run without the cyclic garbage collector. A 500-event batch allocates tens of thousands
    of acyclic containers (decoded JSON, rows, events), all freed by reference counting when the
    request ends; meanwhile their count triggers collections that traverse them, and in the old
    generation the whole application, several times per batch (a tenth of a worker's CPU under
    ``perf``). Whatever cycles a request leaves are collected after it, as before."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def confirm_subscription(url: str) -> None:
    """GET the SubscribeURL. The adapter checked it is an SNS host; we insist on HTTPS and no
    redirect, so a forged envelope can never make us fetch anything else."""
    if urlsplit(url).scheme != "https":
        raise PayloadError("subscription URL is not HTTPS")
    try:
        response = requests.get(url, timeout=CONFIRM_TIMEOUT_SECONDS, allow_redirects=False)
    except requests.RequestException as exc:
        raise UpstreamError(f"subscription confirmation failed: {exc}") from exc
    if response.status_code // 100 != 2:  # a redirect is not a confirmation either
        raise UpstreamError(f"subscription confirmation answered {response.status_code}")


def _code(exc: WebhookError) -> str:
    if isinstance(exc, ReplayError):
        return "replayed"
    if isinstance(exc, AuthenticationError):
        return "unauthorized"
    if isinstance(exc, UpstreamError):
        return "upstream_unavailable"
    return "malformed"


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": []}}
