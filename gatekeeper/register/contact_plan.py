"""A contact CSV row to a staging tuple, with the column → field mapping decided once per file.

Theory of operation. ``parse_contact`` (the reference) turns a dict per row into a
``ContactRecord``; at a million rows the dict, the flattening and the spec table cost more than
storing the row. ``ContactPlan`` is compiled from the header instead: it knows which cell holds
which field, reads the row's list of cells by index, and builds the tuple that is staged.

The plan handles the common, valid case only. Whenever a row is not plainly valid (a cell too
long, an address the fast normalisers do not vouch for, an unknown source type...) it answers
``None`` and the caller runs the reference ``parse_contact`` on that row, which reports the
problem with the usual words, or accepts the row; ``stage_tuple`` then turns its record into
the same tuple. tests/test_contact_plan.py proves both routes give equal tuples.

Fields that depend only on a few discrete cells (collection date, audience, source, purpose,
time zone, tags) are validated once per distinct combination and numbered: a ``Facts`` entry
carries the parsed values with the retention clock and gate profile computed by the domain
core, and the staged row only holds its number.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from operator import itemgetter
from typing import Any

from gatekeeper.normalize import CoordinateError, normalise_email, normalise_phone
from gatekeeper.register.contact_facts import Facts, FactTable, facts_of
from gatekeeper.register.contacts import (
    ADDRESS_FIELDS,
    CONTACT_SPECS,
    NAME_MAX,
    NESTED,
    ContactRecord,
    parse_contact,
)
from gatekeeper.register.schema import Problems, apply_specs
from gatekeeper.security import KeyedHasher
from gatekeeper.sqlbulk import json_value

# Per-row cells, in staging order; a field is staged only when its column is in the file.
COORDINATE_FIELDS = ("email", "phone")
TEXT_FIELDS = ("external_id", "first_name", "last_name", "source.name", "source.proof_ref")
FACT_FIELDS = (
    "collected_at",
    "audience",
    "source.type",
    "purpose",
    "collected_by",
    "timezone",
    "profession_tags",
)
FACT_SPECS = {name: CONTACT_SPECS[name] for name in FACT_FIELDS}
# Address cells repeat (cities, postcodes): their JSON is memoised up to this many spellings.
ADDRESS_MEMO_MAX = 100_000
# Rows per batch: large enough to amortise a pipe message or an executemany, small enough to
# keep the reading and the storing process both busy; with their keyed hashes (64 hex
# characters each), 2,000 rows pickle to about 250 KiB: the 1 MiB pipe holds four batches.
BATCH = 2_000
Batch = list[tuple[Any, ...]]


class ContactPlan:
    """Compiled from one file's header; ``stage_row`` per row (see the module docstring)."""

    def __init__(self, header: Sequence[str], facts: FactTable, region: str) -> None:
        self.facts, self.region = facts, region
        index = {name: i for i, name in enumerate(header)}
        # Duplicate or bare nested column names make the reference parser read rows differently
        # (last one wins, "expected an object"): such files take the reference path throughout.
        compiled = len(index) == len(header) and not any(n in index for n in NESTED)
        self.width = len(header) if compiled else -1
        self.coordinates = [(f, index[f]) for f in COORDINATE_FIELDS if f in index]
        self.texts = [(f, index[f]) for f in TEXT_FIELDS if f in index]
        address = ((f, index.get(f"postal_address.{f}")) for f in ADDRESS_FIELDS)
        self.address = [(f, i) for f, i in address if i is not None]
        self.attributes = [(n.split(".", 1)[1], i) for n, i in index.items() if n.startswith("attributes.")]
        fact_cols = [(f, index[f]) for f in FACT_FIELDS if f in index]
        self._fact_names = [f for f, _ in fact_cols]
        self._fact_cells = _getter([i for _, i in fact_cols])
        self._text_cells = _getter([i for _, i in self.texts])
        self._address_cells = _getter([i for _, i in self.address])
        self._fact_memo: dict[Any, int | None] = {}
        self._address_memo: dict[Any, str] = {}
        self._has_external_id = "external_id" in index
        self.fields = self._staged_fields()

    def _staged_fields(self) -> list[tuple[str, str]]:
        """(column, kind) of the staging tuple after row_no, in the order ``stage_row`` builds."""
        out = [(f, "text") for f, _ in self.coordinates]
        out += [(f.replace(".", "_"), "text") for f, _ in self.texts]
        if self.address:
            out.append(("postal_address", "json"))
        if self.attributes:
            out.append(("attributes", "json"))
        return [*out, ("fact_id", "int")]

    # --- the fast route -------------------------------------------------------------------

    def stage_row(self, row: int, values: list[str]) -> tuple[Any, ...] | None:
        """The staging tuple of a plainly valid row, else None (ask ``parse_contact``)."""
        joined = "".join(values)
        # One join finds a NUL in any cell about seven times faster than a test per cell.
        if len(values) != self.width or "\x00" in joined:
            return None  # the reference validator names the cell (a NUL cannot be stored)
        fact_id = self._fact_memo.get(self._fact_cells(values), -1)  # a memo hit without a call
        if fact_id == -1:
            fact_id = self._fact_id(values)
        if fact_id is None:
            return None
        texts = [v.strip() for v in self._text_cells(values)]
        # A row no longer than the limit cannot hold a cell longer than it.
        if len(joined) > NAME_MAX and texts and max(map(len, texts)) > NAME_MAX:
            return None
        coordinates = self._coordinates(values)
        if coordinates is None:
            return None
        if not ((self._has_external_id and texts[0]) or any(coordinates)):
            return None  # "a contact needs an external_id, an email or a phone"
        if self.attributes or not self.address:
            return (row, *coordinates, *texts, *self._json_cells(values), fact_id)
        address = self._address_memo.get(self._address_cells(values))  # the usual file
        if address is None:
            address = self._address_json(values)
        return (row, *coordinates, *texts, address, fact_id)

    def _coordinates(self, values: list[str]) -> list[str] | None:
        """The normalised value per coordinate column ('' when empty); None if not plain."""
        out: list[str] = []
        for kind, i in self.coordinates:
            raw = values[i]
            if not raw:
                out.append("")
                continue
            try:
                out.append(normalise_email(raw) if kind == "email" else normalise_phone(raw, self.region))
            except CoordinateError:
                return None
        return out

    def _json_cells(self, values: list[str]) -> tuple[str, ...]:
        out: tuple[str, ...] = ()
        if self.address:
            out += (self._address_json(values),)
        if self.attributes:
            attrs = {name: values[i] for name, i in self.attributes if values[i] != ""}
            out += ((json_value(attrs) or "") if attrs else "",)
        return out

    def _address_json(self, values: list[str]) -> str:
        key = self._address_cells(values)
        found = self._address_memo.get(key)
        if found is None:
            address = {f: values[i] for f, i in self.address if values[i] != ""}
            found = (json_value(address) or "") if address else ""
            if len(self._address_memo) < ADDRESS_MEMO_MAX:
                self._address_memo[key] = found
        return found

    def _fact_id(self, values: list[str]) -> int | None:
        key = self._fact_cells(values)
        try:
            return self._fact_memo[key]
        except KeyError:
            pass
        found = self._parse_facts(key)
        self._fact_memo[key] = found
        return found

    def _parse_facts(self, key: tuple[str, ...]) -> int | None:
        """Validates a combination once with the reference specs; None if any cell is bad."""
        raw = dict(zip(self._fact_names, key, strict=True))
        values = apply_specs(raw, FACT_SPECS, 0, Problems())
        if values is None:
            return None
        return self.facts.id_of(
            Facts(
                values["audience"] or "b2c",
                tuple(values["profession_tags"] or ()),
                values["collected_at"],
                values["collected_by"],
                values["source.type"] or "direct",
                values["purpose"] or "marketing",
                values["timezone"],
            )
        )

    # --- the reference route ------------------------------------------------------------

    def stage_tuple(self, r: ContactRecord) -> tuple[Any, ...]:
        """The staging tuple of a record accepted by ``parse_contact``."""
        coordinates = [(r.email if kind == "email" else r.phone) or "" for kind, _ in self.coordinates]
        by_field = {
            "external_id": r.external_id,
            "first_name": r.first_name,
            "last_name": r.last_name,
            "source.name": r.source_name,
            "source.proof_ref": r.source_proof_ref,
        }
        texts = [by_field[f] or "" for f, _ in self.texts]
        json_cells: tuple[str, ...] = ()
        if self.address:
            json_cells += ((json_value(r.postal_address) or "") if r.postal_address else "",)
        if self.attributes:
            json_cells += ((json_value(r.attributes) or "") if r.attributes else "",)
        return (r.row, *coordinates, *texts, *json_cells, self.facts.id_of(facts_of(r)))


def staged_batches(
    plan: ContactPlan,
    header: list[str],
    rows: Iterator[tuple[int, list[str]]],
    problems: Problems,
    size: int = BATCH,
) -> Generator[tuple[int, Batch], None, None]:
    """The staging tuples of every valid row, a fresh list every ``size`` rows read, each with
    the number of the last row read (progress); problems are collected for the other rows.
    Batches rather than a tuple at a time: a generator step per row, here and in each layer
    above, cost as much as validating the row."""
    stage_row = plan.stage_row
    batch: Batch = []
    read = last = 0
    for last, values in rows:
        staged = stage_row(last, values)
        if staged is None:
            staged = _reference(plan, header, last, values, problems)
        # After the first problem the file will be refused: keep reading only to report.
        if staged is not None and not problems.total:
            batch.append(staged)
        read += 1
        if read == size:
            yield last, batch
            batch, read = [], 0
    yield last, batch


def hashed(batch: Batch, plan: ContactPlan, hasher: KeyedHasher) -> Batch:
    """Each staging tuple followed by the keyed hash of each coordinate ('' when absent)."""
    coordinate = hasher.coordinate
    slots = [(kind, 1 + n) for n, (kind, _) in enumerate(plan.coordinates)]
    if len(slots) == 1:  # the usual file: one e-mail or one phone column
        ((kind, pos),) = slots
        return [(*s, coordinate(kind, s[pos]) if s[pos] else "") for s in batch]
    return [s + tuple(coordinate(k, s[p]) if s[p] else "" for k, p in slots) for s in batch]


def _reference(
    plan: ContactPlan, header: list[str], row: int, values: list[str], problems: Problems
) -> tuple[Any, ...] | None:
    if len(values) > len(header):
        problems.add(row, None, f"{len(values) - len(header)} more value(s) than header columns")
        return None
    # Missing trailing cells read as empty, as the dict per row always did.
    record = parse_contact(dict(zip(header, values, strict=False)), row, problems, plan.region)
    return None if record is None else plan.stage_tuple(record)


def _getter(indexes: list[int]) -> Any:
    """A C-level picker of the given cells that always returns a tuple."""
    if not indexes:
        return lambda _values: ()
    if len(indexes) == 1:
        only = indexes[0]
        return lambda values: (values[only],)
    return itemgetter(*indexes)
