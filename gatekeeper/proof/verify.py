"""Walking the journal: the first entry altered, removed or inserted, and the facts it vouches for.

Three checks, in one pass over each register in ``seq`` order, in pages (keyset pagination,
never the whole journal in memory):

1. the chain: ``seq`` runs 1, 2, 3... without a gap, each ``prev_hash`` is the previous
   ``entry_hash`` and each ``entry_hash`` recomputes; the head row names the last entry;
2. the facts: an event, suppression or verdict run still stored must match the keyed digest of
   its latest entry; a fact that changed or vanished is accepted only when its subject has an
   ``anonymised`` entry (anonymisation scrubs facts on purpose and says so in the chain);
3. an optional anchor ``SEQ:HASH`` given by the auditor from an earlier export: the chain still
   holds that entry, so even a rewrite of the whole chain from that point on is caught.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gatekeeper.proof.journal import (
    EVENT_COLUMNS,
    GENESIS,
    RUN_COLUMNS,
    SUPPRESSION_COLUMNS,
    chain_hash,
    event_payload,
    fact_digest,
    run_payload,
    select_in,
    suppression_payload,
)
from gatekeeper.security import KeyedHasher
from gatekeeper.sqlbulk import read_ts

PAGE = 5_000
ENTRY_COLUMNS = (
    "id, register, seq, at, kind, subject_ref, subject_hash, fact_table, fact_id, payload_digest,"
    " prev_hash, entry_hash"
)
# How to re-read each kind of fact, as the journal digested it (column lists are constants).
_SQL = "SELECT {cols} FROM {table} WHERE {alias}.id IN ({{}})"
FACT_READERS: dict[str, tuple[str, Callable[[Sequence[Any]], dict[str, Any]]]] = {
    "event": (_SQL.format(cols=EVENT_COLUMNS, table="events e", alias="e"), event_payload),
    "suppression": (
        _SQL.format(cols=SUPPRESSION_COLUMNS, table="suppressions s", alias="s"),
        suppression_payload,
    ),
    "run": (_SQL.format(cols=RUN_COLUMNS, table="verdict_runs r", alias="r"), run_payload),
}


@dataclass(frozen=True, slots=True)
class Problem:
    register: str
    seq: int
    problem: str


@dataclass(slots=True)
class Report:
    ok: bool = True
    entries: int = 0
    facts_checked: int = 0
    facts_anonymised: int = 0
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    problem: Problem | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify(session: Session, hasher: KeyedHasher, *, anchor: str | None = None) -> Report:
    report = Report()
    registers = [
        r[0]
        for r in session.execute(
            text("SELECT register FROM journal_heads UNION SELECT DISTINCT register FROM journal ORDER BY 1")
        ).all()
    ]
    for register in registers:
        problem = _verify_register(session, hasher, register, report)
        if problem is not None:
            return _fail(report, problem)
    if anchor:
        problem = _check_anchor(session, anchor)
        if problem is not None:
            return _fail(report, problem)
    return report


def _fail(report: Report, problem: Problem) -> Report:
    report.ok, report.problem = False, problem
    return report


def _verify_register(session: Session, hasher: KeyedHasher, register: str, report: Report) -> Problem | None:
    last_seq, last_hash = 0, GENESIS
    while True:
        page = session.execute(
            text(
                f"SELECT {ENTRY_COLUMNS} FROM journal"  # noqa: S608 - constants only
                f" WHERE register = :r AND seq > :s ORDER BY seq LIMIT {PAGE}"
            ),
            {"r": register, "s": last_seq},
        ).all()
        for row in page:
            problem = _check_link(row, last_seq, last_hash)
            if problem is not None:
                return problem
            last_seq, last_hash = int(row.seq), str(row.entry_hash)
        problem = _check_facts(session, hasher, page, report)
        if problem is not None:
            return problem
        report.entries += len(page)
        if len(page) < PAGE:
            break
    report.heads[register] = {"seq": last_seq, "entry_hash": last_hash}
    return _check_head(session, register, last_seq, last_hash)


def _check_link(row: Any, last_seq: int, last_hash: str) -> Problem | None:
    seq = int(row.seq)
    if seq != last_seq + 1:
        return Problem(row.register, last_seq + 1, f"entry {last_seq + 1} was removed (next found: {seq})")
    if row.prev_hash != last_hash:
        return Problem(
            row.register, seq, f"entry {seq} does not follow entry {last_seq}: inserted or replaced"
        )
    expected = chain_hash(
        row.register,
        seq,
        read_ts(row.at),
        row.kind,
        row.subject_ref,
        row.subject_hash,
        row.fact_table,
        None if row.fact_id is None else int(row.fact_id),
        row.payload_digest,
        row.prev_hash,
    )
    if expected != row.entry_hash:
        return Problem(row.register, seq, f"entry {seq} was altered (its hash no longer matches its content)")
    return None


def _check_head(session: Session, register: str, last_seq: int, last_hash: str) -> Problem | None:
    head = session.execute(
        text("SELECT seq, entry_hash FROM journal_heads WHERE register = :r"), {"r": register}
    ).first()
    if head is None or (int(head.seq), head.entry_hash) == (last_seq, last_hash):
        return None
    if int(head.seq) > last_seq:
        return Problem(
            register,
            last_seq + 1,
            f"entries {last_seq + 1} to {head.seq} were removed (the head names entry {head.seq})",
        )
    return Problem(
        register,
        int(head.seq) + 1,
        f"entry {int(head.seq) + 1} was appended outside the journal (the head does not know it)",
    )


def _check_facts(
    session: Session, hasher: KeyedHasher, page: Sequence[Any], report: Report
) -> Problem | None:
    """The latest entry of each fact must match the fact as stored now."""
    latest = {(r.fact_table, int(r.fact_id)): r for r in page if r.fact_table in FACT_READERS}
    later = _entries_after(session, latest)
    anonymised = _anonymised_subjects(session, {r.subject_ref for r in latest.values()})
    for table, (sql, payload_of) in FACT_READERS.items():
        ids = sorted(i for t, i in latest if t == table)
        current = {int(row[0]): fact_digest(hasher, payload_of(row)) for row in select_in(session, sql, ids)}
        for fid in ids:
            entry = latest[(table, fid)]
            if (table, fid) in later or current.get(fid) == entry.payload_digest:
                report.facts_checked += 1
            elif entry.subject_ref in anonymised:
                report.facts_anonymised += 1
            else:
                change = "removed" if fid not in current else "altered"
                return Problem(
                    entry.register,
                    int(entry.seq),
                    f"the {table} {fid} vouched for by entry {entry.seq} was {change}",
                )
    return None


def _entries_after(session: Session, latest: dict[tuple[str, int], Any]) -> set[tuple[str, int]]:
    """Facts journaled again later in the chain (a suppression's date moved): the later entry
    is the one that must match."""
    ids = sorted(i for t, i in latest if t == "suppression")
    rows = select_in(
        session,
        "SELECT fact_id, max(seq) FROM journal WHERE fact_table = 'suppression'"
        " AND fact_id IN ({}) GROUP BY fact_id",
        ids,
    )
    return {
        ("suppression", int(fid))
        for fid, top in rows
        if int(top) > int(latest[("suppression", int(fid))].seq)
    }


def _anonymised_subjects(session: Session, refs: set[str]) -> set[str]:
    rows = select_in(
        session,
        "SELECT subject_ref FROM journal WHERE kind = 'anonymised' AND subject_ref IN ({})",
        sorted(refs),
    )
    return {str(r[0]) for r in rows}


def _check_anchor(session: Session, anchor: str) -> Problem | None:
    register, _, rest = anchor.rpartition("@") if "@" in anchor else ("main", "", anchor)
    seq_text, _, expected = rest.partition(":")
    row = session.execute(
        text("SELECT entry_hash FROM journal WHERE register = :r AND seq = :s"),
        {"r": register, "s": int(seq_text)},
    ).first()
    if row is None or row.entry_hash != expected:
        return Problem(
            register,
            int(seq_text),
            f"entry {seq_text} no longer has the hash the auditor recorded: the chain was rewritten",
        )
    return None
