"""Bare webhook endpoints for bench/webhooks_ceiling.py: the least work that stores events durably
before answering, plus each step issue #6 mandates, written as cheaply as honestly possible.

Served by the same gunicorn setup as gatekeeper (2 sync workers), configured by environment:
``BARE_DB`` (the SQLite file), ``BARE_STEPS`` (comma-separated, cumulative), ``BARE_PUBLIC_KEY``
(SendGrid's, base64 DER), ``BARE_MAILGUN_KEY``, ``BARE_SPOOL`` (a spool file: singles append a
line to it instead of writing SQLite; ``python bench/_bare_webhook_app.py drain`` stores them).

What the steps do, per 500-event SendGrid batch (``/sendgrid``):
- ``ingest``: read the body, ``json.loads``, one ``executemany`` of the INGEST baseline's tuples
  ``ON CONFLICT DO NOTHING``, commit, 200: exactly what INGEST does, behind HTTP;
- ``verify``: ECDSA P-256 over timestamp + raw body before parsing, timestamp freshness;
- ``facts``: a register fact per event with an effect (click, open, unsubscribe) for the
  contact its ``gk_contact`` names, unique per provider event (``ON CONFLICT DO NOTHING``),
  and a suppression upsert per unsubscribe, hard bounce and complaint address;
- ``journal``: one hash-chained row per new fact and per suppression (HMAC-SHA256 digest of the
  fact, SHA-256 of the entry with the previous hash), the head row updated;
- ``clocks``: per counting click, the contact's anchor and indexed deadline moved forward.
Shortcuts that only flatter the ceiling: the contact is trusted from ``gk_contact`` (no match by
address, no existence check), no scanner rule, no per-contact salted subject hash. New rows
are found by rowid: SQLite has one writer, so a transaction's rows are those above the largest
rowid it saw first. Writers take turns on a kernel file lock (``flock``), as gatekeeper does:
SQLite's busy handler sleeps with a back-off while the lock is free.

Singles (``/mailgun``): ``json.loads``, HMAC-SHA256 of timestamp + token, freshness (alone with
``BARE_STEPS=verify``: stored nowhere, the floor of any verifying endpoint), then either
the token (unique: a replay is refused with 406) and the raw event in one transaction, or, with
``BARE_SPOOL``, a worker-local refusal of recent tokens and one ``os.write`` of the line; the
drainer inserts the tokens and events in transactions of about 512 events.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

StartResponse = Callable[..., Any]
FRESH_SECONDS = 900  # signed timestamps further off are refused (Mailgun adapter: 15 minutes)
PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000")
THREE_YEARS = 3 * 365 * 86_400  # the prospect's retention period from its last interest
DRAIN_EVENTS = 512
JOURNAL_KEY = b"bench-journal-key"
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, dedupe_key TEXT NOT NULL UNIQUE,"
    " kind TEXT, email TEXT, occurred_at INTEGER, raw TEXT)",
    "CREATE TABLE IF NOT EXISTS tokens (id INTEGER PRIMARY KEY, token TEXT NOT NULL UNIQUE, seen_at INTEGER)",
    "CREATE TABLE IF NOT EXISTS facts (id INTEGER PRIMARY KEY, contact_id INTEGER NOT NULL, type TEXT,"
    " occurred_at INTEGER, data TEXT, dedupe_key TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS suppressions (id INTEGER PRIMARY KEY, address TEXT NOT NULL UNIQUE,"
    " reason TEXT, at INTEGER)",
    "CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY, kind TEXT, subject_ref TEXT,"
    " fact_id INTEGER, payload_digest TEXT, prev_hash TEXT, entry_hash TEXT)",
    "CREATE TABLE IF NOT EXISTS journal_head (id INTEGER PRIMARY KEY, seq INTEGER, entry_hash TEXT)",
    "CREATE TABLE IF NOT EXISTS contacts (id INTEGER PRIMARY KEY, email TEXT UNIQUE,"
    " anchor_at INTEGER, deadline INTEGER)",
    "CREATE INDEX IF NOT EXISTS contacts_deadline ON contacts (deadline)",
)
INSERT_EVENT = (
    "INSERT INTO events (dedupe_key, kind, email, occurred_at, raw) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (dedupe_key) DO NOTHING"
)
INSERT_SEEN = "INSERT INTO tokens (token, seen_at) VALUES (?, ?) ON CONFLICT (token) DO NOTHING"
INSERT_FACT = (
    "INSERT INTO facts (contact_id, type, occurred_at, data, dedupe_key) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (dedupe_key) DO NOTHING"
)
UPSERT_SUPPRESSION = (
    "INSERT INTO suppressions (address, reason, at) VALUES (?, ?, ?) ON CONFLICT (address)"
    " DO UPDATE SET reason = excluded.reason, at = excluded.at WHERE excluded.at > suppressions.at"
)
INSERT_JOURNAL = (
    "INSERT INTO journal (seq, kind, subject_ref, fact_id, payload_digest, prev_hash, entry_hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
MOVE_CLOCK = (
    "UPDATE contacts SET anchor_at = ?1, deadline = ?1 + ?2 WHERE id = ?3"
    " AND (anchor_at IS NULL OR anchor_at < ?1)"
)
FACT_TYPES = {"click": "interest", "open": "open", "unsubscribe": "opposition"}
SUPPRESSING = {"unsubscribe": "unsubscribe", "bounce": "hard_bounce", "spamreport": "complaint"}


def connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in PRAGMAS:
        conn.execute(f"PRAGMA {pragma}")
    return conn


def create(path: str, contacts: Iterable[tuple[int, str]]) -> None:
    conn = connect(path)
    for statement in SCHEMA:
        conn.execute(statement)
    with conn:
        conn.executemany("INSERT INTO contacts (id, email) VALUES (?, ?)", contacts)
        conn.execute("INSERT INTO journal_head VALUES (1, 0, ?)", ("0" * 64,))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


class Bare:
    def __init__(self) -> None:
        self.pid = -1
        self.recent: dict[str, None] = {}

    def _configure(self) -> None:
        self.steps = set(filter(None, os.environ.get("BARE_STEPS", "ingest").split(",")))
        self.db = os.environ["BARE_DB"]
        self.spool = os.environ.get("BARE_SPOOL")
        key = os.environ.get("BARE_PUBLIC_KEY")
        loaded = serialization.load_der_public_key(base64.b64decode(key)) if key else None
        self.public_key = loaded if isinstance(loaded, ec.EllipticCurvePublicKey) else None
        self.mailgun_key = os.environ.get("BARE_MAILGUN_KEY", "").encode()

    def _open(self) -> None:
        """Per worker, after gunicorn's fork: a connection, the writers' lock, the spool."""
        if self.pid == os.getpid():
            return
        self.pid = os.getpid()
        self._configure()
        self.conn = connect(self.db)
        self.lock = os.open(self.db + ".writers", os.O_RDWR | os.O_CREAT, 0o600)
        if self.spool:
            self.spool_fd = os.open(self.spool, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        self._open()
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        if environ["PATH_INFO"].endswith("/sendgrid"):
            status, answer = self.batch(environ, body)
        else:
            status, answer = self.single(body)
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))])
        return [answer]

    # --- batched: SendGrid ------------------------------------------------------------------

    def batch(self, environ: dict[str, Any], body: bytes) -> tuple[str, bytes]:
        if "verify" in self.steps and not self.signed(environ, body):
            return "401 Unauthorized", b'{"error":"signature"}'
        events = json.loads(body)
        rows = [(e["sg_event_id"], e["event"], e.get("email"), e["timestamp"], json.dumps(e)) for e in events]
        with self.turn():
            self.conn.executemany(INSERT_EVENT, rows)
            if "facts" in self.steps:
                effects(self.conn, self.steps, [sendgrid_effect(e) for e in events])
        return "200 OK", b'{"received":%d}' % len(rows)

    def signed(self, environ: dict[str, Any], body: bytes) -> bool:
        stamp = environ.get("HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP", "")
        signature = environ.get("HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE", "")
        if self.public_key is None or not stamp.isdigit() or abs(time.time() - int(stamp)) > FRESH_SECONDS:
            return False
        try:
            self.public_key.verify(
                base64.b64decode(signature), stamp.encode() + body, ec.ECDSA(hashes.SHA256())
            )
        except (InvalidSignature, ValueError):
            return False
        return True

    # --- single: Mailgun --------------------------------------------------------------------

    def single(self, body: bytes) -> tuple[str, bytes]:
        posted = json.loads(body)
        sig, data = posted["signature"], posted["event-data"]
        token, stamp = sig["token"], sig["timestamp"]
        expected = hmac.new(self.mailgun_key, (stamp + token).encode(), hashlib.sha256).hexdigest()
        if (
            not hmac.compare_digest(expected, sig["signature"])
            or abs(time.time() - float(stamp)) > FRESH_SECONDS
        ):
            return "401 Unauthorized", b'{"error":"signature"}'
        row = (data["id"], data["event"], data.get("recipient"), int(data["timestamp"]), json.dumps(data))
        if "ingest" not in self.steps:  # the floor: verified, parsed, stored nowhere (not durable)
            return "200 OK", b'{"received":1}'
        if self.spool:
            if token in self.recent:
                return "406 Not Acceptable", b'{"error":"replayed"}'
            line = [token, int(stamp), row, mailgun_effect(data)]
            os.write(self.spool_fd, json.dumps(line).encode() + b"\n")
            self.recent[token] = None
            if len(self.recent) > 32_768:
                del self.recent[next(iter(self.recent))]
            return "200 OK", b'{"received":1,"queued":1}'
        with self.turn() as conn:
            if conn.execute(INSERT_SEEN, (token, int(stamp))).rowcount == 0:
                conn.execute("ROLLBACK")
                return "406 Not Acceptable", b'{"error":"replayed"}'
            conn.execute(INSERT_EVENT, row)
            if "facts" in self.steps:
                effects(conn, self.steps, [mailgun_effect(data)])
        return "200 OK", b'{"received":1,"stored":1}'

    def turn(self) -> _Turn:
        return _Turn(self.conn, self.lock)


class _Turn:
    """The write transaction under the writers' lock; committed at the end unless rolled back."""

    def __init__(self, conn: sqlite3.Connection, lock: int) -> None:
        self.conn, self.lock = conn, lock

    def __enter__(self) -> sqlite3.Connection:
        fcntl.flock(self.lock, fcntl.LOCK_EX)
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind: object, *_: object) -> None:
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK" if kind else "COMMIT")
        finally:
            fcntl.flock(self.lock, fcntl.LOCK_UN)


# What the effects need of an event: (event id, kind as SendGrid names it, contact id or None,
# address, timestamp, url, user agent).
Effect = tuple[str, str, Any, str | None, int, str | None, str | None]
MAILGUN_KINDS = {
    "clicked": "click",
    "opened": "open",
    "unsubscribed": "unsubscribe",
    "failed": "bounce",
    "complained": "spamreport",
}


def sendgrid_effect(e: dict[str, Any]) -> Effect:
    return (
        e["sg_event_id"],
        e["event"],
        e.get("gk_contact"),
        e.get("email"),
        e["timestamp"],
        e.get("url"),
        e.get("useragent"),
    )


def mailgun_effect(data: dict[str, Any]) -> Effect:
    agent = data.get("client-info", {}).get("user-agent")
    return (
        data["id"],
        MAILGUN_KINDS.get(data["event"], data["event"]),
        data.get("user-variables", {}).get("gk_contact"),
        data.get("recipient"),
        int(data["timestamp"]),
        data.get("url"),
        agent,
    )


def effects(conn: sqlite3.Connection, steps: set[str], events: list[Effect]) -> None:
    """Facts, suppressions, their journal entries and the clocks of the new events."""
    (before,) = conn.execute("SELECT coalesce(max(id), 0) FROM facts").fetchone()
    facts = [
        (int(cid), FACT_TYPES[kind], at, json.dumps({"url": url, "ua": ua}), key)
        for key, kind, cid, _, at, url, ua in events
        if kind in FACT_TYPES and cid is not None
    ]
    conn.executemany(INSERT_FACT, facts)
    suppressions = [
        (email, SUPPRESSING[kind], at)
        for _, kind, _, email, at, _, _ in events
        if kind in SUPPRESSING and email
    ]
    conn.executemany(UPSERT_SUPPRESSION, suppressions)
    new = conn.execute(
        "SELECT id, contact_id, type, occurred_at, data FROM facts WHERE id > ?", (before,)
    ).fetchall()
    if "journal" in steps:
        entries = [
            ("event", f"contact:{cid}", fid, f"{fid}|{cid}|{kind}|{at}|{data}")
            for fid, cid, kind, at, data in new
        ]
        entries += [
            ("suppression", f"suppression:{address}", None, f"{address}|{reason}|{at}")
            for address, reason, at in suppressions
        ]
        journal(conn, entries, int(time.time()))
    if "clocks" in steps:
        latest: dict[int, int] = {}
        for _, cid, kind, at, _ in new:
            if kind == "interest":
                latest[cid] = max(latest.get(cid, at), at)
        conn.executemany(MOVE_CLOCK, [(at, THREE_YEARS, cid) for cid, at in latest.items()])


def journal(conn: sqlite3.Connection, entries: list[tuple[str, str, int | None, str]], now: int) -> None:
    seq, prev = conn.execute("SELECT seq, entry_hash FROM journal_head WHERE id = 1").fetchone()
    rows = []
    for kind, subject, fact_id, payload in entries:
        seq += 1
        digest = hmac.new(JOURNAL_KEY, payload.encode(), hashlib.sha256).hexdigest()
        entry = hashlib.sha256(f"{seq}|{now}|{kind}|{subject}|{fact_id}|{digest}|{prev}".encode()).hexdigest()
        rows.append((seq, kind, subject, fact_id, digest, prev, entry))
        prev = entry
    conn.executemany(INSERT_JOURNAL, rows)
    conn.execute("UPDATE journal_head SET seq = ?, entry_hash = ? WHERE id = 1", (seq, prev))


def drain(spool: str, db: str, done: str, steps: str) -> None:
    """Store the spooled singles: tokens (a replay's events dropped) and raw events, about
    ``DRAIN_EVENTS`` per transaction; writes the spool offset reached to ``done`` after each."""
    conn, offset, rest, wanted = connect(db), 0, b"", set(steps.split(","))
    lock = os.open(db + ".writers", os.O_RDWR | os.O_CREAT, 0o600)
    with open(spool, "ab+") as fh:
        while True:
            fh.seek(offset)
            data = rest + fh.read()
            offset = fh.tell()
            cut = data.rfind(b"\n") + 1
            lines, rest = data[:cut].splitlines(), data[cut:]
            for start in range(0, len(lines), DRAIN_EVENTS):
                records = [json.loads(line) for line in lines[start : start + DRAIN_EVENTS]]
                with _Turn(conn, lock):
                    kept = []
                    for token, stamp, row, effect in records:
                        if conn.execute(INSERT_SEEN, (token, stamp)).rowcount:  # else a replay: dropped
                            conn.execute(INSERT_EVENT, row)
                            kept.append(tuple(effect))
                    if "facts" in wanted:
                        effects(conn, wanted, kept)
            with open(done + ".tmp", "w") as out:
                out.write(str(offset - len(rest)))
            os.replace(done + ".tmp", done)
            if not lines:
                time.sleep(0.05)


app = Bare()  # configured from the environment in each worker, at its first request

if __name__ == "__main__" and sys.argv[1:2] == ["drain"]:
    drain(*sys.argv[2:6])
