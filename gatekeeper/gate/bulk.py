"""Deciding a campaign list in bulk: the same verdicts as ``engine.Decider``, fewer steps a row.

Theory of operation
-------------------
``engine.Decider`` is the reference: it reads every column the rules may need and builds a
memo key per row. A list of a million rows mostly repeats a few thousand situations, so this
path reads less and keys coarser-grained work on what is shared:

1. The coordinates of a chunk are normalised together: for e-mail one regular expression
   checks the whole chunk against ``normalize``'s own fast path; a chunk it does not accept
   goes through ``recipients.parse_value`` row by row.
2. One statement per chunk reads, per contact, its id, its keyed hashes and one text ``facts``
   built by the database: the gate profile key, the date comparisons, the contact's reachable
   coordinates and, when the rules read them (calls, contracts), the stored instants.
3. The active suppressions of the channel are read once per run when the list is large next to
   the suppressions table (else per chunk, by hash); a recipient's suppressions are the same
   canonical string the reference builds (``engine.suppression_key``).
4. Each row's key holds the address flags, ``facts``, the suppressions (and, when an
   objection could be lifted by a newer consent, the instants) and the call attempts: at least
   everything the reference key holds, so equal keys have equal verdicts. A key seen for the
   first time is decided by the reference (``Decider.decide_one``) on the full contact row.
"""

from __future__ import annotations

import queue
import re
import sqlite3
import threading
from collections import Counter, deque
from collections.abc import Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from gatekeeper.domain import Campaign, Verdict, classify_email
from gatekeeper.gate.engine import LIFTABLE, Decider, suppression_key
from gatekeeper.gate.listread import Chunk, Written
from gatekeeper.gate.probe import ContactRow, RegisterProbe
from gatekeeper.gate.recipients import Recipient, parse_value
from gatekeeper.register.context import RegisterContext

# normalize.normalise_email's fast path for a whole chunk joined by newlines: the same address
# pattern and refused special-use TLDs (the length limit and the "--" test are made on the
# chunk). Possessive where no backtracking could find a match: atext holds no "." nor "@".
_ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]"
_SPECIAL = "arpa|invalid|local|localhost|onion|test|example"
_ONE = (
    rf"{_ATEXT}++(?:\.{_ATEXT}++)*+@(?:[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\.)++"
    rf"(?!(?:{_SPECIAL})(?:\n|\Z))[a-z]{{2,63}}"
)
_EMAILS = re.compile(rf"{_ONE}(?:\n{_ONE})*+")
_MAX_EMAIL = 254
# Suppressions are read once per run when the list has at least this many rows per
# suppression of the register (a per-chunk probe costs a few times more per hash than a read).
PRELOAD_RATIO = 0.25
PRELOAD_MAX = 2_000_000  # beyond this many suppressions the per-chunk probe keeps memory flat


def _flag(condition: str) -> str:
    return f"CASE WHEN {condition} THEN '1' ELSE '0' END"


def _facts_sql(postgres: bool, phone_like: bool) -> str:
    """One text per contact holding everything of the reference key except the suppressions."""
    contracts = (
        "json_array_length(instants->'contracts')"
        if postgres
        else "json_array_length(instants, '$.contracts')"
    )
    instants = "instants::text" if postgres else "instants"
    when = "instants IS NOT NULL" + ("" if phone_like else f" AND COALESCE({contracts}, -1) <> 0")
    flags = " || ".join(
        _flag(c)
        for c in (
            "deadline IS NULL",
            "deadline <= {p}",
            "reconsent_at <= {p}",
            "deadline <= {p}",
            "refused_at IS NOT NULL",
            "anonymised_at IS NOT NULL",
            "email IS NOT NULL",
            "phone IS NOT NULL",
        )
    )
    return f"profile_key || '|' || {flags} || CASE WHEN {when} THEN '|' || {instants} ELSE '' END"


class ChunkVerdicts(NamedTuple):
    chunk: Chunk
    picked: Sequence[int | None]  # per record: its verdict in BulkDecider.written, None if not written
    contact_ids: list[int | None]  # per record: the contact it names, when written and known
    recipients: int  # the chunk's records that name a recipient (repeats included)


class BulkDecider:
    """Decides the records of one list, chunk by chunk, for one campaign at one instant."""

    def __init__(
        self,
        session: Session,
        ctx: RegisterContext,
        campaign: Campaign,
        as_of: datetime,
        kind: str,
        *,
        chunk: int,
        expected_rows: int,
        parallel: bool = True,
    ) -> None:
        self.ref = ref = Decider(session, ctx, campaign, as_of, chunk=chunk)
        self.session, self.parallel = session, parallel
        self.want_ids = True  # the contact of each record (for proof items and links)
        self.ctx, self.kind, self.region = ctx, kind, ctx.region
        self.postgres = ref.probe.postgres
        self.conn = ref.probe.conn
        p = "%s" if self.postgres else "?"
        facts = _facts_sql(self.postgres, ref.phone_like).format(p=p)
        columns = f"{kind}, id, email_hash, phone_hash, {facts}"
        if self.postgres:
            # One index lookup per value whatever the statistics say: without them (a register
            # just imported, autovacuum off) the planner read the whole table for every chunk.
            # OFFSET 0 keeps the subquery from being flattened into a hash join.
            self.contacts_sql = (
                f"SELECT c.* FROM unnest(%s::text[]) AS v(value) CROSS JOIN LATERAL"  # noqa: S608 - constants
                f" (SELECT {columns} FROM contacts WHERE {kind} = v.value OFFSET 0) AS c"
            )
        else:
            self.contacts_sql = f"SELECT {columns} FROM contacts WHERE {kind} IN "  # noqa: S608 - constants
        self.usable = kind in ref.usable
        self.seen: set[str] = set()
        self.total = self.duplicates = 0
        self.memo: dict[Any, int] = {}
        self.written: list[Written] = []
        self.verdicts: list[Verdict] = []
        self.counts: Counter[int] = Counter()
        self.delimiter = ","
        self.suppressions = self._preload(expected_rows)
        self.single = {h: ";".join(sorted(e)) for h, e in (self.suppressions or {}).items()}
        generic, personal = ctx.policy.generic_local_parts, ctx.policy.personal_mailbox_domains
        self.special = _special_addresses(generic, personal)
        self.generic = _special_addresses(generic, ())
        self.personal = re.compile(rf"@(?:{_alternatives(personal)})$", re.MULTILINE)
        self.lock = threading.Lock()  # one statement at a time on the connection

    # -- the chunks ------------------------------------------------------------------------

    def run(self, chunks: Iterable[Chunk], index: int) -> Generator[ChunkVerdicts, None, None]:
        """The verdicts of each chunk, in order.

        The register is read for the next chunks on probe threads while the current one is
        keyed and written: both drivers release the GIL while the database works (SQLite in
        this process, PostgreSQL in its server). A chunk is read on whichever lane is free (the
        session's connection, and a second one when the session has written nothing, see
        _second_connection); a lane runs one statement at a time (its lock)."""
        lanes = [_Lane(self.conn, self.ref.probe, self.lock)]
        extra = self._second_connection()
        if extra is not None:
            conn = extra.driver_connection
            probe = RegisterProbe(self.session, self.ref.campaign.channel, conn)
            lanes.append(_Lane(conn, probe, threading.Lock()))
        free: queue.SimpleQueue[_Lane] = queue.SimpleQueue()
        for lane in lanes:
            free.put(lane)
        pending: deque[_Pending] = deque()
        try:
            with ThreadPoolExecutor(max_workers=len(lanes), thread_name_prefix="gate-probe") as pool:
                try:
                    for chunk in chunks:
                        values, candidates = self._values(chunk, index)
                        before = self.total
                        fresh, slots = self._fresh(values)
                        gathered = pool.submit(self._gather, fresh, free)
                        if len(pending) == len(lanes):
                            yield self._finish(pending.popleft())
                        pending.append(
                            _Pending(chunk, fresh, slots, candidates, self.total - before, gathered)
                        )
                    while pending:
                        yield self._finish(pending.popleft())
                finally:
                    for work in pending:
                        work.gathered.cancel()
        finally:
            if extra is not None:
                extra.close()

    def _second_connection(self) -> Any:
        """A second connection to read the register with (closed by ``run``), or None. Only
        when the session has written nothing yet (a second connection would not see those
        writes) and the database is shared (not an in-memory SQLite): both drivers read
        committed data statement by statement already, so it reads what the first would."""
        if not self.parallel:
            return None
        bind = self.session.get_bind()
        engine = bind if isinstance(bind, Engine) else bind.engine
        if self.postgres:
            if self._fetch("SELECT txid_current_if_assigned()", ())[0][0] is not None:
                return None
            return engine.raw_connection()  # pooled; the pool rolls it back when it is closed
        database = engine.url.database
        if self.conn.in_transaction or database in (None, "", ":memory:"):
            return None
        return _SqliteReader(database)

    def _gather(self, fresh: list[str | None], free: queue.SimpleQueue[_Lane]) -> _Gathered:
        """What the register says about a chunk's first occurrences (on a probe thread, on a
        lane taken from ``free`` and given back)."""
        lane = free.get()
        try:
            return self._gather_on(fresh, lane)
        finally:
            free.put(lane)

    def _gather_on(self, fresh: list[str | None], lane: _Lane) -> _Gathered:
        with lane.lock:
            found = self._contacts([v for v in fresh if v], lane.conn)
            named = [found.get(v) if v else None for v in fresh]
            supps = self._supps(fresh, named, lane.probe)
            attempts = self._attempts(named, lane.probe)
            return _Gathered(named, supps, attempts, self._lift_instants(named, supps, lane.conn))

    def _finish(self, work: _Pending) -> ChunkVerdicts:
        named, supps, attempts, lifted = work.gathered.result()
        fresh = work.fresh
        keys = self._keys(fresh, named, supps, attempts, lifted, work.candidates)
        memo = self.memo
        if not all(map(memo.__contains__, keys)):
            missing = {k: i for i, k in enumerate(keys) if k not in memo}
            with self.lock:
                self._decide_missing(missing, fresh, named, supps, attempts)
        picked: list[int] = list(map(memo.__getitem__, keys))
        self.counts.update(picked)
        slots = work.slots
        ids = [None if c is None else c[1] for c in named] if self.want_ids else []
        if len(slots) == len(fresh):  # no repeat, no blank record: one verdict a record
            return ChunkVerdicts(work.chunk, picked, ids or [None] * len(slots), work.recipients)
        return ChunkVerdicts(
            work.chunk,
            [picked[s] if s >= 0 else None for s in slots],
            [ids[s] if s >= 0 else None for s in slots] if ids else [None] * len(slots),
            work.recipients,
        )

    def _values(self, chunk: Chunk, index: int) -> tuple[Sequence[str | None], set[str] | None]:
        """Each record's normalised coordinate (None when invalid, "" for a blank record) and,
        for a chunk of plain addresses, the only ones that may be generic or personal."""
        cells = chunk.cells(index)
        if self.kind == "email":
            joined = "\n".join(cells).lower()
            if _EMAILS.fullmatch(joined) and joined.count("\n") == len(cells) - 1 and "--" not in joined:
                plain = joined.split("\n")
                if max(map(len, plain)) <= _MAX_EMAIL:
                    return plain, self._candidates(joined)
        kind, region = self.kind, self.region
        values = [
            (parse_value(0, kind, cell, region).value if _filled(r) else "")
            for r, cell in zip(chunk.rows, cells, strict=True)
        ]
        return values, None

    def _candidates(self, joined: str) -> set[str]:
        """The plain addresses of a chunk that classify_email may not call "other" (the others
        are: see _special_addresses); most chunks have no personal mailbox domain at all."""
        if self.personal.search(joined) is None:
            return set(self.generic.findall(joined))
        return set(self.special.findall(joined))

    def _fresh(self, values: Sequence[str | None]) -> tuple[list[str | None], list[int]]:
        """The first occurrences in order (invalid ones included, each its own recipient), and
        per record its position among them (-1 for a repeat or a blank record)."""
        seen = self.seen
        fresh: list[str | None] = []
        slots: list[int] = []
        repeats = 0
        for v in values:
            if v:
                if v in seen:
                    slots.append(-1)
                    repeats += 1
                    continue
                seen.add(v)
            elif v == "":
                slots.append(-1)
                continue
            slots.append(len(fresh))
            fresh.append(v)
        self.total += len(fresh) + repeats
        self.duplicates += repeats
        return fresh, slots

    def _contacts(self, values: Sequence[str], conn: Any) -> dict[str, tuple[Any, ...]]:
        """Coordinate -> (coordinate, id, email_hash, phone_hash, facts)."""
        if not values:
            return {}
        ref = self.ref
        if self.postgres:
            sql, params = self.contacts_sql, [list(values), ref.as_of_v, ref.as_of_v, ref.send_v]
        else:
            marks = ",".join("?" * len(values))
            sql, params = self.contacts_sql + f"({marks})", [ref.as_of_v, ref.as_of_v, ref.send_v, *values]
        return {row[0]: row for row in self._fetch(sql, params, conn)}

    def _fetch(self, sql: str, params: Sequence[Any], conn: Any = None) -> list[Any]:
        cur = (conn or self.conn).cursor()
        try:
            cur.execute(sql, params)
            rows: list[Any] = cur.fetchall()
        finally:
            cur.close()
        return rows

    def _supps(
        self, fresh: list[str | None], named: list[tuple[Any, ...] | None], probe: RegisterProbe
    ) -> list[str | None]:
        """Each recipient's suppressions as the reference's canonical string."""
        if self.suppressions is not None:
            if not self.suppressions:
                return [None] * len(fresh)
            # Most recipients are a contact found by its own coordinate with one stored hash:
            # its string was made once, when the suppressions were read.
            found, single = self.suppressions, self.single.get
            own, other = (2, 3) if self.kind == "email" else (3, 2)
            return [
                single(c[own]) if c is not None and c[own] and not c[other] else self._supp(found, v, c)
                for v, c in zip(fresh, named, strict=True)
            ]
        hashes = [self._hashes(v, c) for v, c in zip(fresh, named, strict=True)]
        found = probe.suppressions(self.ref.as_of_v, {h for hs in hashes for h in hs})
        return [suppression_key(found, hs) if hs and found else None for hs in hashes]

    def _supp(self, found: dict[str, list[str]], v: str | None, c: tuple[Any, ...] | None) -> str | None:
        hashes = self._hashes(v, c)
        return suppression_key(found, hashes) if hashes else None

    def _hashes(self, v: str | None, c: tuple[Any, ...] | None) -> tuple[str, ...]:
        """As Decider._hashes: the contact's stored hashes, and the recipient's own coordinate
        hashed when no stored hash stands for it."""
        stored = () if c is None else tuple(h for h in (c[2], c[3]) if h)
        if v is None or self.kind == "external_id":
            return stored
        if c is not None and (c[2] if self.kind == "email" else c[3]):
            return stored
        return (self.ctx.hasher.coordinate(self.kind, v), *stored)

    def _attempts(self, named: list[tuple[Any, ...] | None], probe: RegisterProbe) -> dict[int, int]:
        if not self.ref.phone_like:
            return {}
        return probe.attempts(self.ref.since_v, self.ref.send_v, {c[1] for c in named if c})

    def _keys(
        self,
        fresh: list[str | None],
        named: list[tuple[Any, ...] | None],
        supps: list[str | None],
        attempts: dict[int, int],
        lifted: dict[int, Any],
        candidates: set[str] | None,
    ) -> list[Any]:
        address = self._address
        if candidates is not None and not lifted and not attempts:
            # The common chunk: plain addresses, most of them "other" (see _special_addresses).
            plain = (int(self.usable), 0, 0)
            keys: list[Any] = [
                (plain if v not in candidates else address(v, candidates), c[4], s)
                if c is not None and c[4] is not None
                else self._key(v, c, s, attempts, lifted, candidates)
                for v, c, s in zip(fresh, named, supps, strict=True)
            ]
            return keys
        return [
            self._key(v, c, s, attempts, lifted, candidates)
            for v, c, s in zip(fresh, named, supps, strict=True)
        ]

    def _key(
        self,
        v: str | None,
        c: tuple[Any, ...] | None,
        s: str | None,
        attempts: dict[int, int],
        lifted: dict[int, Any],
        candidates: set[str] | None,
    ) -> tuple[Any, ...]:
        """A recipient's memo key: at least everything the reference key holds. Its shape
        tells the cases apart: (address, suppressions) for an unknown recipient; (address,
        facts, suppressions) for a contact whose instants and attempts play no part; else
        (address, facts, suppressions, instants, attempts)."""
        a = self._address(v, candidates)
        if c is None:
            return (a, s)
        # No facts: a contact without a gate profile, left to the reference every time.
        facts = c[4] if c[4] is not None else ("contact", c[1])
        instants, count = lifted.get(c[1]), min(attempts.get(c[1], 0), 99)
        if instants is None and count == 0:
            return (a, facts, s)
        return (a, facts, s, instants, count)

    def _lift_instants(
        self, named: list[tuple[Any, ...] | None], supps: list[str | None], conn: Any
    ) -> dict[int, Any]:
        """The stored instants of contacts with an objection: a newer consent may lift it, so
        their consents are part of the key (the reference key holds them then too)."""
        ids = [c[1] for c, s in zip(named, supps, strict=True) if c is not None and s and LIFTABLE in s]
        if not ids:
            return {}
        instants = "instants::text" if self.postgres else "instants"
        if self.postgres:
            sql, params = f"SELECT id, {instants} FROM contacts WHERE id = ANY(%s)", [ids]  # noqa: S608 - constants
        else:
            sql, params = f"SELECT id, {instants} FROM contacts WHERE id IN ({','.join('?' * len(ids))})", ids  # noqa: S608
        return dict(self._fetch(sql, params, conn))

    def _address(self, v: str | None, candidates: set[str] | None) -> tuple[int, int, int]:
        """valid, generic, personal as far as the value tells (the reference also checks that a
        contact named by id has the channel's coordinate: that is in the contact's facts)."""
        if v is None:
            return _INVALID
        if self.kind != "email":
            return (1, 0, 0) if self.usable else _INVALID
        if candidates is not None and v not in candidates:
            return (int(self.usable), 0, 0)
        kind = classify_email(v, self.ctx.policy)
        return (int(self.usable), int(kind == "generic"), int(kind == "personal_domain"))

    def _decide_missing(
        self,
        missing: dict[Any, int],
        fresh: list[str | None],
        named: list[tuple[Any, ...] | None],
        supps: list[str | None],
        attempts: dict[int, int],
    ) -> None:
        """Decide each new key with the reference, on the full row of its first recipient."""
        ref = self.ref
        wanted = {v for i in missing.values() if (v := fresh[i]) is not None and named[i] is not None}
        full: dict[str, ContactRow] = (
            ref.probe.contacts(self.kind, wanted, ref.as_of_v, ref.send_v) if wanted else {}
        )
        for key, i in missing.items():
            v = fresh[i]
            c = full[v] if v is not None and named[i] is not None else None
            decided = ref.decide_one(Recipient(0, self.kind, v, v or ""), c, supps[i], attempts)
            self.memo[key] = self._written(decided.verdict)

    def _written(self, verdict: Verdict) -> int:
        d = self.delimiter
        reasons = " ".join(verdict.reasons)
        self.written.append((f"{d}{verdict.decision}{d}{reasons}\r\n", verdict.decision, reasons))
        self.verdicts.append(verdict)
        return len(self.written) - 1

    # -- the run -----------------------------------------------------------------------------

    def _preload(self, expected_rows: int) -> dict[str, list[str]] | None:
        """All active suppressions of the channel by hash, when the list is large enough next to
        the suppressions table for one read to cost less than a probe per chunk."""
        top = self._fetch("SELECT max(id) FROM suppressions", ())[0][0] or 0
        if top == 0:
            return {}
        if expected_rows < top * PRELOAD_RATIO or top > PRELOAD_MAX:
            return None
        ref = self.ref
        at = "occurred_at::text" if self.postgres else "occurred_at"
        p = "%s" if self.postgres else "?"
        rows = self._fetch(
            f"SELECT coord_hash, reason, channels, {at} FROM suppressions WHERE occurred_at <= {p}",  # noqa: S608 - constants
            [ref.as_of_v],
        )
        channel = ref.campaign.channel
        found: dict[str, list[str]] = {}
        for coord_hash, reason, channels, when in rows:
            if channels == "all" or channel in channels.split(","):
                found.setdefault(coord_hash, []).append(f"{reason}|{channels}|{when}")
        return found

    def summary(self) -> dict[str, Any]:
        by_reason: Counter[str] = Counter()
        allowed = blocked = 0
        for i, n in self.counts.items():
            verdict = self.verdicts[i]
            by_reason[verdict.reasons[0]] += n
            if verdict.decision == "allow":
                allowed += n
            else:
                blocked += n
        return {
            "allowed": allowed,
            "blocked": blocked,
            "by_reason": dict(by_reason.most_common()),
            "recipients": self.total,
            "duplicates": self.duplicates,
        }


_INVALID = (0, 0, 0)


class _SqliteReader:
    """A read-only SQLite connection of its own (not pooled, so its settings go with it):
    no memory-mapped reads and a small page cache, because mapped pages count in the process's
    memory twice when two connections map the same file (1M contacts: +320 MiB peak RSS)."""

    def __init__(self, path: str) -> None:
        self.driver_connection = sqlite3.connect(path, timeout=30, check_same_thread=False)
        for pragma in ("query_only=ON", "mmap_size=0", "cache_size=-16384", "busy_timeout=30000"):
            self.driver_connection.execute(f"PRAGMA {pragma}")

    def close(self) -> None:
        self.driver_connection.close()


class _Lane(NamedTuple):
    conn: Any  # a DBAPI connection
    probe: RegisterProbe  # on that connection
    lock: threading.Lock


class _Gathered(NamedTuple):
    named: list[tuple[Any, ...] | None]  # per first occurrence: its contact's slim row
    supps: list[str | None]
    attempts: dict[int, int]
    lifted: dict[int, Any]


class _Pending(NamedTuple):
    chunk: Chunk
    fresh: list[str | None]
    slots: list[int]
    candidates: set[str] | None
    recipients: int
    gathered: Future[_Gathered]


def _alternatives(words: Iterable[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words)) or "(?!)"


def _special_addresses(generic: Iterable[str], personal: Iterable[str]) -> re.Pattern[str]:
    """The lines of a chunk of plain addresses that classify_email may not call "other": a
    generic local part (before any "+tag") or a personal mailbox domain. A superset is enough:
    each candidate is classified by the domain function itself."""
    parts, domains = _alternatives(generic), _alternatives(personal)
    return re.compile(rf"^(?:(?:{parts})[+@][^\n]*+|[^\n@]*+@(?:{domains}))$", re.MULTILINE)


def _filled(values: list[str]) -> bool:
    return bool(values) and any(map(str.strip, values))
