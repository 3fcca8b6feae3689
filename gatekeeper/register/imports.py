"""CSV imports of contacts, events and suppressions: one code path for the API's jobs and the
CLI. All-or-nothing: every row is validated while it is staged; if any row is bad, nothing is
applied and the error lists the first 100 problems with row and field."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from gatekeeper.csvio import read_rows
from gatekeeper.errors import ValidationError
from gatekeeper.models import utcnow
from gatekeeper.register.contact_import import PROGRESS_EVERY, import_contacts
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.events import EventRecord, append_events, parse_event
from gatekeeper.register.schema import Problems
from gatekeeper.register.suppressions import (
    SuppressionRecord,
    add_suppressions,
    parse_suppression,
)

__all__ = ["KINDS", "PROGRESS_EVERY", "count_rows", "import_file"]  # PROGRESS_EVERY: jobs, CLI
KINDS = ("contacts", "events", "suppressions")
Progress = Callable[[int], None]


def count_rows(path: Path) -> int:
    """An estimate for progress bars (quoted newlines count twice; the bar is closed at the end)."""
    with path.open("rb") as fh:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    return max(lines - 1, 0)


def _dicts(path: Path, progress: Progress) -> Iterator[tuple[int, dict[str, Any]]]:
    header, rows = read_rows(path)
    width = len(header)
    for row, values in rows:
        if row % PROGRESS_EVERY == 0:
            progress(row)
        # Missing trailing cells read as empty; extra cells are a broken row, reported below.
        item: dict[str, Any] = dict(zip(header, values, strict=False))
        if len(values) > width:
            item["__extra__"] = len(values) - width
        yield row, item


def _refuse(problems: Problems, kind: str) -> None:
    if problems:
        more = f" (showing the first {len(problems.items)})" if problems.total > len(problems.items) else ""
        raise ValidationError(
            f"{problems.total} invalid row(s) in the {kind} file{more}; nothing was stored",
            problems.items,
        )


def _extra(row: int, item: dict[str, Any], problems: Problems) -> bool:
    if "__extra__" in item:
        problems.add(row, None, f"{item['__extra__']} more value(s) than header columns")
        return True
    return False


def import_file(
    session: Session,
    kind: str,
    path: Path,
    ctx: RegisterContext,
    progress: Progress = lambda _n: None,
) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValidationError(f"unknown import kind {kind!r}; expected one of {', '.join(KINDS)}")
    problems = Problems()
    runner = {"contacts": _contacts, "events": _events, "suppressions": _suppressions}[kind]
    return runner(session, path, ctx, problems, progress)


def _contacts(
    session: Session, path: Path, ctx: RegisterContext, _problems: Problems, progress: Progress
) -> dict[str, Any]:
    # Its own path (contact_import.py): a million-row list must not cost a dict per row.
    return import_contacts(session, path, ctx, progress, lambda p: _refuse(p, "contacts"))


def _events(
    session: Session, path: Path, ctx: RegisterContext, problems: Problems, progress: Progress
) -> dict[str, Any]:
    now = utcnow()

    def records() -> Iterator[EventRecord]:
        for row, item in _dicts(path, progress):
            if not _extra(row, item, problems) and (rec := parse_event(item, row, problems, ctx.region, now)):
                yield rec

    result = append_events(
        session, records(), ctx, origin="import", before_apply=lambda: _refuse(problems, "events")
    )
    return {"stored": result.stored, "duplicates": result.duplicates}


def _suppressions(
    session: Session, path: Path, ctx: RegisterContext, problems: Problems, progress: Progress
) -> dict[str, Any]:
    now = utcnow()
    entries: list[SuppressionRecord] = []
    for row, item in _dicts(path, progress):
        if not _extra(row, item, problems):
            entries.extend(parse_suppression(item, row, problems, ctx.region, now))
    _refuse(problems, "suppressions")
    stored = add_suppressions(session, entries, ctx.hasher, origin="import")
    return {"stored": stored}
