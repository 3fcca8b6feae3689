"""Filter a campaign list of N recipients against N contacts and N/10 suppressions, from the
file on disk to the last verdict row written, and compare with the CSV baseline measured in
the same run (PERFORMANCE.md). SQLite and PostgreSQL.

    .venv/bin/python bench/filter.py --rows 1000000

While developing, ``--reuse DIR`` keeps the list, the SQLite register and a PostgreSQL database
per size (``gk_bench_filter_<rows>``) between runs: the register's setup is the slow part.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The repository before bench/: bench/webhooks.py must not shadow the webhook adapters, which
# the register imports; bench/'s own modules are found after it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent))
from _common import CITIES, FIRST, LAST, PG_ADMIN, email_of, emit, fresh_pg, peak_rss_mib

from gatekeeper.config import load_settings
from gatekeeper.db import Database
from gatekeeper.gate.campaigns import parse_campaign
from gatekeeper.gate.lists import decide_list
from gatekeeper.migrate import upgrade
from gatekeeper.register.contacts import ContactRecord, upsert_contacts
from gatekeeper.register.context import context_from
from gatekeeper.register.events import EventRecord, append_events
from gatekeeper.register.suppressions import SuppressionRecord, add_suppressions

AS_OF = datetime(2026, 11, 22, 10, tzinfo=UTC)
CAMPAIGN = {
    "channel": "email",
    "purpose": "commercial",
    "sender": "ACME SAS",
    "product_category": "coffee_capsules",
    "send_at": "2026-11-24T11:00:00+01:00",
}


def write_list(path: Path, rows: int) -> None:
    # Recipients: 90% known contacts (shuffled deterministically), 10% strangers, 1% repeats.
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["email", "first_name", "last_name", "city"])
        for i in range(rows):
            n = (i * 7919) % rows if i % 10 else rows + i
            if i % 100 == 99:
                n = (i - 1) * 7919 % rows
            w.writerow(
                [
                    email_of(n).upper() if i % 3 == 0 else email_of(n),
                    FIRST[i % 10],
                    LAST[i % 10],
                    CITIES[i % 8],
                ]
            )


def csv_baseline(path: Path) -> float:
    """CSV (PERFORMANCE.md): csv.reader over the file, strip().lower() the e-mail into a set."""
    start = time.perf_counter()
    seen = set()
    with path.open(newline="") as fh:
        for row in csv.reader(fh):
            seen.add(row[0].strip().lower())
    return time.perf_counter() - start


def populate(database: Database, ctx: object, rows: int) -> None:
    collected = [datetime(2022 + (i % 4), 1 + i % 12, 1 + i % 28, tzinfo=UTC) for i in range(48)]
    contacts = (
        ContactRecord(
            i,
            f"crm-{i}",
            email_of(i),
            None,
            FIRST[i % 10],
            LAST[i % 10],
            {"city": CITIES[i % 8]},
            "b2c" if i % 5 else "b2b",
            [],
            collected[i % 48],
            "ACME SAS",
            "direct",
            None,
            None,
            "marketing",
            "Europe/Paris",
            None,
        )
        for i in range(rows)
    )
    with database.session_scope() as s:
        upsert_contacts(s, contacts, ctx, want_ids=False)  # type: ignore[arg-type]
    # A third of the contacts consented, a tenth bought a coffee machine.
    events = []
    for i in range(0, rows, 3):
        events.append(
            EventRecord(
                i,
                "email",
                email_of(i),
                "consent",
                collected[i % 48],
                {
                    "channel": "email",
                    "given": True,
                    "occurred_at": collected[i % 48].isoformat(),
                    "sender": "ACME SAS",
                    "method": "checkbox",
                },
            )
        )
    for i in range(1, rows, 10):
        events.append(
            EventRecord(
                i,
                "email",
                email_of(i),
                "purchase",
                collected[i % 48],
                {
                    "occurred_at": collected[i % 48].isoformat(),
                    "product_category": "coffee_machines",
                    "seller": "ACME SAS",
                },
            )
        )
    with database.session_scope() as s:
        append_events(s, events, ctx, origin="bench")  # type: ignore[arg-type]
    sups = (
        SuppressionRecord(
            i,
            "email",
            email_of(i * 10 + 7),
            ("unsubscribe", "hard_bounce", "complaint")[i % 3],
            ["all"],
            datetime(2026, 1, 1 + i % 28, tzinfo=UTC),
        )
        for i in range(rows // 10)
    )
    with database.session_scope() as s:
        add_suppressions(s, sups, ctx.hasher, origin="bench")  # type: ignore[attr-defined]


def child(*args: str) -> dict[str, Any]:
    """Run a phase in its own process: the filter's peak RSS is then its own, not the setup's."""
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    sys.stderr.write(out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"{args[0]} failed with exit code {out.returncode}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def populate_main(url: str, rows: int) -> None:
    upgrade(url)
    started = time.perf_counter()
    populate(Database(url), context_from(_settings(url)), rows)
    print(f"  setup: {time.perf_counter() - started:.1f} s for {rows} contacts", file=sys.stderr)
    print(json.dumps({"ok": True}))


def decide_main(url: str, list_path: Path, out: Path) -> None:
    ctx, database = context_from(_settings(url)), Database(url)
    campaign, _ = parse_campaign(CAMPAIGN, AS_OF)
    start = time.perf_counter()
    # Read-only, as `gatekeeper check` and the list jobs decide (never holding SQLite's writer).
    with database.session_scope(read_only=True) as s:
        summary = decide_list(s, ctx, campaign, AS_OF, list_path, out, unwritten=True)
    elapsed = time.perf_counter() - start
    top = dict(list(summary["by_reason"].items())[:6])
    print(
        f"  {summary['allowed']} allowed, {summary['blocked']} blocked, "
        f"{summary['duplicates']} duplicates; {top}",
        file=sys.stderr,
    )
    # SQLite registers are read by helper processes (gate/sqliteworker.py): their peak too.
    helpers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    print(json.dumps({"elapsed": elapsed, "peak_rss_mib": peak_rss_mib(), "helper_rss_mib": helpers}))


def _register(name: str, work: Path, rows: int, reuse: bool) -> str:
    """The database URL of the run, populated: with ``--reuse``, the one kept from an earlier
    run of this size when its population completed (a marker file says so)."""
    populated = work / f"populated-{name}"
    kept = reuse and populated.exists()
    if name == "sqlite":
        url = f"sqlite:///{work / 'gk.db'}"
        if not kept:
            (work / "gk.db").unlink(missing_ok=True)
    else:
        db = f"gk_bench_filter_{rows}" if reuse else "gk_bench_filter"
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{db}" if kept else fresh_pg(db)
    if not kept:
        populated.unlink(missing_ok=True)
        child("--populate", url, "--rows", str(rows))
        populated.touch()
    return url


def _settings(url: str) -> Any:
    return load_settings(environ={}, overrides={"env": "bench", "secret_key": "bench", "database_url": url})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument(
        "--reuse", metavar="DIR", type=Path, help="keep the list and registers here between runs"
    )
    parser.add_argument("--populate", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--decide", nargs=3, metavar=("URL", "LIST", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.populate:
        return populate_main(args.populate, args.rows)
    if args.decide:
        return decide_main(args.decide[0], Path(args.decide[1]), Path(args.decide[2]))
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) if args.reuse is None else args.reuse / str(args.rows)
        work.mkdir(parents=True, exist_ok=True)
        list_path = work / "list.csv"
        if args.reuse is None or not list_path.exists():
            write_list(list_path, args.rows)
        dbs = ([] if args.skip_sqlite else ["sqlite"]) + ([] if args.skip_pg else ["postgresql"])
        for name in dbs:
            url = _register(name, work, args.rows, args.reuse is not None)
            run = child("--decide", url, str(list_path), str(work / f"verdicts-{name}.csv"))
            elapsed = run["elapsed"]
            base = csv_baseline(list_path)
            figures.append(
                {
                    "bench": "filter",
                    "db": name,
                    "rows": args.rows,
                    "value": round(elapsed, 3),
                    "unit": "s",
                    "baseline": "CSV",
                    "baseline_value": round(base, 3),
                    "ratio": round(elapsed / base, 2),
                    "target_max": 3.5,
                    "peak_rss_mib": run["peak_rss_mib"],
                    "helper_peak_rss_mib": run["helper_rss_mib"],
                }
            )
    emit(figures)


if __name__ == "__main__":
    main()
