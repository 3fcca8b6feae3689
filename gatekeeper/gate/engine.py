"""Deciding many recipients at once, chunk by chunk.

Theory of operation
-------------------
1. Recipients arrive in list order and are cut into chunks of a few thousand. A repeated
   coordinate is decided once, at its first row; later rows are counted as duplicates.
2. For each chunk, three indexed probes read what the rules need from the register
   (``gate.probe``): the contacts named by the chunk's coordinates, the active suppressions of
   their keyed hashes for this channel, and, for calls, the attempts in the D223-9 window. Work
   is proportional to the list, memory to the chunk.
3. For each row, Python builds a small hashable key from what the rules can see (profile key,
   the outcome of each date comparison, suppression reasons, address flags). Rows with equal
   keys have equal situations, so the pure core (``situation_for`` then ``decide``) runs once per
   distinct key and every other row is a dict lookup.

Dates are compared here only as "is this instant before that one" on raw column values;
every rule that gives those comparisons a meaning lives in gatekeeper.domain.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Any, NamedTuple

from sqlalchemy import text
from sqlalchemy.orm import Session

from gatekeeper.domain import (
    Campaign,
    ContactSummary,
    GateInstants,
    GateProfile,
    RetentionClock,
    SuppressionFact,
    Verdict,
    classify_email,
    decide,
    retention_state,
    situation_for,
)
from gatekeeper.domain.facts import ALL_CHANNELS
from gatekeeper.domain.situation import PHONE_LIKE
from gatekeeper.errors import GatekeeperError
from gatekeeper.gate.probe import DATED, KINDS, ContactRow, RegisterProbe
from gatekeeper.gate.recipients import Recipient, coordinate_kind
from gatekeeper.register.codec import from_data
from gatekeeper.register.context import RegisterContext
from gatekeeper.sqlbulk import read_json, read_ts, ts_value

CHUNK = 5000  # rows per probe: large enough to amortise a statement, small for memory
LIFTABLE = "unsubscribe"  # only an objection can be lifted by a newer consent (domain rule)


class Decided(NamedTuple):
    row: int
    contact_id: int | None
    verdict: Verdict
    state: str | None
    deadline: datetime | None


class _Read(NamedTuple):
    named: list[tuple[Recipient, ContactRow | None]]
    hashes: list[tuple[str, ...]]
    supp: dict[str, list[str]]
    attempts: dict[int, int]


@dataclass
class Staged:
    total: int = 0
    duplicates: int = 0


def usable_kinds(channel: str) -> frozenset[str]:
    """How a recipient may be named for this channel (post reaches any known contact)."""
    if channel == "postal":
        return frozenset(KINDS)
    return frozenset({coordinate_kind(channel), "external_id"})


class Decider:
    """Per-run memo of situations and verdicts for one campaign at one instant."""

    def __init__(
        self,
        session: Session,
        ctx: RegisterContext,
        campaign: Campaign,
        as_of: datetime,
        *,
        with_retention: bool = False,
        chunk: int = CHUNK,
    ) -> None:
        self.session, self.ctx, self.campaign, self.as_of = session, ctx, campaign, as_of
        self.chunk = chunk
        # The retention view per verdict costs a little per row: the API's checks show it,
        # the bulk CSV path (decision and reasons only) skips it.
        self.with_retention = with_retention
        self.probe = RegisterProbe(session, campaign.channel)
        dialect = self.probe.dialect
        self.as_of_v = ts_value(dialect, as_of)
        self.send_v = ts_value(dialect, campaign.send_at)
        since = campaign.send_at - timedelta(days=ctx.policy.phone_attempt_window_days)
        self.since_v = ts_value(dialect, since)
        self.phone_like = campaign.channel in PHONE_LIKE
        self.usable = usable_kinds(campaign.channel)
        # Named by external_id, a contact without the channel's coordinate cannot be reached.
        self.needs = None if campaign.channel == "postal" else f"has_{coordinate_kind(campaign.channel)}"
        self.profiles: dict[str, GateProfile] = {}
        self.memo: dict[tuple[Any, ...], Verdict] = {}
        self.staged = Staged()
        # Sets of strings, one per kind: the garbage collector does not track strings, while a
        # million (kind, value) tuples made every full collection walk them all.
        self.seen: defaultdict[str, set[str]] = defaultdict(set)
        self.bloctel_checked_at = self._bloctel_checked_at()

    def _bloctel_checked_at(self) -> datetime | None:
        # The latest scrub made before the send: a later one proves nothing about the call.
        value = self.session.execute(
            text("SELECT max(checked_at) FROM bloctel_checks WHERE checked_at <= :s"),
            {"s": self.send_v},
        ).scalar()
        return None if value is None else read_ts(value)

    def run(self, recipients: Iterable[Recipient]) -> Iterator[Decided]:
        """Every first occurrence, decided, in list order."""
        it = iter(recipients)
        while chunk := list(islice(it, self.chunk)):
            yield from (d for d in self.decide_chunk(chunk) if d is not None)

    def decide_chunk(self, chunk: Sequence[Recipient]) -> list[Decided | None]:
        """One verdict per recipient of the chunk, None for a repeat of an earlier one."""
        fresh, marked = self._first_occurrences(chunk)
        return self._decide_read(marked, self._read(fresh))

    def _read(self, fresh: list[Recipient]) -> _Read:
        """What the register says about these recipients: three indexed statements."""
        probe, as_of, send = self.probe, self.as_of_v, self.send_v
        found = {
            kind: probe.contacts(kind, {r.value for r in fresh if r.kind == kind and r.value}, as_of, send)
            for kind in {r.kind for r in fresh}
        }
        named = [(r, found[r.kind].get(r.value) if r.value else None) for r in fresh]
        hashes = [self._hashes(r, c) for r, c in named]
        supp = probe.suppressions(as_of, {h for hs in hashes for h in hs})
        attempts = (
            probe.attempts(self.since_v, send, {c.id for _, c in named if c}) if self.phone_like else {}
        )
        return _Read(named, hashes, supp, attempts)

    def _decide_read(self, marked: list[Recipient | None], read: _Read) -> list[Decided | None]:
        decide_one, supp, attempts = self._decide, read.supp, read.attempts
        verdicts = iter(
            [
                decide_one(r, c, suppression_key(supp, hs) if supp else None, attempts)
                for (r, c), hs in zip(read.named, read.hashes, strict=True)
            ]
        )
        return [None if r is None else next(verdicts) for r in marked]

    def _first_occurrences(
        self, chunk: Sequence[Recipient]
    ) -> tuple[list[Recipient], list[Recipient | None]]:
        """The recipients not seen before, and the chunk with repeats marked None."""
        seen = self.seen
        fresh: list[Recipient] = []
        marked: list[Recipient | None] = []
        for r in chunk:
            if r.value is not None:
                values = seen[r.kind]
                if r.value in values:
                    marked.append(None)
                    continue
                values.add(r.value)
            fresh.append(r)
            marked.append(r)
        self.staged.total += len(chunk)
        self.staged.duplicates += len(chunk) - len(fresh)
        return fresh, marked

    def _hashes(self, r: Recipient, c: ContactRow | None) -> tuple[str, ...]:
        """The keyed hashes whose suppressions apply: the contact's stored ones, and the
        recipient's own coordinate hashed here when no stored hash stands for it."""
        stored = () if c is None else _present(c.email_hash, c.phone_hash)
        if r.value is None or r.kind == "external_id":
            return stored
        if c is not None and (c.email_hash if r.kind == "email" else c.phone_hash):
            return stored  # found by this coordinate: its stored hash is the recipient's
        return (self.ctx.hasher.coordinate(r.kind, r.value), *stored)

    def _address(self, r: Recipient, c: ContactRow | None) -> tuple[int, int, int]:
        """valid, generic, personal: what the address alone tells the rules."""
        valid = int(r.value is not None and r.kind in self.usable)
        if c is not None and r.kind == "external_id" and self.needs and not getattr(c, self.needs):
            valid = 0  # named by id, a contact without the channel's coordinate cannot be reached
        if r.kind != "email" or not r.value:
            return valid, 0, 0
        kind = classify_email(r.value, self.ctx.policy)
        return valid, int(kind == "generic"), int(kind == "personal_domain")

    def decide_one(
        self, r: Recipient, c: ContactRow | None, supp: str | None, attempts: dict[int, int]
    ) -> Decided:
        """One recipient, its contact's full row, its suppressions (``suppression_key``) and
        the call attempts by contact: the bulk path asks this for each new situation."""
        return self._decide(r, c, supp, attempts)

    def _decide(
        self, r: Recipient, c: ContactRow | None, supp: str | None, attempts: dict[int, int]
    ) -> Decided:
        address = self._address(r, c)
        count = 0 if c is None else attempts.get(c.id, 0)
        key = self._key(address, c, supp, count)
        verdict = self.memo.get(key)
        if verdict is None:
            verdict = self.memo[key] = self._decide_slow(address, c, supp, count)
        if not self.with_retention or c is None:
            return Decided(r.row, None if c is None else c.id, verdict, None, None)
        summary = self._summary(c, with_instants=False)
        state = retention_state(
            summary.clock,
            self.as_of,
            anonymised=summary.anonymised,
            refused=summary.reconsent_refused,
            policy=self.ctx.policy,
        )
        return Decided(r.row, c.id, verdict, state, summary.clock.deadline)

    def _key(
        self, address: tuple[int, int, int], c: ContactRow | None, supp: str | None, attempts: int
    ) -> tuple[Any, ...]:
        """Everything situation_for can see, with dates reduced to their comparisons."""
        reasons = _reasons(supp) if supp else ()
        if c is None:
            return (address, reasons)
        needs_instants = c.instants is not None and (self.phone_like or c.contracts or LIFTABLE in reasons)
        return (
            address,
            reasons,
            c.profile_key,
            c[DATED],
            supp if needs_instants and LIFTABLE in reasons else None,
            _text(c.instants) if needs_instants else None,
            min(attempts, 99),
        )

    def _decide_slow(
        self, address: tuple[int, int, int], c: ContactRow | None, supp: str | None, attempts: int
    ) -> Verdict:
        valid, generic, personal = address
        summary = None if c is None else self._summary(c, with_instants=True)
        situation = situation_for(
            summary,
            as_of=self.as_of,
            campaign=self.campaign,
            address_valid=bool(valid),
            generic_address=bool(generic),
            personal_domain=bool(personal),
            policy=self.ctx.policy,
            suppressions=_suppression_facts(supp),
            call_attempts=_attempt_times(attempts, self.campaign),
            bloctel_checked_at=self.bloctel_checked_at,
        )
        return decide(self.campaign, situation, self.ctx.policy)

    def _summary(self, c: ContactRow, *, with_instants: bool) -> ContactSummary:
        # Every stored contact gets its clock and profile when it is written (register.clocks).
        if c.clock is None or c.profile_key is None or c.clock_anchor_at is None:
            raise GatekeeperError(f"contact {c.id} has no retention clock or gate profile stored")
        d = None if c.deadline is None else read_ts(c.deadline)
        reconsent = None if c.reconsent_at is None else read_ts(c.reconsent_at)
        reminder = None if d is None else d - timedelta(days=self.ctx.policy.reconsent_reminder_days)
        retention = RetentionClock(
            c.clock,
            read_ts(c.clock_anchor_at),
            c.clock_anchor_kind or "collection",
            d,
            reconsent,
            reminder,
        )
        raw = c.instants if with_instants else None
        inst = GateInstants() if raw is None else from_data(GateInstants, read_json(raw))
        return ContactSummary(
            self._profile(c.profile_key),
            retention,
            inst,
            anonymised=bool(c.anonymised),
            reconsent_refused=bool(c.refused),
        )

    def add_profiles(self, data: dict[str, Any]) -> None:
        """Gate profiles read elsewhere (as stored: data by key), e.g. by a reader process whose
        snapshot is newer than the session's (profiles are only ever added, by content key)."""
        for key, value in data.items():
            if key not in self.profiles:
                self.profiles[key] = from_data(GateProfile, read_json(value))

    def _profile(self, key: str) -> GateProfile:
        if key not in self.profiles:
            data = self.session.execute(
                text("SELECT data FROM gate_profiles WHERE key = :k"), {"k": key}
            ).scalar_one()
            self.profiles[key] = from_data(GateProfile, read_json(data))
        return self.profiles[key]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _reasons(supp: str | None) -> tuple[str, ...]:
    if not supp:
        return ()
    return tuple(sorted({entry.split("|", 1)[0] for entry in supp.split(";")}))


def _suppression_facts(supp: str | None) -> list[SuppressionFact]:
    facts = []
    for entry in (supp or "").split(";"):
        if entry:
            reason, channels, at = entry.split("|", 2)
            chans = ALL_CHANNELS if channels == "all" else frozenset(channels.split(","))
            facts.append(SuppressionFact(reason, chans, read_ts(at)))
    return facts


def _attempt_times(count: int, campaign: Campaign) -> list[datetime]:
    # The query counted the attempts inside the window; the core only needs that many.
    return [campaign.send_at] * count


def _present(e: str | None, p: str | None) -> tuple[str, ...]:
    return (e, p) if e and p else (e,) if e else (p,) if p else ()


def suppression_key(found: dict[str, list[str]], hashes: tuple[str, ...]) -> str | None:
    """The suppressions of these hashes as one canonical string (a memo key part)."""
    entries: list[str] | None = None
    for h in hashes:
        got = found.get(h)
        if got:
            entries = got if entries is None else entries + got
    return None if entries is None else ";".join(sorted(entries))


def decide_recipients(
    session: Session,
    ctx: RegisterContext,
    campaign: Campaign,
    as_of: datetime,
    recipients: Iterable[Recipient],
    *,
    with_retention: bool = False,
) -> tuple[Staged, Iterator[Decided]]:
    """The verdicts of the first occurrence of each recipient, lazily; ``Staged`` counts the
    rows and duplicates as they go by (complete once the iterator is exhausted)."""
    decider = Decider(session, ctx, campaign, as_of, with_retention=with_retention)
    return decider.staged, decider.run(recipients)
