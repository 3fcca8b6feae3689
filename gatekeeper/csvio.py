"""Reading the CSV files marketers actually have: UTF-8 with or without BOM, or Windows-1252
(Excel's default in France), `,` or `;` delimited, quoted fields with newlines.

Files are streamed, never loaded whole: a million-row list stays within memory bounds.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from gatekeeper.errors import ValidationError

_SNIFF_BYTES = 64 * 1024
# "+33612345678" or "-12.5" is data, not a formula: leave phone numbers readable.
_PLAIN_NUMBER = re.compile(r"^[+-]?\d[\d .]*$")


@dataclass(frozen=True, slots=True)
class CsvFormat:
    encoding: str
    delimiter: str


def detect_format(path: Path) -> CsvFormat:
    return CsvFormat(_detect_encoding(path), _detect_delimiter(path))


def _detect_encoding(path: Path) -> str:
    # UTF-8 is decoded incrementally over the whole file: one bad byte anywhere means the
    # file came from Excel in Windows-1252, which decodes any byte sequence.
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as fh:
        try:
            while chunk := fh.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return "cp1252"
    return "utf-8-sig"


def _detect_delimiter(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(_SNIFF_BYTES)
    first_line = head.split(b"\n", 1)[0]
    return ";" if first_line.count(b";") > first_line.count(b",") else ","


def open_text(path: Path, fmt: CsvFormat) -> IO[str]:
    return path.open("r", encoding=fmt.encoding, newline="")


def read_header(path: Path, fmt: CsvFormat) -> list[str]:
    header, rows = read_rows(path, fmt)
    for _ in rows:  # start the generator so closing it closes the file
        break
    rows.close()  # type: ignore[attr-defined]
    return header


def read_rows(path: Path, fmt: CsvFormat | None = None) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """The header (stripped, lower-cased) and an iterator of (line number, values)."""
    fmt = fmt or detect_format(path)
    fh = open_text(path, fmt)
    reader = csv.reader(fh, delimiter=fmt.delimiter)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        fh.close()
        raise ValidationError("the file is empty: a header row is expected") from None
    except csv.Error as exc:
        fh.close()
        raise ValidationError(f"unreadable CSV header: {exc}") from exc
    return header, _numbered(reader, fh)


def _numbered(reader: Iterator[list[str]], fh: IO[str]) -> Iterator[tuple[int, list[str]]]:
    # Row numbers are the file's data rows counted from 1 after the header, as a
    # spreadsheet user sees them minus one; errors cite them as "row N".
    with fh:
        row = 0
        try:
            for values in reader:
                row += 1
                if any(map(str.strip, values)):  # C-level: no generator frame per row
                    yield row, values
        except csv.Error as exc:
            raise ValidationError(
                f"unreadable CSV at row {row + 1}: {exc}", [{"row": row + 1, "problem": str(exc)}]
            ) from exc


def write_safe_cell(value: str) -> str:
    """Neutralise spreadsheet formulas (CSV injection): a cell that starts with = + - @ or a
    control character is prefixed with a quote so Excel shows it as text."""
    if value and value[0] in "=+-@\t\r" and not _PLAIN_NUMBER.match(value):
        return "'" + value
    return value


def text_buffer() -> io.StringIO:
    return io.StringIO(newline="")
