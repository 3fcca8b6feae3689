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
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from gatekeeper.register.delivery_apply import DeliveryResult
from gatekeeper.register.rawsql import Sql
from webhooks.base import ReplayError

__all__ = ["DeliveryResult", "TokenBook", "writers_turn"]

# Used tokens are kept longer than any adapter accepts a signature (Mailgun: 15 minutes).
TOKEN_TTL = timedelta(days=1)
# About one token in this many also forgets expired ones: no scheduler needed, little cost.
TOKEN_PURGE_EVERY = 64
MAX_TOKEN_LENGTH = 255
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
