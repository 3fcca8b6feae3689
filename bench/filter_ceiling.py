"""How fast can a list be filtered at all? The filter target's ceiling, measured (diagnostic).

The filter target is 3.5 x CSV (PERFORMANCE.md), and that page says a bare SQLite pipeline
(temp table + indexed joins + fetch) filters 1M rows in about 3.5 x CSV. This script times, on
bench/filter.py's list and register (``--reuse DIR`` shares them) and in the same run as CSV,
what any filter must do before it validates an address or decides anything:

1. ``write``: read the list and write every row with constant decision and reasons cells, no
   lookup: with ``csv.reader``/``csv.writer``; with the chunks of lines our list reader uses
   (``gate.listread``); and, as the absolute floor, text blocks with a newline replaced by the
   appended cells (no record is even split).
2. ``sqlite bare``: the pipeline PERFORMANCE.md names: each line's e-mail ``strip().lower()``,
   ``executemany`` into a temp table with the line, one statement joining the contacts by
   their unique e-mail and LEFT JOINing the active suppressions of the channel by the
   contact's stored hash, fetched in list order and written as the row plus found /
   suppression reasons. A recipient named by no contact is suppressed by the hash of its own
   address: hashed in Python (the key is the register's) and looked up in the suppressions
   read once, as the bulk path does. No validation, no deduplication, no decision, no proof.
   ``sqlite ids`` joins the contacts alone (found or not, read from the e-mail index without
   the table's rows): the least any temp-table pipeline can do. ``sqlite facts`` reads too,
   per contact, the facts the bulk path keys its decisions on (``bulkread.facts_sql``).
   ``sqlite scan`` is the fastest shape found for SQLite (``_Bare.scan_join``): the contacts
   read in order against an index of the temp table, the suppressions matched in Python.
3. ``pg ids``, ``pg bare``, ``pg facts``: the same on PostgreSQL, the temp table filled by
   ``COPY`` and analysed.
4. ``decide_list``: today's filter, as bench/filter.py runs it, with the CPU seconds of the
   main process and of its reader processes (``gate.sqliteworker``).

Each measurement runs in its own process (its peak RSS is its own), ``--repeat`` rounds,
interleaved, the CSV baseline measured in each round. Every line prints seconds and the ratio
to that round's CSV. The JSON line holds each measurement's median round and every ratio.

What it showed on the 2-core machines (2026-11-23, 7 rounds, ratios to the same round's CSV
of 0.77-1.03 s): write with listread's chunks 0.64-0.99, csv module 2.6-3.6; SQLite ids
4.1-6.0, bare 9.3-19, facts 10.5-13.6, scan 5.4-7.4, decide_list 4.5-6.5; PostgreSQL ids
3.6-5.0, bare 4.4-6.4, facts 5.5-8.0, decide_list 4.5-8.1. Loading the temp table alone
(read, normalise, executemany) took 1.55 s on SQLite, COPY 1.46 s on PostgreSQL: about two
CSVs before any join. The prescribed pipeline does not reach 3.5 x CSV here even with no
decision to make; on SQLite today's decide_list (two processes reading the register whole)
is about twice as fast as it.

    .venv/bin/python bench/filter_ceiling.py --rows 1000000 --reuse /tmp/gkbench
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

# The repository before bench/: bench/webhooks.py must not shadow the webhook adapters, which
# the register imports; bench/'s own modules are found after it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent))
from _common import emit, peak_rss_mib

from gatekeeper.gate.bulkread import facts_sql
from gatekeeper.gate.listread import ListReader, plain_verdict_text
from gatekeeper.register.context import context_from
from gatekeeper.sqlbulk import ts_value

filter_bench: Any = importlib.import_module("filter")  # bench/filter.py: its list and register

CHUNK = 5_000  # records per chunk, as gate.engine.CHUNK
IO_BUFFER = 1 << 20
SUFFIX = ",block,bench.none\n"  # the constant verdict cells of the write floor
HEADER_CELLS = ",decision,reasons\n"


def _write_csv(list_path: Path, out_path: Path) -> None:
    """csv.reader in, csv.writer out, every row plus the constant cells."""
    with (
        list_path.open(newline="", buffering=IO_BUFFER) as src,
        out_path.open("w", newline="", buffering=IO_BUFFER) as out,
    ):
        reader, writer = csv.reader(src), csv.writer(out)
        writer.writerow([*next(reader), "decision", "reasons"])
        extra = ["block", "bench.none"]
        while rows := list(islice(reader, CHUNK)):
            writer.writerows([row + extra for row in rows])


def _write_chunks(list_path: Path, out_path: Path) -> None:
    """gate.listread's chunks of lines (plain chunks: each record is its line) and its writer."""
    with (
        list_path.open(newline="", buffering=IO_BUFFER) as src,
        out_path.open("w", newline="", buffering=IO_BUFFER) as out,
    ):
        out.write(src.readline().rstrip("\r\n") + HEADER_CELLS)
        suffixes = [SUFFIX]
        for chunk in ListReader(src, ",").chunks(CHUNK):
            assert chunk.lines is not None and chunk.writable, "the bench list is plain"
            out.write(plain_verdict_text(chunk.lines, None, [0] * len(chunk.lines), suffixes))


def _write_blocks(list_path: Path, out_path: Path) -> None:
    """The floor: blocks of text, each line end replaced by the appended cells and the line
    end (the header's: csv.writer, which wrote the bench list, ends lines with CRLF)."""
    cells = SUFFIX[:-1]
    with (
        list_path.open(newline="", buffering=IO_BUFFER) as src,
        out_path.open("w", newline="", buffering=IO_BUFFER) as out,
    ):
        header = src.readline()
        end = "\r\n" if header.endswith("\r\n") else "\n"
        out.write(header.removesuffix(end) + HEADER_CELLS[:-1] + end)
        tail = ""
        while block := src.read(IO_BUFFER):
            block, _, tail = (tail + block).rpartition(end)
            if block:
                out.write(block.replace(end, cells + end) + cells + end)
        if tail:
            out.write(tail + cells + end)


def _records(src: TextIO) -> Iterator[tuple[int, str, str]]:
    """(number, e-mail strip().lower(), line) of each record of a plain list (no quotes: the
    bench list has none), the e-mail its first cell."""
    for n, line in enumerate(src, 1):
        bare = line.rstrip("\r\n")
        yield n, bare.partition(",")[0].strip().lower(), bare


class _Bare:
    """The bare pipeline's statements on one database (SQLite or PostgreSQL). ``mode``: "ids"
    joins the contacts alone (found or not: the least any lookup reads, on SQLite from the
    e-mail index alone), "bare" the suppressions too, "facts" the contacts' facts too."""

    def __init__(self, url: str, mode: str) -> None:
        self.url, self.mode = url, mode
        self._own: dict[str, str] | None = None
        self.postgres = url.startswith("postgresql")
        ctx = context_from(filter_bench._settings(url))
        self.hasher = ctx.hasher
        dialect = "postgresql" if self.postgres else "sqlite"
        self.as_of = ts_value(dialect, filter_bench.AS_OF)
        send = ts_value(
            dialect, filter_bench.parse_campaign(filter_bench.CAMPAIGN, filter_bench.AS_OF)[0].send_at
        )
        p = "%s" if self.postgres else "?"
        listed = (
            "position(%s in ',' || channels || ',') > 0"
            if self.postgres
            else "instr(',' || channels || ',', ?) > 0"
        )
        # The suppressions that apply: known at as_of, for the channel (as BulkReader's).
        self.applies = f"s.occurred_at <= {p} AND (s.channels = 'all' OR {listed})"
        self.applies_params: list[Any] = [self.as_of, ",email,"]
        facts = f", {facts_sql(self.postgres, False).format(p=p)}" if mode == "facts" else ""
        self.params = [*([self.as_of, self.as_of, send] if facts else []), *self.applies_params]
        if mode == "ids":
            self.select = (
                "SELECT t.line, c.id, NULL FROM gate_list t LEFT JOIN contacts c ON c.email = t.value"
                " ORDER BY t.n"
            )
            self.params = []
        else:
            # A LEFT JOIN, not a scalar subquery per row: PostgreSQL then hashes the
            # suppressions (the subquery took 2.4 x its time). A contact with several
            # suppressions would have a row each (the bench register has one per address).
            self.select = (
                f"SELECT t.line, c.id, s.reason{facts} FROM gate_list t"
                " LEFT JOIN contacts c ON c.email = t.value"
                f" LEFT JOIN suppressions s ON s.coord_hash = c.email_hash AND {self.applies}"
                " ORDER BY t.n"
            )

    def own_suppressions(self, conn: Any) -> dict[str, str]:
        """The reasons of every active suppression of the channel, by hash (for recipients
        named by no contact: their own address's hash), read once."""
        if self._own is not None:
            return self._own
        cur = conn.cursor()
        cur.execute(
            f"SELECT s.coord_hash, s.reason FROM suppressions s WHERE {self.applies}", self.applies_params
        )
        found: dict[str, str] = {}
        for coord_hash, reason in cur.fetchall():
            found[coord_hash] = f"{found[coord_hash]};{reason}" if coord_hash in found else reason
        self._own = found
        return found

    def write(self, rows: Callable[[int], list[Any]], header: str, out: TextIO, conn: Any) -> None:
        """The verdict rows: the line, whether a contact was found and the suppression reasons."""
        own = self.own_suppressions(conn) if self.mode != "ids" else {}
        coordinate = self.hasher.coordinate
        out.write(header + ",found,suppressed\n")
        while batch := rows(CHUNK):
            parts = []
            for line, contact, reasons, *_facts in batch:
                if contact is not None:
                    parts.append(f"{line},1,{reasons or ''}\n")
                elif own:
                    email = line.partition(",")[0].strip().lower()
                    parts.append(f"{line},0,{own.get(coordinate('email', email)) or ''}\n")
                else:
                    parts.append(f"{line},0,\n")
            out.write("".join(parts))

    def run_sqlite(self, list_path: Path, out_path: Path) -> None:
        conn = sqlite3.connect(self.url.split("///", 1)[1], isolation_level=None)
        # The service's read pragmas (db._sqlite_pragmas); the temp table in memory.
        for pragma in ("cache_size=-65536", "mmap_size=268435456", "temp_store=MEMORY"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("CREATE TEMP TABLE gate_list (n INTEGER PRIMARY KEY, value TEXT, line TEXT)")
        with (
            list_path.open(newline="", buffering=IO_BUFFER) as src,
            out_path.open("w", newline="", buffering=IO_BUFFER) as out,
        ):
            header = src.readline().rstrip("\r\n")
            conn.execute("BEGIN")  # one read snapshot: the load, the join and the fetch
            conn.executemany("INSERT INTO gate_list VALUES (?, ?, ?)", _records(src))
            rows = (
                self.scan_join(conn)
                if self.mode == "scan"
                else conn.execute(self.select, self.params).fetchmany
            )
            self.write(rows, header, out, conn)
            conn.execute("COMMIT")
        conn.close()

    def scan_join(self, conn: Any) -> Callable[[int], list[Any]]:
        """The best shape found for SQLite, which has no hash join: the contacts read in
        order (no descent of the e-mail index per recipient), each probing an index of the
        temp table, the suppressions matched in Python by the stored hash (a LEFT JOIN of
        them costs a descent of their index per contact); the matches put in list order by
        record number, not sorted by SQLite (sorting them back to the list's order took three
        times the join)."""
        conn.execute("CREATE INDEX temp.gate_list_value ON gate_list (value)")
        own = self.own_suppressions(conn)
        size = conn.execute("SELECT max(n) FROM gate_list").fetchone()[0] or 0
        contacts: list[int | None] = [None] * (size + 1)
        reasons: list[str | None] = [None] * (size + 1)
        matched = "SELECT t.n, c.id, c.email_hash FROM contacts c CROSS JOIN gate_list t ON t.value = c.email"
        for n, contact, email_hash in conn.execute(matched).fetchall():
            contacts[n], reasons[n] = contact, own.get(email_hash)
        lines = conn.execute("SELECT n, line FROM gate_list ORDER BY n")

        def rows(count: int) -> list[Any]:
            return [(line, contacts[n], reasons[n]) for n, line in lines.fetchmany(count)]

        return rows

    def run_pg(self, list_path: Path, out_path: Path) -> None:
        import psycopg  # noqa: PLC0415 - only the PostgreSQL case needs it

        with (
            psycopg.connect(self.url.replace("postgresql+psycopg://", "postgresql://")) as conn,
            list_path.open(newline="", buffering=IO_BUFFER) as src,
            out_path.open("w", newline="", buffering=IO_BUFFER) as out,
        ):
            header = src.readline().rstrip("\r\n")
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            conn.execute("CREATE TEMP TABLE gate_list (n int, value text, line text) ON COMMIT DROP")
            with conn.cursor().copy("COPY gate_list (n, value, line) FROM STDIN") as copy:
                n = 0
                while lines := list(islice(src, CHUNK)):
                    text = "".join(lines)
                    assert "\\" not in text and "\t" not in text, "COPY text would need escapes"
                    parts = []
                    for line in lines:
                        n += 1
                        bare = line.rstrip("\r\n")
                        parts.append(f"{n}\t{bare.partition(',')[0].strip().lower()}\t{bare}\n")
                    copy.write("".join(parts))
            conn.execute("ANALYZE gate_list")  # without statistics the planner guesses the join
            with conn.cursor(name="verdicts") as cur:
                cur.itersize = 20_000
                cur.execute(self.select, self.params)
                self.write(cur.fetchmany, header, out, conn)


def _decide(url: str, list_path: Path, out_path: Path) -> dict[str, Any]:
    """bench/filter.py's decide phase, with the CPU seconds it took in this process and in its
    reader processes (children, counted once they have ended: decide_list closes them)."""

    def cpu() -> tuple[float, float]:
        me, kids = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime

    main_before, kids_before = cpu()
    filter_bench.decide_main(url, list_path, out_path)  # prints its own JSON line on stdout
    main_after, kids_after = cpu()
    return {"main_cpu_s": main_after - main_before, "readers_cpu_s": kids_after - kids_before}


def case_main(name: str, url: str, list_path: Path, out_path: Path) -> None:
    """One measurement in this process: its seconds and peak RSS as the last line."""
    if name == "decide_list":
        cpu = _decide(url, list_path, out_path)
        out_path.unlink(missing_ok=True)
        return print(json.dumps(cpu))
    runs: dict[str, Callable[[], None]] = {
        "write csv": lambda: _write_csv(list_path, out_path),
        "write chunks": lambda: _write_chunks(list_path, out_path),
        "write blocks": lambda: _write_blocks(list_path, out_path),
    }
    if name not in runs:
        bare = _Bare(url, name.rpartition(" ")[2])
        runs[name] = lambda: (bare.run_pg if bare.postgres else bare.run_sqlite)(list_path, out_path)
    start = time.perf_counter()
    runs[name]()
    elapsed = time.perf_counter() - start
    out_path.unlink(missing_ok=True)
    print(json.dumps({"elapsed": elapsed, "peak_rss_mib": peak_rss_mib()}))


def run_case(name: str, url: str, list_path: Path, out_path: Path) -> dict[str, Any]:
    import subprocess  # noqa: PLC0415

    out = subprocess.run(
        [sys.executable, __file__, "--case", name, url, str(list_path), str(out_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    sys.stderr.write(out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed with exit code {out.returncode}")
    lines = out.stdout.strip().splitlines()
    result: dict[str, Any] = json.loads(lines[-1])
    if name == "decide_list":  # decide_main's own line comes first: elapsed and peak RSS
        result.update(json.loads(lines[-2]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2, help="rounds, interleaved")
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--skip-decide", action="store_true", help="leave today's decide_list out")
    parser.add_argument("--reuse", metavar="DIR", type=Path, help="bench/filter.py's --reuse directory")
    parser.add_argument("--case", nargs=4, metavar=("NAME", "URL", "LIST", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        return case_main(args.case[0], args.case[1], Path(args.case[2]), Path(args.case[3]))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) if args.reuse is None else args.reuse / str(args.rows)
        work.mkdir(parents=True, exist_ok=True)
        list_path = work / "list.csv"
        if args.reuse is None or not list_path.exists():
            filter_bench.write_list(list_path, args.rows)
        cases = [("write csv", ""), ("write chunks", ""), ("write blocks", "")]
        for db in ["sqlite"] + ([] if args.skip_pg else ["postgresql"]):
            url = filter_bench._register(db, work, args.rows, args.reuse is not None)
            short = "sqlite" if db == "sqlite" else "pg"
            modes = ("ids", "bare", "facts") + (("scan",) if db == "sqlite" else ())
            cases += [(f"{short} {mode}", url) for mode in modes]
            if not args.skip_decide:
                cases.append((f"{short} decide_list", url))
        out_path = Path(tmp) / "verdicts.csv"
        results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in cases}
        for round_ in range(1, args.repeat + 1):
            base = filter_bench.csv_baseline(list_path)
            print(f"round {round_}: CSV baseline {base:.3f} s", file=sys.stderr)
            for name, url in cases:
                kind = "decide_list" if name.endswith("decide_list") else name
                run = run_case(kind, url, list_path, out_path)
                run["baseline"] = base
                results[name].append(run)
                cpu = (
                    f"  cpu main {run['main_cpu_s']:.2f} s, readers {run['readers_cpu_s']:.2f} s"
                    if "main_cpu_s" in run
                    else ""
                )
                print(
                    f"  {name:<22} {run['elapsed']:6.2f} s  {run['elapsed'] / base:5.2f} x CSV"
                    f"  peak RSS {run['peak_rss_mib']} MiB{cpu}",
                    file=sys.stderr,
                )
        emit([_figure(name, runs, args.rows) for name, runs in results.items()])


def _figure(name: str, runs: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    """A measurement's median round by ratio (the lower one of two), with every round's
    ratio: the best round would often be one where noise slowed the CSV baseline."""
    ratios = [r["elapsed"] / r["baseline"] for r in runs]
    median = sorted(ratios)[(len(ratios) - 1) // 2]
    best = runs[ratios.index(median)]
    figure = {
        "bench": "filter_ceiling." + name.replace(" + ", "_").replace(" ", "_"),
        "db": "postgresql" if name.startswith("pg") else "sqlite" if name.startswith("sqlite") else "",
        "rows": rows,
        "value": round(best["elapsed"], 3),
        "unit": "s",
        "baseline": "CSV",
        "baseline_value": round(best["baseline"], 3),
        "ratio": round(median, 2),
        "ratios": [round(r, 2) for r in ratios],
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "note": "diagnostic, no target",
    }
    for key in ("main_cpu_s", "readers_cpu_s"):
        if key in best:
            figure[key] = round(best[key], 2)
    return figure


if __name__ == "__main__":
    main()
