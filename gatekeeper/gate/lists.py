"""Campaign lists of any size: a CSV in, the same rows out with ``decision`` and ``reasons``
appended. The output is written to a temporary file and renamed only when complete, so a
partial verdict file is never presented as the answer."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from gatekeeper.csvio import detect_format, write_safe_cell
from gatekeeper.domain import Campaign
from gatekeeper.errors import ValidationError
from gatekeeper.gate.engine import CHUNK, Decided, Decider
from gatekeeper.gate.recipients import Recipient, coordinate_kind, parse_value
from gatekeeper.register.context import RegisterContext

Progress = Callable[[int], None]
PROGRESS_EVERY = 50_000
IO_BUFFER = 1 << 20  # fewer system calls on files of tens of megabytes
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
    chunk: int = CHUNK,
) -> dict[str, Any]:
    """Decide the list into ``out_path`` in one pass over the file; ``items`` (when given)
    receives the verdict of each known contact, for the register's proof."""
    fmt = detect_format(in_path)
    tmp = out_path.with_suffix(".partial")
    try:
        with (
            in_path.open(encoding=fmt.encoding, newline="", buffering=IO_BUFFER) as src,
            tmp.open("w", encoding="utf-8-sig", newline="", buffering=IO_BUFFER) as out,
        ):
            summary = _decide_file(
                _Job(session, ctx, campaign, as_of, ctx.region, progress, links, items, chunk),
                csv.reader(src, delimiter=fmt.delimiter),
                csv.writer(out, delimiter=fmt.delimiter),
            )
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave a partial verdict file behind
        raise
    tmp.replace(out_path)
    return summary


@dataclass
class _Job:
    session: Session
    ctx: RegisterContext
    campaign: Campaign
    as_of: datetime
    region: str
    progress: Progress
    links: LinkMinter | None
    items: list[Item] | None
    chunk: int


def _decide_file(job: _Job, reader: Iterator[list[str]], writer: Any) -> dict[str, Any]:
    raw_header = _header(reader)
    index, kind = coordinate_column([h.strip().lower() for h in raw_header], job.campaign.channel)
    extra = ["decision", "reasons"] + (["unsubscribe_url", "preferences_url"] if job.links else [])
    writer.writerow([write_safe_cell(h) for h in raw_header] + extra)
    decider = Decider(job.session, job.ctx, job.campaign, job.as_of, chunk=job.chunk)
    tally = _Tally()
    read = 0
    for chunk, recipients in _chunks(reader, index, kind, job):
        for (_row, values), decided in zip(chunk, decider.decide_chunk(recipients), strict=True):
            if decided is not None:  # a repeat was decided at its first row
                writer.writerow(tally.add(job, values, decided))
        if (read + len(chunk)) // PROGRESS_EVERY > read // PROGRESS_EVERY:
            job.progress(read + len(chunk))
        read += len(chunk)
    staged = decider.staged
    return tally.summary() | {"recipients": staged.total, "duplicates": staged.duplicates}


def _header(reader: Iterator[list[str]]) -> list[str]:
    try:
        return next(reader)
    except StopIteration:
        raise ValidationError("the file is empty: a header row is expected") from None
    except csv.Error as exc:
        raise ValidationError(f"unreadable CSV header: {exc}") from exc


Rows = list[tuple[int, list[str]]]


def _chunks(
    reader: Iterator[list[str]], index: int, kind: str, job: _Job
) -> Iterator[tuple[Rows, list[Recipient]]]:
    """The file's rows a chunk at a time, with the recipient each names."""
    rows, region = _data_rows(reader), job.region
    while chunk := list(islice(rows, job.chunk)):
        yield (
            chunk,
            [
                parse_value(row, kind, values[index] if index < len(values) else "", region)
                for row, values in chunk
            ],
        )


class _Tally:
    def __init__(self) -> None:
        self.allowed = self.blocked = 0
        self.by_reason: Counter[str] = Counter()

    def add(self, job: _Job, values: list[str], d: Decided) -> list[str]:
        """The output cells of one decided row, counted."""
        v = d.verdict
        reasons = " ".join(v.reasons)
        cells = [write_safe_cell(c) for c in values] + [v.decision, reasons]
        if job.links:
            cells += list(job.links(d.contact_id)) if v.decision == "allow" and d.contact_id else ["", ""]
        if job.items is not None and d.contact_id is not None:
            job.items.append((d.contact_id, v.decision, reasons))
        self.by_reason[v.reasons[0]] += 1
        if v.decision == "allow":
            self.allowed += 1
        else:
            self.blocked += 1
        return cells

    def summary(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "blocked": self.blocked,
            "by_reason": dict(self.by_reason.most_common()),
        }


def _data_rows(reader: Iterator[list[str]]) -> Iterator[tuple[int, list[str]]]:
    # Same numbering as csvio.read_rows: blank lines are not rows.
    row = 0
    try:
        for values in reader:
            row += 1
            if values and any(v.strip() for v in values):
                yield row, values
    except csv.Error as exc:
        detail = {"row": row + 1, "problem": str(exc)}
        raise ValidationError(f"unreadable CSV at row {row + 1}: {exc}", [detail]) from exc
