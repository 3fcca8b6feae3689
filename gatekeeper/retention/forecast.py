"""How many contacts reach each retention state, month by month (API.md "Retention").

Per month (Europe/Paris calendar): ``reconsent_due`` = contacts whose ``deadline - lead``
falls in it (they will get the reconsent message), ``expired`` = contacts whose deadline falls
in it (unless they answer, the purge anonymises them that day). ``now`` counts the states at
``as_of``. Range counts on the indexed dates: cheap at any register size.
"""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.orm import Session

from gatekeeper.sqlbulk import dialect_of, ts_value
from gatekeeper.timeparse import isoformat

PARIS = ZoneInfo("Europe/Paris")
MAX_MONTHS = 60
_IN_MONTH = (
    "SELECT COUNT(*) FROM contacts WHERE {col} >= :start AND {col} < :end"
    " AND anonymised_at IS NULL AND refused_at IS NULL"
)
_NOW = {
    "reconsent_due": "reconsent_at <= :at AND deadline > :at AND anonymised_at IS NULL"
    " AND refused_at IS NULL",
    "expired": "anonymised_at IS NULL AND (deadline <= :at OR refused_at IS NOT NULL)",
    "anonymised": "anonymised_at IS NOT NULL",
}


def month_starts(as_of: datetime, months: int) -> list[datetime]:
    local = as_of.astimezone(PARIS)
    starts = []
    year, month = local.year, local.month
    for _ in range(months + 1):
        starts.append(datetime(year, month, 1, tzinfo=PARIS))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return starts


def _count(session: Session, sql: str, params: dict[str, Any]) -> int:
    return int(session.execute(text(sql), params).scalar_one())


def forecast(session: Session, as_of: datetime, months: int) -> dict[str, Any]:
    d = dialect_of(session)
    starts = month_starts(as_of, months)
    starts[0] = as_of  # the current month counts from now on
    rows = []
    for start, end in pairwise(starts):
        span = {"start": ts_value(d, start), "end": ts_value(d, end)}
        rows.append(
            {
                "month": end_month(end),
                "reconsent_due": _count(session, _IN_MONTH.format(col="reconsent_at"), span),
                "expired": _count(session, _IN_MONTH.format(col="deadline"), span),
            }
        )
    at = {"at": ts_value(d, as_of)}
    now = {
        state: _count(session, f"SELECT COUNT(*) FROM contacts WHERE {cond}", at)  # noqa: S608
        for state, cond in _NOW.items()
    }
    total = _count(session, "SELECT COUNT(*) FROM contacts", {})
    now["active"] = total - sum(now.values())
    return {"as_of": isoformat(as_of), "months": rows, "now": now}


def end_month(end: datetime) -> str:
    """The month a [start, end) span belongs to, named by its first day's month."""
    local = end.astimezone(PARIS)
    year, month = (local.year - 1, 12) if local.month == 1 else (local.year, local.month - 1)
    return f"{year:04d}-{month:02d}"
