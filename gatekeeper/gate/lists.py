"""Campaign lists of any size: a CSV in, the same rows out with ``decision`` and ``reasons``
appended. The output is written to a temporary file and renamed only when complete, so a
partial verdict file is never presented as the answer."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.orm import Session

from gatekeeper.csvio import detect_format, write_safe_cell
from gatekeeper.domain import Campaign
from gatekeeper.errors import ValidationError
from gatekeeper.gate.bulk import BulkDecider
from gatekeeper.gate.engine import CHUNK
from gatekeeper.gate.listread import ListReader, Written, plain_verdict_text, verdict_text
from gatekeeper.gate.recipients import coordinate_kind
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
    unwritten: bool = False,
) -> dict[str, Any]:
    """Decide the list into ``out_path`` in one pass over the file; ``items`` (when given)
    receives the verdict of each known contact, for the register's proof. ``unwritten``: the
    caller knows its session has written nothing in its open transaction, so other connections
    read what it would (on SQLite a session that may write begins its transaction IMMEDIATE,
    so an open transaction tells nothing)."""
    fmt = detect_format(in_path)
    tmp = out_path.with_suffix(".partial")
    try:
        with (
            in_path.open(encoding=fmt.encoding, newline="", buffering=IO_BUFFER) as src,
            tmp.open("w", encoding="utf-8-sig", newline="", buffering=IO_BUFFER) as out,
        ):
            job = _Job(session, ctx, campaign, as_of, progress, links, items, chunk, unwritten)
            summary = _decide_file(job, src, out, fmt.delimiter, _estimated_rows(in_path))
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
    progress: Progress
    links: LinkMinter | None
    items: list[Item] | None
    chunk: int
    unwritten: bool


def _decide_file(job: _Job, src: TextIO, out: TextIO, delimiter: str, expected_rows: int) -> dict[str, Any]:
    raw_header = _header(csv.reader(src, delimiter=delimiter))
    index, kind = coordinate_column([h.strip().lower() for h in raw_header], job.campaign.channel)
    extra = ["decision", "reasons"] + (["unsubscribe_url", "preferences_url"] if job.links else [])
    csv.writer(out, delimiter=delimiter).writerow([write_safe_cell(h) for h in raw_header] + extra)
    decider = BulkDecider(
        job.session,
        job.ctx,
        job.campaign,
        job.as_of,
        kind,
        chunk=job.chunk,
        expected_rows=expected_rows,
        unwritten=job.unwritten,
    )
    decider.delimiter = delimiter
    decider.want_ids = job.items is not None or job.links is not None
    written = decider.written
    read = 0
    # Closed on any error here, so the probe threads are done before the session goes away.
    suffixes = decider.suffixes
    with closing(decider.run(ListReader(src, delimiter).chunks(job.chunk), index)) as decided:
        for verdicts in decided:
            chunk, records, picked, contact_ids, recipients = verdicts
            if job.items is not None:
                job.items.extend(
                    (c, written[i][1], written[i][2])
                    for c, i in zip(contact_ids, picked, strict=True)
                    if c is not None
                )
            if chunk.lines is not None and chunk.writable and not job.links:
                out.write(plain_verdict_text(chunk.lines, records, picked, suffixes))
            else:
                per_record, per_contact = verdicts.per_record()
                links = (
                    _links(job.links, per_contact, [None if i is None else written[i] for i in per_record])
                    if job.links
                    else None
                )
                out.write(verdict_text(chunk, delimiter, per_record, written, links))
            done = read + recipients
            if done // PROGRESS_EVERY > read // PROGRESS_EVERY:
                job.progress(done)
            read = done
    return decider.summary()


def _links(
    minter: LinkMinter, contact_ids: list[int | None], verdicts: list[Written | None]
) -> list[list[str]]:
    """The link cells of each record: signed links for an allowed known contact."""
    return [
        list(minter(c)) if c and v is not None and v[1] == "allow" else ["", ""]
        for c, v in zip(contact_ids, verdicts, strict=True)
    ]


def _estimated_rows(path: Path) -> int:
    """The list's length from its size and the line length of its first 64 KiB."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(1 << 16)
    return size * (head.count(b"\n") + 1) // max(len(head), 1)


def _header(reader: Iterator[list[str]]) -> list[str]:
    try:
        return next(reader)
    except StopIteration:
        raise ValidationError("the file is empty: a header row is expected") from None
    except csv.Error as exc:
        raise ValidationError(f"unreadable CSV header: {exc}") from exc
