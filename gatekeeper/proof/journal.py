"""The proof journal: an append-only, hash-chained record of every fact (RULES.md §6).

Theory of operation
-------------------
Each entry says *what happened to whom* by reference only: a ``kind`` (``consent``,
``objection``, ``suppression``, ``verdict_run``, ``anonymised``, ``archive_read``, ...), a
``subject_ref`` (``contact:12``, ``run:7``, ``suppression:3``), the stored fact it vouches for
(``fact_table``, ``fact_id``) and ``payload_digest``, a keyed digest (HMAC with the deployment's
hash key) of the fact's canonical encoding. ``entry_hash`` is a plain SHA-256 over the entry's
canonical encoding, which includes ``prev_hash``, the previous entry's hash in the same
register: anyone can recompute the chain, and only the key holder can forge a fact digest.

No clear personal data ever enters the journal. ``subject_hash`` is a keyed hash of the
contact's coordinate *salted per contact* (``journal_subjects``): it proves which coordinate a
fact was about while the contact exists; erasure deletes the salt, after which the hashes in the
chain are unlinkable, and the chain itself still verifies. The anonymised facts no longer match
their digests; ``verify`` accepts that only for a subject with an ``anonymised`` entry.

Appends are set-based (one ``executemany`` per batch) and serialised per register by a lock on
its ``journal_heads`` row (``FOR UPDATE`` on PostgreSQL; SQLite's single writer already holds
the database once the batch has written its facts). Services never commit.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gatekeeper.models import VerdictRun, utcnow
from gatekeeper.register.rawsql import Sql, ints
from gatekeeper.security import KeyedHasher
from gatekeeper.sqlbulk import create_temp, dialect_of, drop_temp, load_rows, read_json, read_ts
from gatekeeper.timeparse import isoformat

REGISTER = "main"
GENESIS = "0" * 64
# Event types as journal kinds; a consent given through a reconsent link is its answer.
EVENT_KINDS = {"opposition": "objection"}
CHUNK = 1_000  # ids per IN (...) query: far under every driver's parameter limit


@dataclass(frozen=True, slots=True)
class Fact:
    """Something to journal. ``coordinate`` ("email:x@y") feeds the salted subject hash."""

    kind: str
    subject_ref: str
    payload: Any
    fact_table: str | None = None
    fact_id: int | None = None
    contact_id: int | None = None
    coordinate: str | None = None
    # Read with the fact by a set-based caller (None: looked up or created at write time).
    salt: str | None = None


@dataclass(frozen=True, slots=True)
class Position:
    register: str
    seq: int
    entry_hash: str


@dataclass(slots=True)
class Head:
    register: str
    seq: int
    entry_hash: str


def canonical(value: Any) -> str:
    """One text per value: sorted keys, no spaces, UTF-8, datetimes as RFC 3339 UTC."""
    return _CANONICAL.encode(value)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return isoformat(value)
    raise TypeError(f"not canonical: {type(value).__name__}")


# Built once: json.dumps with non-default arguments builds a new encoder per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default)


def fact_digest(hasher: KeyedHasher, payload: Any) -> str:
    return hasher.coordinate("fact", canonical(payload))


def chain_hash(
    register: str,
    seq: int,
    at: datetime,
    kind: str,
    subject_ref: str,
    subject_hash: str | None,
    fact_table: str | None,
    fact_id: int | None,
    payload_digest: str,
    prev_hash: str,
) -> str:
    return _entry_hash(
        register,
        seq,
        isoformat(at),
        kind,
        subject_ref,
        subject_hash,
        fact_table,
        fact_id,
        payload_digest,
        prev_hash,
    )


def _entry_hash(
    register: str,
    seq: int,
    at: str | None,
    kind: str,
    subject_ref: str,
    subject_hash: str | None,
    fact_table: str | None,
    fact_id: int | None,
    payload_digest: str,
    prev_hash: str,
) -> str:
    """``chain_hash`` with the instant already in its canonical text (a batch shares one)."""
    encoded = canonical(
        [
            register,
            seq,
            at,
            kind,
            subject_ref,
            subject_hash,
            fact_table,
            fact_id,
            payload_digest,
            prev_hash,
        ]
    )
    return hashlib.sha256(encoded.encode()).hexdigest()


def lock_head(session: Session, register: str = REGISTER) -> Head:
    return lock_head_sql(Sql.of(session), register)


def append(
    session: Session,
    hasher: KeyedHasher,
    facts: Sequence[Fact],
    *,
    now: datetime | None = None,
    register: str = REGISTER,
) -> list[Position]:
    if not facts:
        return []
    return write(session, hasher, lock_head(session, register), facts, now=now)


def write(
    session: Session, hasher: KeyedHasher, head: Head, facts: Sequence[Fact], *, now: datetime | None = None
) -> list[Position]:
    """Chain ``facts`` after ``head`` (already locked) and store them in one executemany."""
    return write_sql(Sql.of(session), hasher, head, facts, now=now)


def lock_head_sql(sql: Sql, register: str = REGISTER) -> Head:
    """The register's head, locked until commit (PostgreSQL; SQLite has one writer), created
    at genesis the first time: one statement once the head exists."""
    lock = " FOR UPDATE" if sql.dialect == "postgresql" else ""
    select = f"SELECT seq, entry_hash FROM journal_heads WHERE register = ?{lock}"  # noqa: S608 - constant
    row = sql.one(select, (register,))
    if row is None:
        sql.run(
            "INSERT INTO journal_heads (register, seq, entry_hash) VALUES (?, 0, ?)"
            " ON CONFLICT (register) DO NOTHING",
            (register, GENESIS),
        )
        row = sql.one(select, (register,))
    return Head(register, int(row[0]), str(row[1]))


def write_sql(
    sql: Sql, hasher: KeyedHasher, head: Head, facts: Sequence[Fact], *, now: datetime | None = None
) -> list[Position]:
    """``write`` on a raw connection: the salts in one query, the entries in one executemany,
    the head in one update."""
    if not facts:
        return []
    # Whole seconds: the instant is hashed, and must read back identically on both databases.
    at = (now or utcnow()).replace(microsecond=0)
    salts = salts_sql(
        sql, {f.contact_id for f in facts if f.coordinate and f.salt is None and f.contact_id is not None}
    )
    stored_at, at_text = sql.ts(at), isoformat(at)
    rows, positions = [], []
    for fact in facts:
        salt = fact.salt or (salts.get(fact.contact_id) if fact.contact_id is not None else None)
        subject_hash = (
            hasher.coordinate("subject", f"{salt}:{fact.coordinate}") if salt and fact.coordinate else None
        )
        digest = fact_digest(hasher, fact.payload)
        seq = head.seq + 1
        entry_hash = _entry_hash(
            head.register,
            seq,
            at_text,
            fact.kind,
            fact.subject_ref,
            subject_hash,
            fact.fact_table,
            fact.fact_id,
            digest,
            head.entry_hash,
        )
        rows.append(
            (
                head.register,
                seq,
                stored_at,
                fact.kind,
                fact.subject_ref,
                subject_hash,
                fact.fact_table,
                fact.fact_id,
                digest,
                head.entry_hash,
                entry_hash,
            )
        )
        positions.append(Position(head.register, seq, entry_hash))
        head.seq, head.entry_hash = seq, entry_hash
    sql.many(JOURNAL_INSERT, rows)
    sql.run(
        "UPDATE journal_heads SET seq = ?, entry_hash = ? WHERE register = ?",
        (head.seq, head.entry_hash, head.register),
    )
    return positions


def salts_sql(sql: Sql, contact_ids: set[int]) -> dict[int, str]:
    """The salts of these contacts, creating the missing ones (random, one per contact; the
    caller holds the head lock, under which alone salts are created)."""
    if not contact_ids:
        return {}
    ids = sorted(contact_ids)
    found: dict[int, str] = {}
    for start in range(0, len(ids), CHUNK):
        some = ints(ids[start : start + CHUNK])
        query = f"SELECT contact_id, salt FROM journal_subjects WHERE contact_id IN ({some})"  # noqa: S608 - ints
        found.update((int(cid), str(salt)) for cid, salt in sql.all(query))
    missing = [(cid, secrets.token_hex(16)) for cid in ids if cid not in found]
    sql.many("INSERT INTO journal_subjects (contact_id, salt) VALUES (?, ?)", missing)
    return found | dict(missing)


def event_fact(payload: dict[str, Any], coordinate: str | None) -> Fact:
    """The fact of an event its writer knows (``event_payload``'s shape, id included), so it
    need not be read back: its contact's salt is looked up when written."""
    return Fact(
        event_kind(payload["type"], payload["data"]),
        f"contact:{payload['contact_id']}",
        payload,
        "event",
        payload["id"],
        payload["contact_id"],
        coordinate,
    )


def suppression_facts(sql: Sql, hasher: KeyedHasher, rows: Sequence[Sequence[Any]]) -> list[Fact]:
    """Facts of upserted suppression rows (``SUPPRESSION_COLUMNS``) that are new or whose date
    changed since last journaled, as ``record_suppressions`` decides."""
    payloads = sorted(map(suppression_payload, rows), key=lambda p: int(p["id"]))
    if not payloads:
        return []
    some = ints([p["id"] for p in payloads])
    journaled: dict[int, str] = dict(
        sql.all(
            "SELECT fact_id, payload_digest FROM journal WHERE fact_table = 'suppression'"  # noqa: S608 - ints
            f" AND fact_id IN ({some}) ORDER BY seq"
        )
    )
    return [
        Fact("suppression", f"suppression:{p['id']}", p, "suppression", p["id"])
        for p in payloads
        if journaled.get(p["id"]) != fact_digest(hasher, p)
    ]


JOURNAL_INSERT = (
    "INSERT INTO journal (register, seq, at, kind, subject_ref, subject_hash, fact_table, fact_id,"
    " payload_digest, prev_hash, entry_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def executemany(session: Session, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """Raw DBAPI executemany of tuples (SQLAlchemy with dicts costs 2.5x, PERFORMANCE.md)."""
    if not rows:
        return
    if dialect_of(session) == "postgresql":
        sql = sql.replace("?", "%s")
    cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.executemany(sql, rows)
    finally:
        cursor.close()


def new_salts(session: Session, contact_ids: Iterable[int]) -> dict[int, str]:
    """Create salts for contacts known to have none (the caller holds the head lock, under
    which alone salts are created)."""
    missing = [(cid, secrets.token_hex(16)) for cid in sorted(set(contact_ids))]
    executemany(session, "INSERT INTO journal_subjects (contact_id, salt) VALUES (?, ?)", missing)
    return dict(missing)


def select_in(session: Session, sql: str, ids: Sequence[Any]) -> list[Any]:
    rows: list[Any] = []
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        marks = ", ".join(f":i{n}" for n in range(len(chunk)))
        rows.extend(session.execute(text(sql.format(marks)), {f"i{n}": v for n, v in enumerate(chunk)}).all())
    return rows


# --- facts as canonical payloads (the verifier re-reads them the same way) ------------------

EVENT_COLUMNS = "e.id, e.contact_id, e.type, e.occurred_at, e.data, e.dedupe_key"


def event_payload(row: Sequence[Any]) -> dict[str, Any]:
    eid, contact_id, etype, occurred_at, data, dedupe = row[:6]
    return {
        "id": int(eid),
        "contact_id": int(contact_id),
        "type": etype,
        "occurred_at": read_ts(occurred_at),
        "data": read_json(data),
        "dedupe_key": dedupe,
    }


SUPPRESSION_COLUMNS = "s.id, s.coord_hash, s.coord_kind, s.reason, s.channels, s.occurred_at, s.origin"


def suppression_payload(row: Sequence[Any]) -> dict[str, Any]:
    sid, coord_hash, kind, reason, chans, occurred_at, origin = row[:7]
    return {
        "id": int(sid),
        "coord_hash": coord_hash,
        "coord_kind": kind,
        "reason": reason,
        "channels": chans,
        "occurred_at": read_ts(occurred_at),
        "origin": origin,
    }


RUN_COLUMNS = (
    "r.id, r.campaign_id, r.kind, r.as_of, r.policy_id, r.policy_version, r.recipients, r.allowed,"
    " r.blocked, r.duplicates, r.by_reason"
)


def run_payload(row: Sequence[Any]) -> dict[str, Any]:
    rid, campaign_id, kind, as_of, policy_id, version, recipients, allowed, blocked, duplicates, by_reason = (
        row[:11]
    )
    return {
        "id": int(rid),
        "campaign_id": campaign_id,
        "kind": kind,
        "as_of": read_ts(as_of),
        "policy": [policy_id, version],
        "counts": [int(recipients), int(allowed), int(blocked), int(duplicates)],
        "by_reason": read_json(by_reason) or {},
    }


def event_kind(etype: str, data: Mapping[str, Any]) -> str:
    if etype == "consent" and data.get("method") == "reconsent":
        return "reconsent_answered"
    return EVENT_KINDS.get(etype, etype)


def coordinate_of(email: str | None, phone: str | None, external_id: str | None) -> str | None:
    for kind, value in (("email", email), ("phone", phone), ("external_id", external_id)):
        if value:
            return f"{kind}:{value}"
    return None


# --- the hooks the register calls -------------------------------------------------------------


def record_events(session: Session, hasher: KeyedHasher, stage: str) -> int:
    """Journal the events of a staged batch not journaled yet (duplicates of stored facts were
    journaled when first stored). The head is locked first, so a concurrent batch's entries are
    committed and visible before this one looks."""
    head = lock_head(session)
    rows = session.execute(
        text(
            f"SELECT {EVENT_COLUMNS}, c.email, c.phone, c.external_id, js.salt FROM events e"  # noqa: S608
            f" JOIN {stage} s ON s.dedupe_key = e.dedupe_key JOIN contacts c ON c.id = e.contact_id"
            " LEFT JOIN journal_subjects js ON js.contact_id = e.contact_id"
            " WHERE NOT EXISTS (SELECT 1 FROM journal j WHERE j.fact_table = 'event' AND j.fact_id = e.id)"
            " ORDER BY e.id"
        )
    ).all()
    facts = _event_facts(session, rows)
    return len(write(session, hasher, head, facts))


SUPPRESSION_STAGE = "stage_journal_suppressions"


def record_suppressions(session: Session, hasher: KeyedHasher, keys: Iterable[tuple[str, str, str]]) -> int:
    """Journal the suppressions named by ``(coord_hash, reason, channels)`` that are new or whose
    date changed since last journaled (an upsert keeps the latest date)."""
    head = lock_head(session)
    create_temp(session, SUPPRESSION_STAGE, [("h", "text"), ("r", "text"), ("c", "text")])
    load_rows(session, SUPPRESSION_STAGE, [("h", "text"), ("r", "text"), ("c", "text")], keys)
    join = f" JOIN {SUPPRESSION_STAGE} k ON k.h = s.coord_hash AND k.r = s.reason AND k.c = s.channels"
    rows = session.execute(
        text(
            f"SELECT DISTINCT {SUPPRESSION_COLUMNS} FROM suppressions s{join}"  # noqa: S608
            " ORDER BY s.id"
        )
    ).all()
    journaled: dict[int, str] = dict(
        session.execute(
            text(
                f"SELECT j.fact_id, j.payload_digest FROM journal j"  # noqa: S608 - our table names only
                f" JOIN (SELECT DISTINCT s.id FROM suppressions s{join})"
                " t ON j.fact_table = 'suppression' AND j.fact_id = t.id ORDER BY j.seq"
            )
        ).all()
    )
    drop_temp(session, SUPPRESSION_STAGE)
    facts = [
        Fact("suppression", f"suppression:{p['id']}", p, "suppression", p["id"])
        for p in map(suppression_payload, rows)
        if journaled.get(p["id"]) != fact_digest(hasher, p)
    ]
    return len(write(session, hasher, head, facts))


def record_run(session: Session, hasher: KeyedHasher, run: VerdictRun) -> Position:
    row = session.execute(
        text(f"SELECT {RUN_COLUMNS} FROM verdict_runs r WHERE r.id = :id"),  # noqa: S608
        {"id": run.id},
    ).one()
    return append(session, hasher, [Fact("verdict_run", f"run:{run.id}", run_payload(row), "run", run.id)])[0]


def record_anonymised(
    session: Session,
    hasher: KeyedHasher,
    contact_ids: Iterable[int],
    *,
    reason: str,
    now: datetime | None = None,
) -> int:
    """Journal the anonymisation of contacts (once each) and forget their subject salts, so the
    subject hashes already in the chain can never be linked to them again. Idempotent: the
    purge job and the erasure right may both call it for the same contact."""
    ids = sorted(set(contact_ids))
    head = lock_head(session)
    done = (
        {
            int(r[0].split(":", 1)[1])
            for r in select_in(
                session,
                "SELECT subject_ref FROM journal WHERE kind = 'anonymised' AND subject_ref IN ({})",
                [f"contact:{i}" for i in ids],
            )
        }
        if ids
        else set()
    )
    todo = [i for i in ids if i not in done]
    at = now or utcnow()
    facts = [
        Fact("anonymised", f"contact:{cid}", {"contact_id": cid, "reason": reason, "at": at}) for cid in todo
    ]
    select_in(session, "DELETE FROM journal_subjects WHERE contact_id IN ({}) RETURNING contact_id", ids)
    return len(write(session, hasher, head, facts, now=now))


def record_other(
    session: Session,
    hasher: KeyedHasher,
    kind: str,
    subject_ref: str,
    payload: Mapping[str, Any],
    *,
    now: datetime | None = None,
) -> Position:
    """An entry about no stored fact: a rectification, a reconsent sent, an archive read, an
    access export. ``payload`` must hold references, never clear personal data: only its keyed
    digest is kept."""
    return append(session, hasher, [Fact(kind, subject_ref, dict(payload))], now=now)[0]


def record_pending_events(session: Session, hasher: KeyedHasher, *, limit: int = 5_000) -> int:
    """Journal up to ``limit`` stored events that no entry vouches for yet, oldest first: the
    catch-up for writers that insert facts outside ``append_events`` (the click fast path).
    Meant for a periodic task; returns how many it journaled (0: all caught up)."""
    head = lock_head(session)
    rows = session.execute(
        text(
            f"SELECT {EVENT_COLUMNS}, c.email, c.phone, c.external_id, js.salt FROM events e"  # noqa: S608
            " JOIN contacts c ON c.id = e.contact_id"
            " LEFT JOIN journal_subjects js ON js.contact_id = e.contact_id"
            " WHERE NOT EXISTS (SELECT 1 FROM journal j WHERE j.fact_table = 'event' AND j.fact_id = e.id)"
            " ORDER BY e.id LIMIT :n"
        ),
        {"n": limit},
    ).all()
    return len(write(session, hasher, head, _event_facts(session, rows)))


def _event_facts(session: Session, rows: Sequence[Any]) -> list[Fact]:
    """Facts of event rows (with their contact's coordinates and salt, read in the same join);
    salts missing from that join are created here at once, without a second look-up."""
    created = new_salts(session, {int(r[1]) for r in rows if r[9] is None and coordinate_of(*r[6:9])})
    facts: dict[int, Fact] = {}
    for row in rows:  # the same fact twice in one batch joins twice: keyed by event id
        facts.setdefault(int(row[0]), _event_fact(row, row[9] or created.get(int(row[1]))))
    return list(facts.values())


def _event_fact(row: Sequence[Any], salt: str | None) -> Fact:
    payload = event_payload(row)
    return Fact(
        event_kind(payload["type"], payload["data"]),
        f"contact:{payload['contact_id']}",
        payload,
        "event",
        payload["id"],
        payload["contact_id"],
        coordinate_of(*row[6:9]),
        salt,
    )


def record_pending_anonymisations(session: Session, hasher: KeyedHasher, *, limit: int = 5_000) -> int:
    """Journal contacts anonymised by a writer that did not say so (a purge run before it called
    ``record_anonymised``), with the reason the anonymiser left on the row."""
    rows = session.execute(
        text(
            "SELECT c.id, c.attributes, c.anonymised_at FROM contacts c WHERE c.anonymised_at IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM journal j WHERE j.kind = 'anonymised'"
            " AND j.subject_ref = 'contact:' || CAST(c.id AS VARCHAR(20))) ORDER BY c.id LIMIT :n"
        ),
        {"n": limit},
    ).all()
    by_reason: dict[str, list[int]] = {}
    for cid, attributes, _at in rows:
        reason = str((read_json(attributes) or {}).get("anonymised_reason", "unknown"))
        by_reason.setdefault(reason, []).append(int(cid))
    return sum(record_anonymised(session, hasher, ids, reason=reason) for reason, ids in by_reason.items())
