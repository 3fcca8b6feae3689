"""A chunk of a campaign list's coordinates, normalised together (the bulk path, gate/bulk.py).

For e-mail one regular expression checks the whole chunk, joined by newlines, against
``normalize.normalise_email``'s own fast path: when it accepts, every address is its own
lower-cased text. A chunk it does not accept goes through ``recipients.parse_value`` row by
row, as the per-recipient path does.

For those plain addresses, ``classify_email`` (the domain's) is asked only about the ones a
pattern built from the policy flags: a generic local part or a personal mailbox domain. The
others are "other" by that function's own definition.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from gatekeeper.domain import Policy
from gatekeeper.gate.listread import Chunk
from gatekeeper.gate.recipients import parse_value

# normalize.normalise_email's fast path for a whole chunk joined by newlines: the same address
# pattern and refused special-use TLDs (the length limit and the "--" test are made on the
# chunk). Possessive where no backtracking could find a match: atext holds no "." nor "@".
_ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]"
_SPECIAL = "arpa|invalid|local|localhost|onion|test|example"
_ONE = (
    rf"{_ATEXT}++(?:\.{_ATEXT}++)*+@(?:[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\.)++"
    rf"(?!(?:{_SPECIAL})(?:\n|\Z))[a-z]{{2,63}}"
)
EMAILS = re.compile(rf"{_ONE}(?:\n{_ONE})*+")
MAX_EMAIL = 254


class Coordinates:
    """Normalises the coordinate column of each chunk of one list."""

    def __init__(self, kind: str, region: str, policy: Policy) -> None:
        self.kind, self.region = kind, region
        generic, personal = policy.generic_local_parts, policy.personal_mailbox_domains
        self.special = _special_addresses(generic, personal)
        self.generic = _special_addresses(generic, ())
        self.personal = re.compile(rf"@(?:{_alternatives(personal)})$", re.MULTILINE)

    def of(self, chunk: Chunk, index: int) -> tuple[Sequence[str | None], set[str] | None]:
        """Each record's normalised coordinate (None when invalid, "" for a blank record) and,
        for a chunk of plain addresses, the only ones that may be generic or personal."""
        cells = chunk.cells(index)
        if self.kind == "email":
            joined = "\n".join(cells).lower()
            if EMAILS.fullmatch(joined) and joined.count("\n") == len(cells) - 1 and "--" not in joined:
                plain = joined.split("\n")
                if max(map(len, plain)) <= MAX_EMAIL:
                    return plain, self.candidates(joined)
        kind, region = self.kind, self.region
        values = [
            (parse_value(0, kind, cell, region).value if _filled(r) else "")
            for r, cell in zip(chunk.rows, cells, strict=True)
        ]
        return values, None

    def candidates(self, joined: str) -> set[str]:
        """The plain addresses of a chunk that classify_email may not call "other" (the others
        are: see _special_addresses); most chunks have no personal mailbox domain at all."""
        lines = "\n" + joined  # each line starts after a newline (see _special_addresses)
        if self.personal.search(joined) is None:
            return set(self.generic.findall(lines))
        return set(self.special.findall(lines))


def _alternatives(words: Iterable[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words)) or "(?!)"


def _special_addresses(generic: Iterable[str], personal: Iterable[str]) -> re.Pattern[str]:
    """The lines of a chunk of plain addresses that classify_email may not call "other": a
    generic local part (before any "+tag") or a personal mailbox domain. A superset is enough:
    each candidate is classified by the domain function itself. Searched in the chunk with a
    newline put in front: a pattern that starts with a newline is tried at the newlines only
    (with ``^`` and MULTILINE, at every character: four times slower)."""
    parts, domains = _alternatives(generic), _alternatives(personal)
    return re.compile(rf"\n((?:{parts})[+@][^\n]*+|[^\n@]*+@(?:{domains})(?=\n|\Z))")


def _filled(values: list[str]) -> bool:
    return bool(values) and any(map(str.strip, values))
