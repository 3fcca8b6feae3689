"""Deciding many recipients at once, set-based.

Theory of operation
-------------------
1. The recipients are staged in a temporary table (``executemany`` on SQLite, ``COPY`` on
   PostgreSQL) with their normalised coordinate, its keyed hash and the address flags.
2. One query joins each staged row to its contact (by e-mail, phone or external_id, through
   the unique indexes), the active suppressions of the recipient's and the contact's keyed
   hashes for this channel, and, for calls, the attempts in the D223-9 window.
3. For each result row, Python builds a small hashable key from what the rules can see
   (profile key, the outcome of each date comparison, suppression reasons, address flags).
   Rows with equal keys have equal situations, so the pure core (``situation_for`` then
   ``decide``) runs once per distinct key and every other row is a dict lookup.

Dates are compared here only as "is this instant before that one" on raw column values;
every rule that gives those comparisons a meaning lives in gatekeeper.domain.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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
from gatekeeper.gate.recipients import Recipient, coordinate_kind
from gatekeeper.register.codec import from_data
from gatekeeper.register.context import RegisterContext
from gatekeeper.sqlbulk import (
    create_temp,
    dialect_of,
    drop_temp,
    load_rows,
    read_json,
    read_ts,
    ts_value,
)

STAGE = "gate_in"
# row_no is the rowid on SQLite: the join scans in list order and needs no sort.
STAGE_COLUMNS = [
    ("row_no", "pk"),
    ("kind", "text"),
    ("value", "text"),
    ("hash", "text"),
    ("valid", "int"),
    ("generic", "int"),
    ("personal", "int"),
]
LIFTABLE = "unsubscribe"  # only an objection can be lifted by a newer consent (domain rule)


class GateRow(NamedTuple):
    """One result row of ``_query``, in its column order. A plain named tuple: reading a field
    is an index, while a SQLAlchemy Row's attribute lookup costs microseconds a row."""

    row_no: int
    valid: int
    generic: int
    personal: int
    cid: int | None
    profile_key: str | None
    deadline: Any
    reconsent_at: Any
    refused_at: Any
    anonymised_at: Any
    instants: Any
    clock: str | None
    clock_anchor_at: Any
    clock_anchor_kind: str | None
    supp: str | None
    attempts: int | None


@dataclass(frozen=True, slots=True)
class Decided:
    row: int
    contact_id: int | None
    verdict: Verdict
    state: str | None
    deadline: datetime | None


@dataclass
class Staged:
    total: int = 0
    duplicates: int = 0
    kinds: set[str] = field(default_factory=set)


def stage(
    session: Session, ctx: RegisterContext, recipients: Iterable[Recipient], channel: str = "email"
) -> Staged:
    """Load recipients; a repeated coordinate is decided once (its later rows are skipped). A
    coordinate of the wrong kind for the channel (a phone number for an e-mail) is invalid."""
    usable = usable_kinds(channel)
    create_temp(session, STAGE, STAGE_COLUMNS)
    counts = Staged()
    seen: set[tuple[str, str]] = set()
    policy, hasher = ctx.policy, ctx.hasher

    def rows() -> Iterator[tuple[Any, ...]]:
        for r in recipients:
            counts.total += 1
            counts.kinds.add(r.kind)
            if r.value is not None:
                key = (r.kind, r.value)
                if key in seen:
                    counts.duplicates += 1
                    continue
                seen.add(key)
            kind = classify_email(r.value, policy) if r.kind == "email" and r.value else "other"
            coord_hash = hasher.coordinate(r.kind, r.value) if r.value and r.kind != "external_id" else None
            yield (
                r.row,
                r.kind,
                r.value,
                coord_hash,
                int(r.value is not None and r.kind in usable),
                int(kind == "generic"),
                int(kind == "personal_domain"),
            )

    load_rows(session, STAGE, STAGE_COLUMNS, rows())
    if dialect_of(session) == "postgresql":
        # A temporary table has no statistics until analysed: without them the planner picks
        # nested loops sized for a handful of rows instead of hash joins for a million.
        session.execute(text(f"ANALYZE {STAGE}"))
    return counts


# A contact is found through the unique index of the coordinate the recipient was named by.
_JOINS = {
    "email": ("ce", "LEFT JOIN contacts ce ON g.kind = 'email' AND ce.email = g.value"),
    "phone": ("cp", "LEFT JOIN contacts cp ON g.kind = 'phone' AND cp.phone = g.value"),
    "external_id": ("cx", "LEFT JOIN contacts cx ON g.kind = 'external_id' AND cx.external_id = g.value"),
}


def usable_kinds(channel: str) -> frozenset[str]:
    """How a recipient may be named for this channel (post reaches any known contact)."""
    if channel == "postal":
        return frozenset(_JOINS)
    return frozenset({coordinate_kind(channel), "external_id"})


def _hashes(kinds: frozenset[str]) -> str:
    """The keyed hashes whose suppressions apply: the recipient's coordinate and the contact's
    others (a contact found by e-mail already has x.hash = its e-mail hash: one probe less)."""
    if kinds <= {"email"}:
        return "x.hash, c.phone_hash"
    if kinds <= {"phone"}:
        return "x.hash, c.email_hash"
    return "x.hash, c.email_hash, c.phone_hash"


def _query(
    dialect: str, phone_like: bool, kinds: frozenset[str] = frozenset(_JOINS), channel: str = "email"
) -> str:
    concat = "string_agg" if dialect == "postgresql" else "group_concat"
    at_text = "s.occurred_at::text" if dialect == "postgresql" else "s.occurred_at"
    attempts = (
        (
            "(SELECT count(*) FROM events e WHERE e.contact_id = c.id AND e.type = 'call_attempt'"
            " AND e.occurred_at >= :since AND e.occurred_at <= :send_at)"
        )
        if phone_like
        else "0"
    )
    used = [_JOINS[k] for k in _JOINS if k in kinds] or [_JOINS["email"]]
    # Named by external_id, a contact without the channel's coordinate cannot be reached.
    col = None if channel == "postal" else coordinate_kind(channel)
    valid = (
        f"CASE WHEN x.kind = 'external_id' AND c.id IS NOT NULL AND c.{col} IS NULL THEN 0 ELSE x.valid END"
        if col
        else "x.valid"
    )
    cid = f"COALESCE({', '.join(f'{alias}.id' for alias, _ in used)}, NULL)"
    joins = " ".join(join for _, join in used)
    # Suppressions of the recipient's coordinate or the contact's, for this channel, known at as_of.
    return f"""
        SELECT x.row_no, {valid} AS valid, x.generic, x.personal, c.id AS cid, c.profile_key, c.deadline,
               c.reconsent_at, c.refused_at, c.anonymised_at, c.instants, c.clock,
               c.clock_anchor_at, c.clock_anchor_kind,
               (SELECT {concat}(s.reason || '|' || s.channels || '|' || {at_text}, ';')
                  FROM suppressions s
                 WHERE s.coord_hash IN ({_hashes(kinds)})
                   AND s.occurred_at <= :as_of
                   AND (s.channels = 'all' OR ',' || s.channels || ',' LIKE :channel_like)) AS supp,
               {attempts} AS attempts
          FROM (SELECT g.*, {cid} AS cid FROM {STAGE} g {joins}) x
          LEFT JOIN contacts c ON c.id = x.cid
         ORDER BY x.row_no
    """  # noqa: S608 - table and function names are constants


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
        kinds: frozenset[str] = frozenset(_JOINS),
    ) -> None:
        self.session, self.ctx, self.campaign, self.as_of = session, ctx, campaign, as_of
        self.kinds = kinds  # how the staged recipients are named: only those joins are made
        # The retention view per verdict costs a little per row: the API's checks show it,
        # the bulk CSV path (decision and reasons only) skips it.
        self.with_retention = with_retention
        self.dialect = dialect_of(session)
        self.as_of_v = ts_value(self.dialect, as_of)
        self.send_v = ts_value(self.dialect, campaign.send_at)
        self.phone_like = campaign.channel in PHONE_LIKE
        self.profiles: dict[str, GateProfile] = {}
        self.memo: dict[tuple[Any, ...], Verdict] = {}
        self.bloctel_checked_at = self._bloctel_checked_at()

    def _bloctel_checked_at(self) -> datetime | None:
        # The latest scrub made before the send: a later one proves nothing about the call.
        value = self.session.execute(
            text("SELECT max(checked_at) FROM bloctel_checks WHERE checked_at <= :s"),
            {"s": self.send_v},
        ).scalar()
        return None if value is None else read_ts(value)

    def run(self) -> Iterator[Decided]:
        since = self.campaign.send_at - timedelta(days=self.ctx.policy.phone_attempt_window_days)
        params = {
            "as_of": self.as_of_v,
            "channel_like": f"%,{self.campaign.channel},%",
            "since": ts_value(self.dialect, since),
            "send_at": self.send_v,
        }
        sql = _query(self.dialect, self.phone_like, self.kinds, self.campaign.channel)
        result = self.session.execute(text(sql), params)
        make = GateRow._make
        for row in result:
            yield self._decide_row(make(row))

    def _decide_row(self, row: GateRow) -> Decided:
        key = self._key(row)
        verdict = self.memo.get(key)
        if verdict is None:
            verdict = self.memo[key] = self._decide_slow(row)
        if not self.with_retention or row.cid is None:
            return Decided(row.row_no, row.cid, verdict, None, None)
        summary = self._summary(row, with_instants=False)
        state = retention_state(
            summary.clock,
            self.as_of,
            anonymised=summary.anonymised,
            refused=summary.reconsent_refused,
            policy=self.ctx.policy,
        )
        return Decided(row.row_no, row.cid, verdict, state, summary.clock.deadline)

    def _key(self, row: GateRow) -> tuple[Any, ...]:
        """Everything situation_for can see, with dates reduced to their comparisons."""
        reasons = _reasons(row.supp)
        instants = row.instants
        needs_instants = instants is not None and (
            self.phone_like or LIFTABLE in reasons or '"contracts":[]' not in _text(instants)
        )
        deadline, reconsent = row.deadline, row.reconsent_at
        dated = (
            None
            if row.cid is None
            else (
                deadline is None,
                deadline is not None and self.as_of_v >= deadline,
                reconsent is not None and self.as_of_v >= reconsent,
                deadline is not None and self.send_v >= deadline,
                row.refused_at is not None,
                row.anonymised_at is not None,
            )
        )
        return (
            row.valid,
            row.generic,
            row.personal,
            row.profile_key,
            dated,
            reasons,
            row.supp if needs_instants and LIFTABLE in reasons else None,
            _text(instants) if needs_instants else None,
            min(int(row.attempts or 0), 99),
        )

    def _decide_slow(self, row: GateRow) -> Verdict:
        summary = None if row.cid is None else self._summary(row, with_instants=True)
        situation = situation_for(
            summary,
            as_of=self.as_of,
            campaign=self.campaign,
            address_valid=bool(row.valid),
            generic_address=bool(row.generic),
            personal_domain=bool(row.personal),
            policy=self.ctx.policy,
            suppressions=_suppression_facts(row.supp),
            call_attempts=_attempt_times(int(row.attempts or 0), self.campaign),
            bloctel_checked_at=self.bloctel_checked_at,
        )
        return decide(self.campaign, situation, self.ctx.policy)

    def _summary(self, row: GateRow, *, with_instants: bool) -> ContactSummary:
        # Every stored contact gets its clock and profile when it is written (register.clocks).
        if row.clock is None or row.profile_key is None:
            raise GatekeeperError(f"contact {row.cid} has no retention clock or gate profile stored")
        d = None if row.deadline is None else read_ts(row.deadline)
        reconsent = None if row.reconsent_at is None else read_ts(row.reconsent_at)
        reminder = None if d is None else d - timedelta(days=self.ctx.policy.reconsent_reminder_days)
        retention = RetentionClock(
            row.clock,
            read_ts(row.clock_anchor_at),
            row.clock_anchor_kind or "collection",
            d,
            reconsent,
            reminder,
        )
        raw = row.instants if with_instants else None
        inst = GateInstants() if raw is None else from_data(GateInstants, read_json(raw))
        return ContactSummary(
            self._profile(row.profile_key),
            retention,
            inst,
            anonymised=row.anonymised_at is not None,
            reconsent_refused=row.refused_at is not None,
        )

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


def decide_recipients(
    session: Session,
    ctx: RegisterContext,
    campaign: Campaign,
    as_of: datetime,
    recipients: Iterable[Recipient],
    *,
    with_retention: bool = False,
) -> tuple[Staged, Iterator[Decided]]:
    staged = stage(session, ctx, recipients, campaign.channel)
    decider = Decider(
        session, ctx, campaign, as_of, with_retention=with_retention, kinds=frozenset(staged.kinds)
    )
    return staged, decider.run()


def finish(session: Session) -> None:
    drop_temp(session, STAGE)
