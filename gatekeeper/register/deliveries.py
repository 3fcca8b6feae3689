"""Delivery and engagement events from emailing platforms, into the register (WEBHOOKS.md).

Theory of operation
-------------------
The webhook service (``gatekeeper.webhook_service``) hands over the events of one request,
already verified and parsed (``webhooks.base.NormalizedEvent``). Everything happens in one
transaction, which also records the request's one-time token (``TokenBook``), so a failure
stores nothing and burns nothing. Set-based, never a query per event (PERFORMANCE.md), in two
phases so that SQLite's single writer is held as briefly as possible:

1. ``delivery_plan.plan`` only reads, and runs concurrently in every worker: normalise the
   addresses, match contacts, and prepare each event's raw row and, for the kinds that
   matter, its consequences (``EFFECTS``);
2. ``delivery_apply.apply`` writes, one worker at a time on SQLite (``writers_turn``), one
   statement per kind of write: the raw events once each (providers retry whole batches:
   idempotency is per event), then only the new ones change the register, each new fact
   proven in the journal (RULES.md §6), then the clocks they can move, once per contact.

Clocks are a maximum over facts and suppressions keep their latest date, so events arriving out
of order (Brevo often does) never move a clock backwards nor undo a newer suppression.
Statements run on raw DB-API connections (``rawsql.Sql``).

Events without legal urgency may instead be journaled in the local spool (``gatekeeper.spool``)
by the service and applied later by ``gatekeeper.webhook_spooled``, through the same two phases:
one record per request (``spool_record``), its one-time tokens inside it, so the drainer inserts
them with the events (``insert_tokens``) and the unique index refuses a replay there too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, get_args

from gatekeeper.register.delivery_apply import DeliveryResult
from gatekeeper.register.delivery_plan import raw_text
from gatekeeper.register.rawsql import Sql
from webhooks.base import Kind, NormalizedEvent, ReplayError

__all__ = [
    "DeliveryResult",
    "RecentTokens",
    "SpooledRequest",
    "TokenBook",
    "insert_tokens",
    "read_spool_record",
    "spool_record",
    "writers_turn",
]

# Used tokens are kept longer than any adapter accepts a signature (Mailgun: 15 minutes).
TOKEN_TTL = timedelta(days=1)
# About one token in this many also forgets expired ones: no scheduler needed, little cost.
TOKEN_PURGE_EVERY = 64
MAX_TOKEN_LENGTH = 255
TOKEN_CHUNK = 1_000  # 3 parameters each: far under every driver's limit
_INSERT_SEEN = (
    "INSERT INTO webhook_tokens (provider, token, seen_at) VALUES (?, ?, ?)"
    " ON CONFLICT (provider, token) DO NOTHING"
)
_FORGET = "DELETE FROM webhook_tokens WHERE seen_at < ?"


class TokenBook:
    """``webhooks.base.ReplayGuard`` that only notes the tokens while the adapter verifies;
    ``record`` inserts them with the events, in their transaction, and the unique (provider,
    token) index refuses a replay there (``ReplayError``): one statement, no look-up first."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, str, datetime]] = []

    def seen(self, provider: str, token: str, *, now: datetime) -> bool:
        token = _bounded(token)
        if any(p == provider and t == token for p, t, _ in self.pending):
            return True
        self.pending.append((provider, token, now))
        return False

    def record(self, sql: Sql) -> None:
        for provider, token, now in self.pending:
            if sql.run(_INSERT_SEEN, (provider, token, sql.ts(now))) == 0:
                raise ReplayError(f"{provider} token already used")
            if zlib.crc32(token.encode()) % TOKEN_PURGE_EVERY == 0:
                sql.run(_FORGET, (sql.ts(now - TOKEN_TTL),))


class RecentTokens:
    """The one-time tokens this worker accepted lately, to refuse a replay at once (406) even
    while its first delivery waits in the spool. Bounded (the oldest are forgotten first), so it
    is only the fast refusal: the unique index on ``webhook_tokens``, which the drainer fills
    in the events' transaction, is the one that holds across workers and restarts."""

    def __init__(self, capacity: int = 32_768) -> None:  # about 6 MB of recent tokens
        self.capacity = capacity
        # The oldest first. An OrderedDict forgets its oldest in constant time; a plain dict
        # would scan past the slots of every token deleted since its last resize, thousands
        # per request once full.
        self.tokens: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.lock = threading.Lock()  # a threaded server: two requests may evict at once

    def refuse_replay(self, book: TokenBook) -> None:
        for provider, token, _ in book.pending:
            if (provider, token) in self.tokens:
                raise ReplayError(f"{provider} token already used")

    def remember(self, book: TokenBook) -> None:
        if not book.pending:
            return
        with self.lock:
            for provider, token, _ in book.pending:
                self.tokens[(provider, token)] = None
            while len(self.tokens) > self.capacity:
                self.tokens.popitem(last=False)


def used_tokens(sql: Sql, tokens: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (provider, token) pairs are stored already: per provider, the unique
    (provider, token) index answers."""
    by_provider: dict[str, set[str]] = {}
    for provider, token in tokens:
        by_provider.setdefault(provider, set()).add(token)
    used: set[tuple[str, str]] = set()
    for provider, wanted in by_provider.items():
        names = sorted(wanted)
        for start in range(0, len(names), TOKEN_CHUNK):
            chunk = names[start : start + TOKEN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            query = f"SELECT token FROM webhook_tokens WHERE provider = ? AND token IN ({marks})"  # noqa: S608 - marks only
            used.update((provider, str(token)) for (token,) in sql.all(query, [provider, *chunk]))
    return used


def insert_tokens(sql: Sql, tokens: Sequence[tuple[str, str, datetime]]) -> set[tuple[str, str]]:
    """Insert spooled requests' tokens at once; the (provider, token) pairs that were new. A
    pair already stored (a replay, or a batch handed again after a crash) is not returned."""
    if not tokens:
        return set()
    fresh: set[tuple[str, str]] = set()
    for start in range(0, len(tokens), TOKEN_CHUNK):
        chunk = tokens[start : start + TOKEN_CHUNK]
        params = [value for provider, token, at in chunk for value in (provider, token, sql.ts(at))]
        returned = sql.all(
            f"INSERT INTO webhook_tokens (provider, token, seen_at) VALUES {sql.values(3, len(chunk))}"  # noqa: S608 - marks only
            " ON CONFLICT (provider, token) DO NOTHING RETURNING provider, token",
            params,
        )
        fresh.update((str(p), str(t)) for p, t in returned)
    sql.run(_FORGET, (sql.ts(max(at for _, _, at in tokens) - TOKEN_TTL),))
    return fresh


# --- the spool record of one request ---------------------------------------------------------

SPOOL_VERSION = 1
_KINDS = frozenset(get_args(Kind))
# ASCII: a provider's lone surrogate (valid JSON escape, invalid UTF-8) survives the line.
_SPOOL_JSON = json.JSONEncoder(separators=(",", ":"))


class SpooledRequest:
    """One journaled request: when it was received, its tokens and its events."""

    __slots__ = ("events", "received_at", "tokens")

    def __init__(
        self, received_at: datetime, tokens: list[tuple[str, str]], events: list[NormalizedEvent]
    ) -> None:
        self.received_at, self.tokens, self.events = received_at, tokens, events


def spool_record(received_at: datetime, book: TokenBook, events: Sequence[NormalizedEvent]) -> bytes:
    """One compact line: ``[1, received_at, [[provider, token]...], [event...]]``, each event as
    the fields ``NormalizedEvent`` holds, its raw payload as the JSON text to store."""
    # A batch's events share a few instants: each is formatted once (one event: no table).
    if len(events) == 1:
        instants = {events[0].occurred_at: events[0].occurred_at.isoformat()}
    else:
        instants = {at: at.isoformat() for at in {e.occurred_at for e in events}}
    fields = [
        [
            e.provider,
            e.kind,
            e.provider_event,
            e.dedupe_key,
            instants[e.occurred_at],
            e.email,
            e.contact_id,
            e.campaign_id,
            e.url,
            e.user_agent,
            e.raw_json if e.raw_json is not None else raw_text(e.raw),
        ]
        for e in events
    ]
    tokens = [[provider, token] for provider, token, _ in book.pending]
    line: str = _SPOOL_JSON.encode([SPOOL_VERSION, received_at.isoformat(), tokens, fields])
    return line.encode()


def read_spool_record(data: bytes) -> SpooledRequest:
    """The request a line holds; ``ValueError`` when it is not one this version wrote."""
    try:
        version, received, tokens, fields = json.loads(data)
        if version != SPOOL_VERSION:
            raise ValueError(f"unknown spool record version {version!r}")
        return SpooledRequest(
            _instant(received),
            [(_str(provider), _str(token)) for provider, token in tokens],
            _events(fields),
        )
    except (TypeError, KeyError, IndexError, AttributeError, RecursionError) as exc:
        raise ValueError(f"not a webhook spool record: {exc}") from exc


_NO_RAW: dict[str, Any] = {}  # spooled events carry their raw JSON text; nothing writes here


def _events(fields: list[Any]) -> list[NormalizedEvent]:
    """The events of a record, each field's type checked. One loop without a call per field:
    the drainer reads hundreds of events per line, and a batch's events share a few instants,
    each read once."""
    instants: dict[str, datetime] = {}
    events: list[NormalizedEvent] = []
    for row in fields:
        provider, kind, provider_event, key, occurred, email, contact, campaign, url, agent, raw = row
        if kind not in _KINDS:  # an unhashable kind raises TypeError: not a record either
            raise ValueError(f"unknown event kind {kind!r}")
        if not (
            type(provider) is str
            and type(provider_event) is str
            and type(key) is str
            and type(raw) is str
            and (email is None or type(email) is str)
            and (url is None or type(url) is str)
            and (agent is None or type(agent) is str)
            and (contact is None or type(contact) is int)
            and (campaign is None or type(campaign) is int)
        ):
            raise ValueError(f"a spooled event of unexpected field types: {key!r}")
        at = instants.get(occurred)
        if at is None:
            at = instants[occurred] = _instant(occurred)
        # Positional, in NormalizedEvent's order.
        events.append(
            NormalizedEvent(
                provider, kind, provider_event, key, at, email, contact, campaign, url, agent, _NO_RAW, raw
            )
        )
    return events


def _instant(value: Any) -> datetime:
    moment = datetime.fromisoformat(_str(value))
    if moment.tzinfo is None:
        raise ValueError("a spooled instant without its offset")
    return moment


def _str(value: Any) -> str:
    if type(value) is not str:
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value


def _bounded(token: str) -> str:
    if len(token) <= MAX_TOKEN_LENGTH:
        return token
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


@contextmanager
def writers_turn(sqlite_path: str | None) -> Iterator[None]:
    """Hold the write phase, up to commit, alone among this database's writers that use it.

    SQLite has a single writer, and its busy handler waits for the lock by sleeping with a
    growing back-off (1, 2, 5, 10… ms), which idles the CPU while the lock is already free. A
    kernel file lock wakes the next worker at once. PostgreSQL (no path) needs no turn."""
    if not sqlite_path or sqlite_path == ":memory:":
        yield
        return
    descriptor = _lock_descriptor(f"{sqlite_path}.writers.lock")
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_UN)


_LOCKS: dict[tuple[str, int], int] = {}
# A service writes one database; tests and tools open many in one process: keep a few.
MAX_LOCK_DESCRIPTORS = 4


def _lock_descriptor(path: str) -> int:
    """One open descriptor per database per process: flock belongs to the open file, so a
    descriptor inherited across fork would be shared by parent and child and exclude nothing."""
    key = (path, os.getpid())
    if key not in _LOCKS:
        while len(_LOCKS) >= MAX_LOCK_DESCRIPTORS:  # other databases' descriptors only
            os.close(_LOCKS.pop(next(iter(_LOCKS))))
        _LOCKS[key] = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    return _LOCKS[key]
