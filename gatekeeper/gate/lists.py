"""Campaign lists of any size: a CSV in, the same rows out with ``decision`` and ``reasons``
appended. The output is written to a temporary file and renamed only when complete, so a
partial verdict file is never presented as the answer."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from gatekeeper.csvio import (
    CsvFormat,
    detect_format,
    open_text,
    read_header,
    read_rows,
    write_safe_cell,
)
from gatekeeper.domain import Campaign
from gatekeeper.errors import ValidationError
from gatekeeper.gate.engine import Decided, decide_recipients, finish
from gatekeeper.gate.recipients import Recipient, coordinate_kind, parse_value
from gatekeeper.register.context import RegisterContext

Progress = Callable[[int], None]
PROGRESS_EVERY = 50_000
# Extra columns for allowed rows (signed links), filled by a link minter when one is given.
LinkMinter = Callable[[int | None], tuple[str, str]]
Item = tuple[int, str, str]  # contact id, decision, reasons


def coordinate_column(header: list[str], channel: str) -> tuple[int, str]:
    wanted = coordinate_kind(channel)
    for kind in (wanted, "external_id"):
        if kind in header:
            return header.index(kind), kind
    raise ValidationError(
        f"a {channel} campaign list needs a '{wanted}' column (or 'external_id'); found: {', '.join(header)}",
        [{"row": 0, "field": wanted, "problem": "missing column"}],
    )


def _recipients(
    path: Path, fmt: CsvFormat, index: int, kind: str, region: str, progress: Progress
) -> Iterator[Recipient]:
    _header, rows = read_rows(path, fmt)
    for row, values in rows:
        if row % PROGRESS_EVERY == 0:
            progress(row)
        raw = values[index] if index < len(values) else ""
        yield parse_value(row, kind, raw, region)


def decide_list(
    session: Session,
    ctx: RegisterContext,
    campaign: Campaign,
    as_of: datetime,
    in_path: Path,
    out_path: Path,
    progress: Progress = lambda _n: None,
    links: LinkMinter | None = None,
    items: list[Item] | None = None,
) -> dict[str, Any]:
    """Decide the list into ``out_path``; ``items`` (when given) receives the verdict of each
    known contact, for the register's proof."""
    fmt = detect_format(in_path)
    header = read_header(in_path, fmt)
    index, kind = coordinate_column(header, campaign.channel)
    staged, decided = decide_recipients(
        session, ctx, campaign, as_of, _recipients(in_path, fmt, index, kind, ctx.region, progress)
    )
    tmp = out_path.with_suffix(".partial")
    try:
        summary = _write(in_path, fmt, tmp, decided, links, items)
    finally:
        finish(session)
    tmp.replace(out_path)
    summary.update(recipients=staged.total, duplicates=staged.duplicates)
    return summary


def _write(
    in_path: Path,
    fmt: CsvFormat,
    out_path: Path,
    decided: Iterator[Decided],
    links: LinkMinter | None,
    items: list[Item] | None,
) -> dict[str, Any]:
    allowed = blocked = 0
    by_reason: Counter[str] = Counter()
    extra = ["decision", "reasons"] + (["unsubscribe_url", "preferences_url"] if links else [])
    with (
        out_path.open("w", encoding="utf-8-sig", newline="") as out,
        open_text(in_path, fmt) as src,
    ):
        reader = csv.reader(src, delimiter=fmt.delimiter)
        writer = csv.writer(out, delimiter=fmt.delimiter)
        writer.writerow([write_safe_cell(h) for h in next(reader)] + extra)
        inputs = _data_rows(reader)
        for d in decided:
            values = _advance(inputs, d.row)
            v = d.verdict
            cells = [write_safe_cell(c) for c in values] + [v.decision, " ".join(v.reasons)]
            if links:
                cells += list(links(d.contact_id)) if v.decision == "allow" and d.contact_id else ["", ""]
            writer.writerow(cells)
            if items is not None and d.contact_id is not None:
                items.append((d.contact_id, v.decision, cells[-1 - (2 if links else 0)]))
            by_reason[v.reasons[0]] += 1
            if v.decision == "allow":
                allowed += 1
            else:
                blocked += 1
    return {"allowed": allowed, "blocked": blocked, "by_reason": dict(by_reason.most_common())}


def _data_rows(reader: Iterator[list[str]]) -> Iterator[tuple[int, list[str]]]:
    # Same numbering as csvio.read_rows: blank lines are not rows.
    for row, values in enumerate(reader, start=1):
        if values and any(v.strip() for v in values):
            yield row, values


def _advance(inputs: Iterator[tuple[int, list[str]]], target: int) -> list[str]:
    """The input row with this number; rows in between were duplicates, decided once."""
    for row, values in inputs:
        if row == target:
            return values
    raise RuntimeError(f"verdict for row {target} has no input row")
