"""Reading a campaign list a chunk of lines at a time, and writing verdict rows as text.

Theory of operation
-------------------
``csv.reader`` then ``csv.writer`` cost more than everything else the gate does per row. Most
lists hold no quote character at all: then a record is one line, its cells are the line split
on the delimiter, and ``csv.writer`` would write those cells back as the same text. So a chunk
without a quote (nor a NUL, nor a line longer than the csv module's field limit) is split with
``str`` methods and its verdict rows are the line plus the appended cells. The first chunk that
holds any of those hands the rest of the file to ``csv.reader`` and ``csv.writer``: same cells,
same row numbers, same errors as before.

Cells that would start a spreadsheet formula are neutralised (``csvio.write_safe_cell``): a
regular expression tells whether a plain chunk holds one; if so its rows are written cell by
cell.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from itertools import chain, islice
from typing import IO, Any

from gatekeeper.csvio import write_safe_cell
from gatekeeper.errors import ValidationError

Rows = list[list[str]]


class Chunk:
    """Consecutive records of the list. A plain chunk keeps each record's text without its line
    end (``lines``) and splits it into cells only when asked; ``writable`` says whether those
    texts are also their verdict rows' beginnings (no cell to neutralise)."""

    __slots__ = ("_rows", "delimiter", "lines", "writable")

    def __init__(
        self,
        rows: Rows | None,
        delimiter: str,
        lines: list[str] | None = None,
        writable: bool = False,
    ) -> None:
        self._rows, self.delimiter = rows, delimiter
        self.lines, self.writable = lines, writable

    def __len__(self) -> int:
        return len(self.lines) if self.lines is not None else len(self.rows)

    @property
    def rows(self) -> Rows:
        if self._rows is None:
            assert self.lines is not None
            d = self.delimiter
            self._rows = [line.split(d) for line in self.lines]
        return self._rows

    def cells(self, index: int) -> list[str]:
        """The cell at ``index`` of each record ("" when the record is shorter)."""
        if self.lines is not None and self._rows is None:
            d = self.delimiter
            if index == 0:
                return [line.partition(d)[0] for line in self.lines]
            try:
                return [line.split(d, index + 1)[index] for line in self.lines]
            except IndexError:
                pass  # a shorter record: read it from the split rows
        return [r[index] if index < len(r) else "" for r in self.rows]


def _formula_cell(delimiter: str) -> re.Pattern[str]:
    # A cell that write_safe_cell changes: it starts with = @ or a tab, or with + or - not
    # followed by a plain number up to the cell's end (csvio._PLAIN_NUMBER). Searched in the
    # chunk's text after a newline put in front, so the first cell has a separator too. The
    # pattern starts with the cell's first character, the separator before it looked behind:
    # tried at those characters only, not at every separator (40 % less time).
    d = re.escape(delimiter)
    return re.compile(rf"[=@\t+-](?<=[\n\r{d}].)(?:(?<=[=@\t])|(?!\d[\d .]*(?:[{d}\r\n]|\Z)))")


class ListReader:
    """The data records of an open list, a chunk at a time (the header already read)."""

    def __init__(self, src: IO[str], delimiter: str) -> None:
        self.src, self.delimiter = src, delimiter
        self.row = 0  # records read, as csvio counts them: the first after the header is row 1
        self.reader: Iterator[list[str]] | None = None  # set once a chunk is not plain
        self.formula = _formula_cell(delimiter)

    def chunks(self, size: int) -> Iterator[Chunk]:
        while True:
            chunk = self._csv_chunk(size) if self.reader else self._plain_chunk(size)
            if chunk is None:
                return
            yield chunk

    def _plain_chunk(self, size: int) -> Chunk | None:
        lines = list(islice(self.src, size))
        if not lines:
            return None
        text = "".join(lines)
        limit = csv.field_size_limit()
        if '"' in text or "\x00" in text or (len(text) > limit and max(map(len, lines)) > limit):
            self.reader = csv.reader(chain(lines, self.src), delimiter=self.delimiter)
            return self._csv_chunk(size)
        if "\r" in text:
            if text.count("\r") == text.count("\r\n") == text.count("\n"):  # Windows line ends only
                bare = (text[:-2] if text.endswith("\r\n") else text).split("\r\n")
            else:
                bare = [line.rstrip("\r\n") for line in lines]
        else:
            bare = (text[:-1] if text.endswith("\n") else text).split("\n")
        self.row += len(bare)
        writable = self.formula.search("\n" + text) is None
        return Chunk(None, self.delimiter, bare, writable)

    def _csv_chunk(self, size: int) -> Chunk | None:
        assert self.reader is not None
        rows: Rows = []
        append = rows.append
        try:
            for values in islice(self.reader, size):
                append(values)
        except csv.Error as exc:
            row = self.row + len(rows) + 1
            detail = {"row": row, "problem": str(exc)}
            raise ValidationError(f"unreadable CSV at row {row}: {exc}", [detail]) from exc
        if not rows:
            return None
        self.row += len(rows)
        return Chunk(rows, self.delimiter)


# A verdict as written: the delimited cells appended to the row ("suffix"), the decision and
# the reasons. None in a chunk's list of verdicts: a repeat or a blank record, not written.
Written = tuple[str, str, str]


def plain_verdict_text(
    lines: list[str], records: list[int] | None, picked: list[int], suffixes: list[str]
) -> str:
    """The verdict rows of a plain writable chunk: each written record's line and its
    verdict's suffix (``records``: the written records' indexes, None for every record),
    interleaved by slice assignment rather than a concatenation per row."""
    if records is not None:
        lines = list(map(lines.__getitem__, records))
    out = lines * 2
    out[1::2] = map(suffixes.__getitem__, picked)
    out[::2] = lines
    return "".join(out)


def verdict_text(
    chunk: Chunk,
    delimiter: str,
    picked: Sequence[int | None],
    written: list[Written],
    extra: list[list[str]] | None,
) -> str:
    """The text of the chunk's verdict rows: ``picked`` holds each record's index in
    ``written`` (None: not written), ``extra`` the link cells of each record when links are
    minted (then every row is written cell by cell)."""
    if chunk.lines is not None and chunk.writable and extra is None:
        return "".join(
            [line + written[i][0] for line, i in zip(chunk.lines, picked, strict=True) if i is not None]
        )
    sink = _Sink()
    out = []
    for n, (values, i) in enumerate(zip(chunk.rows, picked, strict=True)):
        if i is not None:
            _suffix, decision, reasons = written[i]
            cells = [write_safe_cell(c) for c in values] + [decision, reasons]
            out.append(cells if extra is None else cells + extra[n])
    csv.writer(sink, delimiter=delimiter).writerows(out)
    return "".join(sink.parts)


class _Sink:
    """A file-like target for csv.writer that keeps the text."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> Any:
        self.parts.append(text)
