"""Deciding a campaign list in bulk: the same verdicts as ``engine.Decider``, fewer steps a row.

Theory of operation
-------------------
``engine.Decider`` is the reference: it reads every column the rules may need and builds a
memo key per row. A list of a million rows mostly repeats a few thousand situations, so this
path reads less and keys coarser-grained work on what is shared:

1. The coordinates of a chunk are normalised together (``bulkcoords``); its first
   occurrences are found with set and dict operations when every record names a valid
   coordinate (``_fresh``).
2. Per contact, its id, its keyed hashes and one text ``facts`` built by the database
   (``bulkread``), one statement per chunk, on a probe thread while the previous chunks are
   keyed and written. For a list about as long as the register, two reader processes read
   the register whole at the start instead, each a range of ids, and give each contact a
   *situation code* (``gate.sqliteworker``): its facts, its suppressions and, when an
   objection could be lifted, its instants. Each chunk's values are sent to both as soon as
   the chunk is read, and their replies (a code per value, 0: not found) read when it is
   decided (``ScannedRegister``); a row's key is then its code (``_coded_keys``). A code new
   to this process comes with its *situation*: the full row of a contact with that code, read
   by its reader in the snapshot the code was made in (``_decide_coded``).
3. The active suppressions of the channel are read once per run when the list is large next to
   the suppressions table (else per chunk, by hash); a recipient's suppressions are the same
   canonical string the reference builds (``engine.suppression_key``).
4. Otherwise each row's key holds the address flags, ``facts``, the suppressions (and, when an
   objection could be lifted by a newer consent, the instants) and the call attempts: at least
   everything the reference key holds, so equal keys have equal verdicts (the commonest, a
   contact with nothing but its facts to tell, is keyed by its facts alone). A key seen for the
   first time is decided by the reference (``Decider.decide_one``) on the full contact row,
   read with its facts: a contact changed since its chunk was looked up (erased, purged,
   rectified) is decided alone, as it is then (``_decide_missing``).
5. The verdict rows of a plain chunk are its lines and the verdicts' suffixes, interleaved by
   slice assignment and joined (``listread.plain_verdict_text``).
"""

from __future__ import annotations

import queue
import threading
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy.orm import Session

from gatekeeper.domain import Campaign, Verdict, classify_email
from gatekeeper.gate.bulkcoords import Coordinates
from gatekeeper.gate.bulkread import BulkReader, Lane, ScannedRegister, Situation, Slim
from gatekeeper.gate.engine import LIFTABLE, Decider, suppression_key
from gatekeeper.gate.listread import Chunk, Written
from gatekeeper.gate.probe import ContactRow, RegisterProbe
from gatekeeper.gate.recipients import Recipient
from gatekeeper.register.context import RegisterContext

# Chunks read ahead while the register is read whole (1M rows of 5,000): a list as long as a
# 1M register is read whole while the reader processes scan, so that after the scan only the
# keys and the writing are left (at 160, the last 200k rows were still to read then: about
# 0.5 s more after the scan on a loaded machine). About 0.8 MiB of the main process a chunk.
READ_AHEAD = 200


class ChunkVerdicts(NamedTuple):
    """The verdicts of a chunk's written records (first occurrences), in record order."""

    chunk: Chunk
    records: list[int] | None  # per written record: its index in the chunk; None: every record
    picked: list[int]  # per written record: its verdict in BulkDecider.written
    contact_ids: list[int | None]  # per written record: its contact (empty unless want_ids)
    recipients: int  # the chunk's records that name a recipient (repeats included)

    def per_record(self) -> tuple[list[int | None], list[int | None]]:
        """The verdict and the contact of each record of the chunk (None: not written)."""
        ids: list[int | None] = self.contact_ids or [None] * len(self.picked)
        if self.records is None:
            return list(self.picked), ids
        picked: list[int | None] = [None] * len(self.chunk)
        contacts: list[int | None] = [None] * len(self.chunk)
        for r, i, c in zip(self.records, self.picked, ids, strict=True):
            picked[r], contacts[r] = i, c
        return picked, contacts


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
        unwritten: bool = False,
    ) -> None:
        self.ref = ref = Decider(session, ctx, campaign, as_of, chunk=chunk)
        self.session, self.parallel, self.unwritten = session, parallel, unwritten
        self.want_ids = True  # the contact of each record (for proof items and links)
        self.ctx, self.kind, self.region = ctx, kind, ctx.region
        self.reader = BulkReader(session, ref, kind)
        self.coordinates = Coordinates(kind, ctx.region, ctx.policy)
        self.usable = kind in ref.usable
        self.seen: set[str] = set()
        self.total = self.duplicates = 0
        self.memo: dict[Any, int] = {}
        self.written: list[Written] = []
        self.suffixes: list[str] = []  # written[i][0] for each i: what a plain row appends
        self.verdicts: list[Verdict] = []
        self.counts: Counter[int] = Counter()
        self.delimiter = ","
        self.expected_rows = expected_rows
        # Read in run(), once the reader processes have started (they read them too).
        self.preload = self.reader.preloads(expected_rows)
        self.suppressions: dict[str, list[str]] | None = None if self.preload is False else {}
        self.single: dict[str, str] = {}
        self.lock = threading.Lock()  # one statement at a time on the connection
        # What each situation code of the reader processes is decided on (ScannedRegister).
        self.situations: dict[int, Situation] = {}

    # -- the chunks ------------------------------------------------------------------------

    def run(self, chunks: Iterable[Chunk], index: int) -> Generator[ChunkVerdicts, None, None]:
        """The verdicts of each chunk, in order.

        The register is read for the next chunks on probe threads while the current one is
        keyed and written, on whichever lane is free: the session's connection, and when the
        session has written nothing more connections (BulkReader.more_connections: PostgreSQL
        works in its server while the thread waits; SQLite in reader processes, the session's
        connection then only decides new situations). A lane runs one statement at a time."""
        session_lane = Lane(self.ref.probe.conn, self.ref.probe, self.lock)
        more = (
            self.reader.more_connections(
                self.expected_rows,
                self.suppressions is not None,
                self.unwritten,
                self.want_ids or self.ref.phone_like,
            )
            if self.parallel
            else []
        )
        scanned = next((extra for extra in more if isinstance(extra, ScannedRegister)), None)
        lanes = [] if more and (scanned or not self.reader.postgres) else [session_lane]
        for extra in more:
            if extra is not scanned:
                conn = extra.driver_connection
                probe = RegisterProbe(self.session, self.ref.campaign.channel, conn)
                lanes.append(Lane(conn, probe, threading.Lock()))
        # A register read whole: every chunk's lookup is sent to the reader processes as soon
        # as it is read and the rest done on this thread (see ScannedRegister); the list is
        # read ahead while they read the register (a few MB a chunk).
        depth = READ_AHEAD if scanned else len(lanes)
        free: queue.SimpleQueue[Lane] = queue.SimpleQueue()
        for lane in lanes:
            free.put(lane)
        pending: deque[_Pending] = deque()
        try:
            if self.preload:
                self.suppressions = self.reader.suppressions()
                if not scanned:  # for the lanes' keys (_supps); the processes code by hash
                    self.single = {h: ";".join(sorted(e)) for h, e in self.suppressions.items()}
            with ThreadPoolExecutor(max_workers=max(len(lanes), 1), thread_name_prefix="gate-probe") as pool:
                try:
                    for chunk in chunks:
                        values, candidates = self.coordinates.of(chunk, index)
                        before = self.total
                        fresh, records = self._fresh(values)
                        gathered: _Later = (
                            self._lookup(scanned, fresh, session_lane)
                            if scanned
                            else pool.submit(self._gather, fresh, free)
                        )
                        if len(pending) >= depth:
                            yield self._finish(pending.popleft())
                        pending.append(
                            _Pending(chunk, fresh, records, candidates, self.total - before, gathered)
                        )
                    while pending:
                        yield self._finish(pending.popleft())
                finally:
                    for work in pending:
                        work.gathered.cancel()
        finally:
            for extra in more:
                extra.close()

    def _gather(self, fresh: list[str | None], free: queue.SimpleQueue[Lane]) -> _Gathered:
        """What the register says about a chunk's first occurrences (on a probe thread, on a
        lane taken from ``free`` and given back)."""
        lane = free.get()
        try:
            return self._gather_on(fresh, lane)
        finally:
            free.put(lane)

    def _lookup(self, register: ScannedRegister, fresh: list[str | None], lane: Lane) -> _Deferred:
        """A chunk's lookup sent to the reader processes; the rest when its result is asked."""
        register.send(fresh)

        def gather() -> _Coded:
            codes, ids, situations, profiles = register.receive()
            self.situations.update(situations)
            self.ref.add_profiles(profiles)
            if not self.ref.phone_like:
                return _Coded(codes, ids, {})
            assert ids is not None  # asked for at the scan
            with lane.lock:
                attempts = lane.probe.attempts(
                    self.ref.since_v, self.ref.send_v, {i for c, i in zip(codes, ids, strict=True) if c}
                )
            return _Coded(codes, ids, attempts)

        return _Deferred(gather)

    def _gather_on(self, fresh: list[str | None], lane: Lane) -> _Gathered:
        with lane.lock:
            return self._gather_named(fresh, self.reader.contacts(fresh, lane.conn), lane)

    def _gather_named(self, fresh: list[str | None], named: list[Slim | None], lane: Lane) -> _Gathered:
        """The rest of a chunk's gathering, its contacts found (``lane.lock`` held)."""
        supps = self._supps(fresh, named, lane.probe)
        attempts = self._attempts(named, lane.probe)
        # A newer consent may lift an objection: the reference key then holds the instants.
        lifting = [c for c, s in zip(named, supps, strict=True) if c is not None and s and LIFTABLE in s]
        return _Gathered(named, supps, attempts, self.reader.instants(lifting, lane.conn))

    def _finish(self, work: _Pending) -> ChunkVerdicts:
        gathered = work.gathered.result()
        if isinstance(gathered, _Coded):
            return self._finish_coded(work, gathered)
        named, supps, attempts, lifted = gathered
        fresh = work.fresh
        keys = self._keys(fresh, named, supps, attempts, lifted, work.candidates)
        memo = self.memo
        known = list(map(memo.get, keys))
        if None in known:
            with self.lock:
                self._decide_missing(keys, fresh, named, supps, attempts, lifted)
        picked: list[int] = list(map(memo.__getitem__, keys)) if None in known else cast(list[int], known)
        self.counts.update(picked)
        ids: list[int | None] = [None if c is None else c[1] for c in named] if self.want_ids else []
        return ChunkVerdicts(work.chunk, work.records, picked, ids, work.recipients)

    def _finish_coded(self, work: _Pending, coded: _Coded) -> ChunkVerdicts:
        """A chunk whose contacts the reader processes coded (see _coded_keys)."""
        fresh, (codes, ids, attempts) = work.fresh, coded
        keys = self._coded_keys(fresh, codes, ids, attempts, work.candidates)
        memo = self.memo
        known = list(map(memo.get, keys))
        if None in known:
            missing = {k: i for i, k in enumerate(keys) if k not in memo}
            with self.lock:
                self._decide_coded(missing, fresh, codes, ids, attempts)
            known = list(map(memo.__getitem__, keys))
        picked = cast(list[int], known)
        self.counts.update(picked)
        contacts: list[int | None] = []
        if self.want_ids and ids is not None:
            contacts = [i if c else None for c, i in zip(codes, ids, strict=True)]
        elif self.want_ids:
            contacts = [None] * len(picked)
        return ChunkVerdicts(work.chunk, work.records, picked, contacts, work.recipients)

    def _coded_keys(
        self,
        fresh: list[str | None],
        codes: list[int],
        ids: list[int] | None,
        attempts: dict[int, int],
        candidates: set[str] | None,
    ) -> list[Any]:
        """Each recipient's memo key when the reader processes coded the contacts: a contact's
        code stands for everything the reference key holds but the address and the call
        attempts; an unknown recipient's key is (address, suppressions of its own hash).
        The commonest, a contact named by an "other" plain address with no attempts, is keyed
        by its code alone (an int, never equal to a tuple key); the chunk's key list is then
        its codes, unknown recipients put in their places."""
        if candidates is not None and not candidates and not attempts:
            if 0 not in codes:
                return codes
            keys: list[Any] = list(codes)
            plain = (int(self.usable), 0, 0)
            for i in [i for i, c in enumerate(codes) if not c]:
                keys[i] = (plain, self._own_supp(fresh[i]))
            return keys
        address = self._address
        return [
            (address(v, candidates), c, min(attempts.get(i, 0), 99))
            if c
            else (address(v, candidates), self._own_supp(v))
            for v, c, i in zip(fresh, codes, ids or codes, strict=True)
        ]

    def _own_supp(self, v: str | None) -> str | None:
        """The suppressions of a recipient named by no contact: of its own coordinate's hash."""
        return self._supp(self.suppressions, v, None) if self.suppressions else None

    def _decide_coded(
        self,
        missing: dict[Any, int],
        fresh: list[str | None],
        codes: list[int],
        ids: list[int] | None,
        attempts: dict[int, int],
    ) -> None:
        """Decide each new key with the reference, on the row its code was made from: the
        reader process that coded it read that row in the same snapshot (``Situation``), so
        a contact erased, purged or changed since the scan is decided as the scan saw it, like
        every other contact of its code, and the session's connection reads nothing here."""
        ref, found = self.ref, self.suppressions
        for key, i in missing.items():
            v, code = fresh[i], codes[i]
            recipient = Recipient(0, self.kind, v, v or "")
            if not code:
                decided = ref.decide_one(recipient, None, self._own_supp(v), {})
                self.memo[key] = self._written(decided.verdict)
                continue
            c, s, alone = self.situations[code]
            if alone:  # the contact's own code: its row is its own
                s = self._supp(found, v, (v, c.id, c.email_hash, c.phone_hash)) if found else None
            # The row may be another contact's with the same code: the attempts are this one's.
            count = {c.id: attempts.get(ids[i], 0)} if attempts and ids is not None else {}
            decided = ref.decide_one(recipient, c, s, count)
            self.memo[key] = self._written(decided.verdict)

    def _fresh(self, values: Sequence[str | None]) -> tuple[list[str | None], list[int] | None]:
        """The first occurrences in order (invalid ones included, each its own recipient), and
        the index of each one's record in the chunk (None when that is every record in order)."""
        seen = self.seen
        n = len(values)
        if None not in values and "" not in values:
            # Every record names a valid coordinate (a chunk of plain addresses): set and dict
            # operations, no Python step per record.
            plain = cast(list[str], values)
            firsts = dict.fromkeys(plain)
            if len(firsts) == n and seen.isdisjoint(firsts):
                seen.update(firsts)
                self.total += n
                return list(plain), None
            for earlier in seen.intersection(firsts):
                del firsts[earlier]
            # Each value's first record: the dict keeps the last index it is given.
            where = dict(zip(reversed(plain), range(n - 1, -1, -1), strict=True))
            seen.update(firsts)
            self.total += n
            self.duplicates += n - len(firsts)
            return list(firsts), list(map(where.__getitem__, firsts))
        fresh: list[str | None] = []
        records: list[int] = []
        repeats = 0
        for r, v in enumerate(values):
            if v:
                if v in seen:
                    repeats += 1
                    continue
                seen.add(v)
            elif v == "":
                continue  # a blank record: no recipient
            records.append(r)
            fresh.append(v)
        self.total += len(fresh) + repeats
        self.duplicates += repeats
        return fresh, records

    def _supps(
        self, fresh: list[str | None], named: list[Slim | None], probe: RegisterProbe
    ) -> list[str | None]:
        """Each recipient's suppressions as the reference's canonical string."""
        if self.suppressions is not None:
            if not self.suppressions:
                return [None] * len(fresh)
            # Most recipients are a contact found by its own coordinate with one stored hash:
            # its string was made once, when the suppressions were read. (A register read
            # whole keeps a hash that suppresses nothing as "": see gate.sqliteworker.)
            found, single = self.suppressions, self.single.get
            own, other = (2, 3) if self.kind == "email" else (3, 2)
            return [
                single(c[own])
                if c is not None and c[own] is not None and c[other] is None
                else self._supp(found, v, c)
                for v, c in zip(fresh, named, strict=True)
            ]
        hashes = [self._hashes(v, c) for v, c in zip(fresh, named, strict=True)]
        found = probe.suppressions(self.ref.as_of_v, {h for hs in hashes for h in hs})
        return [suppression_key(found, hs) if hs and found else None for hs in hashes]

    def _supp(self, found: dict[str, list[str]], v: str | None, c: Slim | None) -> str | None:
        hashes = self._hashes(v, c)
        return suppression_key(found, hashes) if hashes else None

    def _hashes(self, v: str | None, c: Slim | None) -> tuple[str, ...]:
        """As Decider._hashes: the contact's stored hashes, and the recipient's own coordinate
        hashed when no stored hash stands for it."""
        stored = () if c is None else tuple(h for h in (c[2], c[3]) if h is not None)
        if v is None or self.kind == "external_id":
            return stored
        if c is not None and (c[2] if self.kind == "email" else c[3]) is not None:
            return stored
        return (self.ctx.hasher.coordinate(self.kind, v), *stored)

    def _attempts(self, named: list[Slim | None], probe: RegisterProbe) -> dict[int, int]:
        if not self.ref.phone_like:
            return {}
        return probe.attempts(self.ref.since_v, self.ref.send_v, {c[1] for c in named if c})

    def _keys(
        self,
        fresh: list[str | None],
        named: list[Slim | None],
        supps: list[str | None],
        attempts: dict[int, int],
        lifted: dict[int, Any],
        candidates: set[str] | None,
    ) -> list[Any]:
        """Each recipient's memo key: at least everything the reference key holds. Its shape
        tells the cases apart: (address, suppressions) for an unknown recipient, (address,
        facts, suppressions, instants, attempts) for a contact, the facts alone for a contact
        whose address, suppressions, instants and attempts play no part (see below). The
        instants play a part only when a newer consent may lift an objection (``lifted``
        holds those contacts only)."""
        if candidates is not None and not attempts:
            # The common chunk: plain addresses, most of them "other" (see bulkcoords), one
            # comprehension without a call per record. The commonest recipient, a contact
            # named by an "other" address and suppressed by nothing (so no instants either),
            # is keyed by its facts alone: a text, never equal to a tuple key.
            plain, address = (int(self.usable), 0, 0), self._address
            get = lifted.get
            return [
                (
                    f
                    if s is None and v not in candidates
                    else (plain if v not in candidates else address(v, candidates), f, s, get(c[1]), 0)
                )
                if c is not None and (f := c[4]) is not None
                else self._key(v, c, s, attempts, lifted, candidates)
                for v, c, s in zip(fresh, named, supps, strict=True)
            ]
        return [
            self._key(v, c, s, attempts, lifted, candidates)
            for v, c, s in zip(fresh, named, supps, strict=True)
        ]

    def _key(
        self,
        v: str | None,
        c: Slim | None,
        s: str | None,
        attempts: dict[int, int],
        lifted: dict[int, Any],
        candidates: set[str] | None,
    ) -> tuple[Any, ...]:
        """One recipient's key (see _keys)."""
        a = self._address(v, candidates)
        if c is None:
            return (a, s)
        # No facts: a contact without a gate profile, left to the reference every time.
        facts = c[4] if c[4] is not None else ("contact", c[1])
        return (a, facts, s, lifted.get(c[1]), min(attempts.get(c[1], 0), 99))

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
        keys: list[Any],
        fresh: list[str | None],
        named: list[Slim | None],
        supps: list[str | None],
        attempts: dict[int, int],
        lifted: dict[int, Any],
    ) -> None:
        """Decide each new key with the reference, on the full row of one of its recipients.

        That row is read by another statement than the chunk's lookup (on PostgreSQL, or in a
        SQLite reader process, another snapshot): a contact erased, purged or changed in
        between no longer has the situation its key was made from. Its recipient is then
        decided alone, as the session reads it now (``_decide_now``: an erased contact is
        unknown, as if the list had been decided a moment later), under a key of its own
        (``keys[i]``), and ``named[i]`` becomes that contact (None: none); the key goes to its
        next recipient, if any."""
        ref, memo = self.ref, self.memo
        while missing := {k: i for i, k in enumerate(keys) if k not in memo}:
            wanted = {v for i in missing.values() if (v := fresh[i]) is not None and named[i] is not None}
            full = self.reader.rows(wanted, ref.probe.conn)
            for key, i in missing.items():
                v, c = fresh[i], named[i]
                if c is None:
                    decided = ref.decide_one(Recipient(0, self.kind, v, v or ""), None, supps[i], attempts)
                    memo[key] = self._written(decided.verdict)
                    continue
                row, facts = full.get(cast(str, v), (None, None))
                if row is not None and _same(c, lifted, row, facts):
                    decided = ref.decide_one(Recipient(0, self.kind, v, v or ""), row, supps[i], attempts)
                    memo[key] = self._written(decided.verdict)
                else:
                    keys[i] = ("now", v)  # unique: a first occurrence's coordinate
                    memo[keys[i]] = self._decide_now(v, row)
                    # Its proof item and links name the contact it was decided on, not the
                    # one the lookup found (erased, or another person's since a rectification).
                    named[i] = None if row is None else (v, row.id, row.email_hash, row.phone_hash, facts)

    def _decide_now(self, v: str | None, row: ContactRow | None) -> int:
        """A recipient whose contact changed since its chunk was read, decided as the session
        reads it now: its row (None: no contact), suppressions (an erasure adds one) and call
        attempts."""
        slim = None if row is None else (v, row.id, row.email_hash, row.phone_hash)
        hashes = self._hashes(v, slim)
        found = self.ref.probe.suppressions(self.ref.as_of_v, hashes) if hashes else None
        supp = suppression_key(found, hashes) if found else None
        attempts = self._attempts([slim], self.ref.probe) if slim is not None else {}
        decided = self.ref.decide_one(Recipient(0, self.kind, v, v or ""), row, supp, attempts)
        return self._written(decided.verdict)

    def _written(self, verdict: Verdict) -> int:
        d = self.delimiter
        reasons = " ".join(verdict.reasons)
        suffix = f"{d}{verdict.decision}{d}{reasons}\r\n"
        self.written.append((suffix, verdict.decision, reasons))
        self.suffixes.append(suffix)
        self.verdicts.append(verdict)
        return len(self.written) - 1

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


def _same(c: Slim, lifted: dict[int, Any], row: ContactRow, facts: str | None) -> bool:
    """Whether a contact's full row still has the situation its lookup found (``c``): the same
    contact, facts and, when they are part of its key (``lifted``), instants."""
    if row.id != c[1] or facts != c[4]:
        return False
    # Both texts of the same column read the same way (BulkReader._instants, rows_sql).
    return c[1] not in lifted or lifted[c[1]] == row.instants


class _Gathered(NamedTuple):
    named: list[Slim | None]  # per first occurrence: its contact's slim row
    supps: list[str | None]
    attempts: dict[int, int]
    lifted: dict[int, Any]


class _Coded(NamedTuple):
    codes: list[int]  # per first occurrence: its situation code (0: no contact)
    ids: list[int] | None  # per first occurrence: its contact's id (0: none), when asked
    attempts: dict[int, int]


class _Deferred:
    """Work done on the calling thread when its result is asked (in the place of a Future)."""

    def __init__(self, work: Callable[[], _Coded]) -> None:
        self.work = work

    def result(self) -> _Coded:
        return self.work()

    def cancel(self) -> bool:
        return False


_Later = Future[_Gathered] | _Deferred


class _Pending(NamedTuple):
    chunk: Chunk
    fresh: list[str | None]
    records: list[int] | None
    candidates: set[str] | None
    recipients: int
    gathered: _Later
