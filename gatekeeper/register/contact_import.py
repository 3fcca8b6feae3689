"""The contacts CSV import: stage every row, refuse the file if any row is bad, then insert the
new contacts in one statement and hand the contacts already in the register to the upsert.

Theory of operation.
1. Stream the file through a ``ContactPlan`` (compiled from its header) into a temporary table
   holding only the file's own columns and a number for the row's discrete facts; rows the plan
   does not vouch for go through the reference ``parse_contact``; each coordinate's keyed hash
   is added to its row. From 16 MiB a second process reads, validates and hashes
   (contact_worker.py) while this one stages.
2. Any invalid row refuses the whole file: nothing was written.
3. One plain ``INSERT … SELECT`` adds every row whose external_id, email and phone are all
   new, in file order, with clock and profile joined from the facts table; a large load into
   a register at most half its size drops the two timestamp indexes first and builds them
   again after it. It runs under a savepoint: if a unique index refuses a row (an identity
   repeated in the file), the savepoint is undone and ``INSERT … ON CONFLICT DO NOTHING``
   inserts the same rows, skipping the others. When every staged row went in, the file had no
   repeated identity and named no stored contact: done, and a first load pays for nothing
   else. Otherwise an identity repeated in the file refuses it (the caller rolls back); the
   other skipped rows name a contact already in the register and are read again from the file
   and given to ``upsert_contacts``, which resolves, checks conflicts and updates exactly as
   the API does.
4. On SQLite, a large file imported into an empty register takes a shorter way
   (``load_first``): the staged rows go into contacts every ``FIRST_LOAD_CHUNK`` rows while
   the next ones are read, under one savepoint that an invalid row or a repeated identity
   undoes (a repeat then takes the route above, which names it).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

from sqlalchemy import Index, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gatekeeper.csvio import CsvFormat, detect_format, read_header, read_rows
from gatekeeper.models import Base, utcnow
from gatekeeper.register.contact_facts import FactTable
from gatekeeper.register.contact_plan import Batch, ContactPlan, hashed, staged_batches
from gatekeeper.register.contact_worker import report, staged_by_child
from gatekeeper.register.contacts import CLOCK_COLUMNS, parse_contact, refuse_repeats, upsert_contacts
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.schema import Problems
from gatekeeper.security import KeyedHasher
from gatekeeper.sqlbulk import create_temp, dialect_of, drop_temp, load_rows, ts_value

STAGE = "import_contacts"
FACTS = "import_facts"
FACT_COLUMNS: list[tuple[str, str]] = [
    ("id", "pk"),
    ("audience", "text"),
    ("profession_tags", "json"),
    ("collected_at", "ts"),
    ("collected_by", "text"),
    ("source_type", "text"),
    ("purpose", "text"),
    ("timezone", "text"),
    *CLOCK_COLUMNS,
]
IDENTITIES = ("external_id", "email", "phone")
PROGRESS_EVERY = 10_000
# From this size (about 200,000 rows) a second process reads the file: spawning one costs
# about half a second, a million rows save several.
PARALLEL_FROM_BYTES = 16 << 20
# A load of at least this many rows, into a table holding at most half as many, rebuilds these
# indexes after the insert (see ``_insert_plain``).
REBUILD_FROM_ROWS = 50_000
REBUILT_INDEXES = ("ix_contacts_deadline", "ix_contacts_reconsent_at")
# On SQLite, a file from this size (about 50,000 rows) imported into an empty register is
# inserted while it is read, this many staged rows at a time (see ``load_first``).
FIRST_LOAD_FROM_BYTES = 4 << 20
FIRST_LOAD_CHUNK = 50_000
Fields = list[tuple[str, str]]
Progress = Callable[[int], None]
Refuse = Callable[[Problems], None]


def import_contacts(
    session: Session,
    path: Path,
    ctx: RegisterContext,
    progress: Progress,
    refuse: Refuse,
) -> dict[str, int]:
    fmt = detect_format(path)
    header = read_header(path, fmt)
    if dialect_of(session) == "sqlite" and path.stat().st_size >= FIRST_LOAD_FROM_BYTES:
        created = load_first(session, path, fmt, header, ctx, progress, refuse)
        if created is not None:
            return {"created": created, "updated": 0, "unchanged": 0}
    plan = ContactPlan(header, FactTable(ctx.policy), ctx.region)
    problems = Problems()
    fields = _fields(plan)
    columns = _stage_columns(fields)
    create_temp(session, STAGE, columns)
    # Closed here, not left to the garbage collector: if staging fails, a second reading
    # process is stopped and reaped now rather than whenever the traceback is dropped.
    with closing(_read(path, fmt, plan, problems, ctx, progress)) as batches:
        staged = sum(load_rows(session, STAGE, columns, b) for b in batches)
    refuse(problems)
    created, skipped = _insert_new(session, plan.facts, fields, staged)
    drop_temp(session, STAGE)
    drop_temp(session, FACTS)
    result = {"created": created, "updated": 0, "unchanged": 0}
    if skipped:
        existing = upsert_contacts(session, _records(path, skipped, ctx.region), ctx, want_ids=False)
        result["created"] += existing.created
        result["updated"], result["unchanged"] = existing.updated, existing.unchanged
    return result


def _read(
    path: Path,
    fmt: CsvFormat,
    plan: ContactPlan,
    problems: Problems,
    ctx: RegisterContext,
    progress: Progress,
) -> Generator[Batch, None, None]:
    """Batches of staging tuples with their keyed hashes, in file order, read here or, for a
    large file, by a second process (which hashes too: at a million rows the hashes cost the
    storing process about 2.8 s of its 18)."""
    if path.stat().st_size >= PARALLEL_FROM_BYTES:
        result = (problems, plan.facts)
        return staged_by_child(path, fmt, ctx, result, progress, PROGRESS_EVERY)
    header, rows = read_rows(path, fmt)
    return _reported(staged_batches(plan, header, rows, problems), plan, ctx.hasher, progress)


def _reported(
    batches: Iterator[tuple[int, Batch]], plan: ContactPlan, hasher: KeyedHasher, progress: Progress
) -> Generator[Batch, None, None]:
    reported = 0
    for read, batch in batches:
        yield hashed(batch, plan, hasher)
        reported = report(reported, read, PROGRESS_EVERY, progress)


def _fields(plan: ContactPlan) -> Fields:
    """(column, kind) of a staging tuple after row_no, then of the keyed hashes added to it."""
    return [*plan.fields, *((f"{kind}_hash", "text") for kind, _ in plan.coordinates)]


def _stage_columns(fields: Fields) -> Fields:
    # Staged cells are text ('' for absent: binding '' is cheaper than None in sqlite3, which
    # tries adapters for None); the insert turns '' back into NULL and casts JSON. The row
    # number is the key on both databases: the insert reads the stage in file order, which
    # PostgreSQL otherwise got by sorting every joined row (hundreds of MB, spilled to disk).
    return [("row_no", "pk"), *((c, "int" if k == "int" else "text") for c, k in fields)]


def _refuse_repeats(session: Session, fields: Fields) -> None:
    """Identities repeated in the file (the unique indexes skipped the later rows), named with
    the first row that has them; runs only when fewer rows went in than were staged."""
    present = {f for f, _ in fields}
    refuse_repeats(session, STAGE, [c for c in IDENTITIES if c in present], "<> ''")


def _insert_new(session: Session, facts: FactTable, fields: Fields, staged: int) -> tuple[int, list[int]]:
    """Inserts the staged rows that name no contact already stored; returns how many went in
    and the row numbers of the others."""
    if not staged:  # a header alone: nothing to insert (and no savepoint outside a transaction)
        return 0, []
    dialect = dialect_of(session)
    create_temp(session, FACTS, FACT_COLUMNS)
    load_rows(session, FACTS, FACT_COLUMNS, facts.rows(dialect))
    facts.store_profiles(session)
    before = session.execute(text("SELECT coalesce(max(id), 0) FROM contacts")).scalar_one()
    if dialect == "postgresql":
        # Temporary tables have no statistics until analysed: without them the planner guesses.
        session.execute(text(f"ANALYZE {STAGE}, {FACTS}"))
        # A million-row insert is costed high enough to be compiled and optimised by the JIT,
        # which takes longer than the per-row work it saves here.
        session.execute(text("SET LOCAL jit = off"))
    now = {"now": ts_value(dialect, utcnow())}
    created = _insert_plain(session, fields, dialect, staged, before, now)
    if created is None:  # a unique index refused a row: insert what is new, skip the rest
        result = session.execute(text(_insert_sql(fields, dialect)), now)
        created = int(result.rowcount)  # type: ignore[attr-defined]
    if created == staged:
        return created, []
    _refuse_repeats(session, fields)
    return created, _not_inserted(session, fields, before)


def _insert_plain(
    session: Session, fields: Fields, dialect: str, staged: int, before: int, now: dict[str, Any]
) -> int | None:
    """The fast route: a plain ``INSERT … SELECT`` of the staged rows whose identities are all
    new, under a savepoint. None when a unique index refused a row (an identity repeated in
    the file, or stored meanwhile): the savepoint is undone and the caller takes the
    ``ON CONFLICT DO NOTHING`` route, which inserts the same rows and skips the others.

    Why: PostgreSQL's ``ON CONFLICT`` is a speculative insertion per row: a third of the
    insert's time at a million rows. And a load at least twice the size of the register
    rebuilds the two timestamp indexes afterwards: sorting a million keys cost about half of
    maintaining them row by row (each insert lands at one of the hundreds of places that share
    its deadline).
    """
    rebuild = staged >= REBUILD_FROM_ROWS and staged >= 2 * before
    try:
        with session.begin_nested():
            dropped = _drop_indexes(session) if rebuild else []
            result = session.execute(text(_plain_insert_sql(fields, dialect, before)), now)
            for index in dropped:
                index.create(session.connection())
    except IntegrityError:
        return None
    return int(result.rowcount)  # type: ignore[attr-defined]


def _drop_indexes(session: Session) -> list[Index]:
    """Drops the indexes a bulk load rebuilds; returns them (their definitions are the models').
    On PostgreSQL the drop locks the table: readers of contacts wait for the import's commit,
    which is why this waits for a load much larger than the register."""
    if dialect_of(session) == "postgresql":
        # Each index is built by one sort: in memory rather than in batches spilled to disk.
        session.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
    indexes = [ix for ix in Base.metadata.tables["contacts"].indexes if ix.name in REBUILT_INDEXES]
    for index in indexes:
        index.drop(session.connection())
    return indexes


def _selected(fields: Fields, dialect: str) -> tuple[list[str], list[str]]:
    """The contacts columns an import fills and the staged values that fill them."""
    json_cast = "::json" if dialect == "postgresql" else ""
    cells = [(c, k) for c, k in fields if c != "fact_id"]
    facts = [c for c, _ in FACT_COLUMNS if c != "id"]
    targets = [c for c, _ in cells] + facts + ["created_at", "updated_at"]
    values = [f"NULLIF(s.{c}, ''){json_cast if k == 'json' else ''}" for c, k in cells]
    values += [f"f.{c}" for c in facts] + [":now", ":now"]
    return targets, values


def _insert_sql(fields: Fields, dialect: str) -> str:
    targets, values = _selected(fields, dialect)
    # "WHERE true" keeps SQLite from reading ON CONFLICT as a join constraint.
    return (
        f"INSERT INTO contacts ({', '.join(targets)}) SELECT {', '.join(values)} "  # noqa: S608
        f"FROM {STAGE} s JOIN {FACTS} f ON f.id = s.fact_id WHERE true ORDER BY s.row_no "
        "ON CONFLICT DO NOTHING"
    )


def _plain_insert_sql(fields: Fields, dialect: str, before: int) -> str:
    targets, values = _selected(fields, dialect)
    # An empty register names no staged row: no probe at all.
    staged = {c for c, _ in fields}
    probes = [
        f"NOT EXISTS (SELECT 1 FROM contacts c WHERE c.{c} = NULLIF(s.{c}, ''))"  # noqa: S608
        for c in IDENTITIES
        if c in staged and before
    ]
    where = f"WHERE {' AND '.join(probes)} " if probes else ""
    return (
        f"INSERT INTO contacts ({', '.join(targets)}) SELECT {', '.join(values)} "  # noqa: S608
        f"FROM {STAGE} s JOIN {FACTS} f ON f.id = s.fact_id {where}ORDER BY s.row_no"
    )


def _not_inserted(session: Session, fields: Fields, before: int) -> list[int]:
    # A row that went in has all its identities on a contact newer than ``before``; a row that
    # was skipped has none there (the file has no repeats), so one probe per identity tells.
    staged = {c for c, _ in fields}
    probes = " AND ".join(
        f"NOT EXISTS (SELECT 1 FROM contacts c WHERE c.{c} = s.{c} AND c.id > :before)"  # noqa: S608
        for c in IDENTITIES
        if c in staged
    )
    sql = f"SELECT s.row_no FROM {STAGE} s WHERE {probes} ORDER BY s.row_no"  # noqa: S608
    return [int(r[0]) for r in session.execute(text(sql), {"before": before})]


def _records(path: Path, rows: list[int], region: str) -> Iterator[Any]:
    """The given rows read again and parsed by the reference parser (they were valid)."""
    wanted = set(rows)
    header, values_by_row = read_rows(path)
    problems = Problems()
    for row, values in values_by_row:
        if row in wanted:
            record = parse_contact(dict(zip(header, values, strict=False)), row, problems, region)
            if record is not None:
                yield record


def load_first(
    session: Session,
    path: Path,
    fmt: CsvFormat,
    header: list[str],
    ctx: RegisterContext,
    progress: Progress,
    refuse: Refuse,
) -> int | None:
    """SQLite: imports a file into an empty register, moving the staged rows into contacts
    every ``FIRST_LOAD_CHUNK`` rows while the next ones are read; how many contacts it
    created, or None when the register holds contacts or the file repeats an identity (then
    nothing was written, and the staged route runs and names the repeat).

    Why: the staged route inserts only once the last row is staged (at a million rows, 2.5 s
    of about 9 after the reading process has finished); here the inserts fill the time this
    process waited for the reading one, and the stage stays small (no temporary table of a
    million rows to write, read back and drop). At a million rows: 8.6-9.4 s against
    9.6-10.9 s, runs interleaved on the same machine.
    Everything runs under one savepoint with the timestamp indexes dropped and built again at
    the end: an invalid row refuses the file and undoes the chunks already inserted. SQLite's
    write lock is held from the start, which is why the job runner keeps a running job's
    progress outside the database (jobs.py). Not on PostgreSQL: the server inserts in its own
    process there, and chunks measured no faster (10.2-12.6 s against 10.2-10.7 s) while
    holding the lock of the dropped indexes' table for the whole load.
    """
    plan = ContactPlan(header, FactTable(ctx.policy), ctx.region)
    problems = Problems()
    fields = _fields(plan)
    columns = _stage_columns(fields)
    raw = session.connection().connection.driver_connection
    if not raw.in_transaction:  # type: ignore[union-attr]
        # A writing session of db.py's engines has begun IMMEDIATE already. Without that, a
        # SAVEPOINT outside a transaction would begin one and its RELEASE commit it; and the
        # write lock must be held before the register is found empty.
        raw.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
    # Asked before anything is dropped (dropping an index walks all its pages); the write lock
    # is held, so the answer stays true until the commit.
    if session.execute(text("SELECT 1 FROM contacts LIMIT 1")).first() is not None:
        return None
    try:
        with session.begin_nested():
            dropped = _drop_indexes(session)
            create_temp(session, STAGE, columns)
            create_temp(session, FACTS, FACT_COLUMNS)
            chunks = _Chunks(session, plan.facts, fields)
            with closing(_read(path, fmt, plan, problems, ctx, progress)) as batches:
                for batch in batches:
                    chunks.stage(load_rows(session, STAGE, columns, batch))
            chunks.flush()
            refuse(problems)  # raises inside the savepoint: the chunks inserted are undone
            plan.facts.store_profiles(session)
            for index in dropped:
                index.create(session.connection())
            drop_temp(session, STAGE)
            drop_temp(session, FACTS)
    except IntegrityError:
        return None
    return chunks.created


class _Chunks:
    """Staged rows moved into contacts with the facts numbered so far; the stage is emptied
    after each move."""

    def __init__(self, session: Session, facts: FactTable, fields: Fields) -> None:
        self.session, self.facts = session, facts
        self.insert = text(_plain_insert_sql(fields, "sqlite", 0))
        self.now = {"now": ts_value("sqlite", utcnow())}
        self.staged = self.created = self.facts_loaded = 0

    def stage(self, rows: int) -> None:
        self.staged += rows
        if self.staged >= FIRST_LOAD_CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self.staged:
            return
        # A batch's facts are numbered before it is handed over (contact_worker.py).
        numbered = enumerate(self.facts.order[self.facts_loaded :], self.facts_loaded)
        rows = ((fid, *self.facts.columns(f, "sqlite")) for fid, f in numbered)
        self.facts_loaded += load_rows(self.session, FACTS, FACT_COLUMNS, rows)
        result = self.session.execute(self.insert, self.now)
        self.created += int(result.rowcount)  # type: ignore[attr-defined]
        self.session.execute(text(f"DELETE FROM {STAGE}"))  # noqa: S608 - a constant name
        self.staged = 0
