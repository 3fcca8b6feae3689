"""How fast can contacts be *stored* at all? The import target's ceiling, measured (diagnostic).

The import target is 0.4 x INS (PERFORMANCE.md): INS inserts N tuples of four short texts into a
table with one unique index. A contact of the register is wider and needs more indexes (the
unique identities that make a second import of a file change nothing, the indexed deadline the
retention pass reads). This script stores rows that are already built, with no CSV, validation,
normalisation, hashing or clock computation, in the same run as INS, so that what is left is
the storage alone:

1. ``register``: the contacts table as the migrations build it, rows as an import fills them,
   inserted as ``load_first`` does (the timestamp indexes dropped and built again at the end);
2. ``register, no index``: the same rows into the same table with every index and unique
   constraint removed (the floor for rows of this content);
3. ``narrow``: a register redesigned for speed: integer timestamps, binary hashes, small codes
   for the short texts, with only the indexes the rules need (unique e-mail and external id,
   the deadline and reconsent instants built after the load).

Each line prints seconds, rows/s and the ratio to INS. Whatever the import does on top can only
be slower than its line 1; line 3 bounds what a narrower schema could reach.

    .venv/bin/python bench/import_ceiling.py --rows 1000000
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The repository before bench/: bench/webhooks.py must not shadow the webhook adapters, which
# the register imports; bench/'s own modules are found after it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent))
from _common import CITIES, FIRST, LAST, email_of, emit, ins_baseline

from gatekeeper.migrate import upgrade
from gatekeeper.register.contact_import import REBUILT_INDEXES

# The columns a contacts import fills (contact_import._selected), with fixed instants: the
# storage cost depends on their width, not their values.
COLUMNS = (
    "external_id, email, email_hash, first_name, last_name, postal_address, audience, "
    "collected_at, source_type, purpose, created_at, updated_at, clock, clock_anchor_at, "
    "clock_anchor_kind, deadline, reconsent_at, profile_key"
)
COLLECTED = "2025-08-07 22:00:00.000000"
NOW = "2026-11-22 22:12:47.972730"
DEADLINE, RECONSENT = "2028-08-07 22:00:00.000000", "2028-07-08 22:00:00.000000"
NARROW = (
    "CREATE TABLE contacts (id INTEGER PRIMARY KEY, external_id TEXT, email TEXT, phone TEXT, "
    "email_hash BLOB, phone_hash BLOB, first_name TEXT, last_name TEXT, postal_address TEXT, "
    "audience INT, collected_at INT, source_type INT, purpose INT, created_at INT, "
    "updated_at INT, clock INT, clock_anchor_at INT, clock_anchor_kind INT, deadline INT, "
    "reconsent_at INT, profile_key BLOB)"
)
NARROW_INDEXES = (
    "CREATE UNIQUE INDEX uq_email ON contacts (email)",
    "CREATE UNIQUE INDEX uq_external_id ON contacts (external_id)",
)
NARROW_AFTER = (
    "CREATE INDEX ix_deadline ON contacts (deadline)",
    "CREATE INDEX ix_reconsent_at ON contacts (reconsent_at)",
)


def register_rows(n: int) -> list[tuple[Any, ...]]:
    profiles = [hashlib.md5(str(i).encode()).hexdigest() for i in range(50)]  # noqa: S324 - sample data
    rows = []
    for i in range(n):
        email = email_of(i)
        rows.append(
            (
                f"crm-{i}",
                email,
                hashlib.sha256(email.encode()).hexdigest(),
                FIRST[i % 10],
                LAST[i % 10],
                f'{{"city":"{CITIES[i % 8]}"}}',
                "b2c",
                COLLECTED,
                "direct",
                "marketing",
                NOW,
                NOW,
                "prospect",
                COLLECTED,
                "collection",
                DEADLINE,
                RECONSENT,
                profiles[i % 50],
            )
        )
    return rows


def narrow_rows(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    ints = (1754604000, 1, 1, 1795000000, 1795000000, 1, 1754604000, 1, 1849298400, 1846706400)
    return [(r[0], r[1], bytes.fromhex(r[2]), r[3], r[4], r[5], 1, *ints, bytes.fromhex(r[17])) for r in rows]


def store(
    path: Path,
    rows: list[tuple[Any, ...]],
    *,
    before: Sequence[str] = (),
    after: Sequence[str] = (),
    columns: str = COLUMNS,
) -> float:
    """Seconds to insert ``rows`` in one transaction with the service's pragmas, run ``after``
    in it, commit and checkpoint the WAL (as an import's commit eventually must)."""
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-65536"):
        conn.execute(f"PRAGMA {pragma}")
    for statement in before:
        conn.execute(statement)
    marks = ", ".join("?" * len(rows[0]))
    start = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(f"INSERT INTO contacts ({columns}) VALUES ({marks})", rows)
    for statement in after:
        conn.execute(statement)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def schema_of(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """The migrated contacts table: its CREATE TABLE and its (name, CREATE INDEX) list."""
    conn = sqlite3.connect(path)
    table = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'contacts'").fetchone()[0]
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'contacts' "
        "AND sql IS NOT NULL"
    ).fetchall()
    conn.close()
    return table, indexes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = register_rows(args.rows)
        ins = ins_baseline(args.rows, work)
        print(f"INS baseline: {ins:,.0f} rows/s")
        migrated = work / "register.db"
        upgrade(f"sqlite:///{migrated}")
        table, indexes = schema_of(migrated)
        rebuilt = [(name, sql) for name, sql in indexes if name in REBUILT_INDEXES]
        bare = work / "bare.db"
        conn = sqlite3.connect(bare)
        # The table without its UNIQUE constraints (each one an index SQLite maintains).
        conn.execute(table.split(", \n\tCONSTRAINT uq_")[0] + "\n)" if "CONSTRAINT uq_" in table else table)
        conn.close()
        narrow = work / "narrow.db"
        sqlite3.connect(narrow).execute(NARROW)
        cases = [
            (
                "register",
                migrated,
                rows,
                {"before": [f"DROP INDEX {n}" for n, _ in rebuilt], "after": [s for _, s in rebuilt]},
            ),
            ("register, no index", bare, rows, {}),
            (
                "narrow",
                narrow,
                narrow_rows(rows),
                {"before": NARROW_INDEXES, "after": NARROW_AFTER, "columns": COLUMNS},
            ),
        ]
        figures = []
        for name, path, data, options in cases:
            elapsed = store(path, data, **options)
            rate = args.rows / elapsed
            print(f"  {name:<20} {elapsed:6.2f} s  {rate:>9,.0f} rows/s  {rate / ins:.2f} x INS")
            figures.append(
                {
                    "bench": f"import_ceiling.{name.replace(', ', '_').replace(' ', '_')}",
                    "db": "sqlite",
                    "rows": args.rows,
                    "value": round(rate),
                    "unit": "rows/s",
                    "baseline": "INS",
                    "baseline_value": round(ins),
                    "ratio": round(rate / ins, 3),
                    "note": "diagnostic, no target: prebuilt rows, storage only",
                }
            )
        emit(figures)


if __name__ == "__main__":
    main()
