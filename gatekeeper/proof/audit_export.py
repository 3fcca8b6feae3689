"""The register-wide audit export (``gatekeeper audit export --as-of … DIR``): what an inspector
asks for, as CSV files plus one readable HTML summary. Aggregates only, plus references (ids,
dates) where an auditor must be able to pick a case and ask for its evidence pack; never a
coordinate or a name.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from statistics import median
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import text
from sqlalchemy.orm import Session

from gatekeeper.config import PROJECT_ROOT
from gatekeeper.csvio import write_safe_cell
from gatekeeper.proof.verify import verify
from gatekeeper.register.context import RegisterContext
from gatekeeper.sqlbulk import dialect_of, read_json, read_ts, ts_value
from gatekeeper.timeparse import isoformat


@dataclass(slots=True)
class Table:
    name: str
    title: str
    header: list[str]
    rows: Sequence[Sequence[Any]] = field(default_factory=list)


def export(session: Session, ctx: RegisterContext, as_of: datetime, out: Path) -> list[Table]:
    at = ts_value(dialect_of(session), as_of)
    tables = [
        _basis(session, at),
        _retention(session, at),
        _reconsent(session, at),
        _anonymisations(session, at),
        _objections(session, at),
        _policies(session, at),
        _journal(session, ctx),
    ]
    out.mkdir(parents=True, exist_ok=True)
    for table in tables:
        with (out / f"{table.name}.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(table.header)
            # Opened in a spreadsheet by the inspector: text cells never start a formula.
            writer.writerows(
                [write_safe_cell(c) if isinstance(c, str) else c for c in row] for row in table.rows
            )
    (out / "summary.html").write_text(_render(tables, ctx, as_of), encoding="utf-8")
    return tables


def _consents_in_force(session: Session, at: Any) -> Iterable[tuple[int, str, bool]]:
    """The last consent answer per contact and channel (streamed in time order)."""
    latest: dict[tuple[int, str], bool] = {}
    rows = session.execute(
        text(
            "SELECT e.contact_id, e.data FROM events e JOIN contacts c ON c.id = e.contact_id"
            " WHERE e.type = 'consent' AND e.occurred_at <= :at AND c.anonymised_at IS NULL"
            " ORDER BY e.occurred_at, e.id"
        ),
        {"at": at},
    )
    for contact_id, data in rows:
        payload = read_json(data)
        latest[(int(contact_id), str(payload.get("channel")))] = bool(payload.get("given"))
    return ((cid, chan, given) for (cid, chan), given in latest.items())


def _basis(session: Session, at: Any) -> Table:
    counts: Counter[tuple[str, str]] = Counter()
    for _cid, channel, given in _consents_in_force(session, at):
        counts[(channel, "consent" if given else "consent_withdrawn")] += 1
    clients = session.execute(
        text(
            "SELECT count(*) FROM contacts WHERE clock = 'client' AND anonymised_at IS NULL"
            " AND collected_at <= :at"
        ),
        {"at": at},
    ).scalar_one()
    counts[("email+sms", "client_relationship (soft opt-in when the gate's other conditions hold)")] = int(
        clients
    )
    rows = [(chan, basis, n) for (chan, basis), n in sorted(counts.items())]
    return Table(
        "basis_by_channel",
        "Contacts by legal basis on record and channel",
        ["channel", "basis", "contacts"],
        rows,
    )


def _retention(session: Session, at: Any) -> Table:
    rows = session.execute(
        text(
            "SELECT CASE WHEN anonymised_at IS NOT NULL THEN 'anonymised'"
            " WHEN refused_at IS NOT NULL OR deadline <= :at THEN 'expired'"
            " WHEN reconsent_at <= :at THEN 'reconsent_due' ELSE 'active' END AS state, clock, count(*)"
            " FROM contacts WHERE collected_at <= :at GROUP BY 1, 2 ORDER BY 1, 2"
        ),
        {"at": at},
    ).all()
    return Table(
        "contacts_by_retention_state",
        "Contacts by retention state",
        ["state", "clock", "contacts"],
        [tuple(r) for r in rows],
    )


def _reconsent(session: Session, at: Any) -> Table:
    answers: Counter[str] = Counter()
    for (data,) in session.execute(
        text("SELECT data FROM events WHERE type = 'consent' AND occurred_at <= :at"), {"at": at}
    ):
        payload = read_json(data)
        if payload.get("method") == "reconsent":
            answers["accepted" if payload.get("given") else "refused"] += 1
    sent = session.execute(
        text(
            "SELECT state, count(*) FROM outbox WHERE kind LIKE 'reconsent%'"
            " AND created_at <= :at GROUP BY state"
        ),
        {"at": at},
    ).all()
    rows = [("sent", state, int(n)) for state, n in sent] + [
        ("answer", k, n) for k, n in sorted(answers.items())
    ]
    expired = session.execute(
        text("SELECT count(*) FROM contacts WHERE refused_at IS NOT NULL AND refused_at <= :at"), {"at": at}
    ).scalar_one()
    rows.append(("answer", "refused_or_unanswered_contacts", int(expired)))
    return Table(
        "reconsent_results", "Reconsent: messages sent and answers", ["step", "result", "count"], rows
    )


def _anonymisations(session: Session, at: Any) -> Table:
    counts: Counter[tuple[str, str]] = Counter()
    for anonymised_at, attributes in session.execute(
        text("SELECT anonymised_at, attributes FROM contacts WHERE anonymised_at <= :at"), {"at": at}
    ):
        reason = (read_json(attributes) or {}).get("anonymised_reason", "unknown")
        counts[(read_ts(anonymised_at).strftime("%Y-%m"), str(reason))] += 1
    rows = [(month, reason, n) for (month, reason), n in sorted(counts.items())]
    return Table("anonymisations", "Anonymisations performed", ["month", "reason", "contacts"], rows)


def _objections(session: Session, at: Any) -> Table:
    """Objections honoured and their delay: from the moment the person objected to the moment
    the register recorded it (from then on the gate blocks every channel named)."""
    rows = []
    for eid, cid, occurred_at, created_at, data in session.execute(
        text(
            "SELECT id, contact_id, occurred_at, created_at, data FROM events WHERE type = 'opposition'"
            " AND occurred_at <= :at ORDER BY occurred_at"
        ),
        {"at": at},
    ):
        delay = (read_ts(created_at) - read_ts(occurred_at)).total_seconds() / 3600
        payload = read_json(data)
        rows.append(
            (
                int(eid),
                int(cid),
                isoformat(read_ts(occurred_at)),
                isoformat(read_ts(created_at)),
                round(max(delay, 0.0), 2),
                ";".join(payload.get("channels") or []),
                payload.get("via") or "",
            )
        )
    return Table(
        "objections",
        "Objections honoured and their delay (hours)",
        ["event_id", "contact_id", "objected_at", "recorded_at", "delay_hours", "channels", "via"],
        rows,
    )


def _policies(session: Session, at: Any) -> Table:
    rows = session.execute(
        text(
            "SELECT policy_id, policy_version, count(*), min(as_of), max(as_of) FROM verdict_runs"
            " WHERE as_of <= :at GROUP BY policy_id, policy_version ORDER BY min(as_of)"
        ),
        {"at": at},
    ).all()
    return Table(
        "policy_versions",
        "Policy versions in force (verdict runs)",
        ["policy", "version", "runs", "first_as_of", "last_as_of"],
        [(p, v, int(n), isoformat(read_ts(a)), isoformat(read_ts(b))) for p, v, n, a, b in rows],
    )


def _journal(session: Session, ctx: RegisterContext) -> Table:
    report = verify(session, ctx.hasher)
    rows: list[Sequence[Any]] = [
        ("result", "intact" if report.ok else "BROKEN"),
        ("entries", report.entries),
        ("facts_checked", report.facts_checked),
        ("facts_anonymised", report.facts_anonymised),
    ]
    rows += [(f"head {reg}", f"{head['seq']}:{head['entry_hash']}") for reg, head in report.heads.items()]
    if report.problem is not None:
        rows.append(("first_problem", f"entry {report.problem.seq}: {report.problem.problem}"))
    return Table("journal_verification", "Journal verification", ["item", "value"], rows)


def _render(tables: list[Table], ctx: RegisterContext, as_of: datetime) -> str:
    env = Environment(
        loader=FileSystemLoader(PROJECT_ROOT / "templates"), autoescape=select_autoescape(["html"])
    )
    return env.get_template("proof/audit_summary.html").render(
        tables=tables, as_of=isoformat(as_of), policy=ctx.policy, medians=_median_delay(tables)
    )


def _median_delay(tables: list[Table]) -> float | None:
    delays = [float(r[4]) for t in tables if t.name == "objections" for r in t.rows]
    return median(delays) if delays else None
