"""The daily retention pass (plan_reconsent + purge_expired) over a register of N contacts,
with a realistic share due, against the INS baseline measured in the same run
(PERFORMANCE.md: target >= 0.25 x INS contacts/s, <= 5k rows a transaction).

Deadlines are spread evenly over the next three years, plus a ten-day backlog of expired
contacts (a scheduler that missed a week): about 2.7 % enter the reconsent window, 0.9 % are
purged (anonymised, their events scrubbed, invoices moved to the archive).

    .venv/bin/python bench/retention.py --rows 1000000
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

# The repository before bench/: bench/webhooks.py must not shadow the webhook adapters, which
# the register imports; bench/'s own modules are found after it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.append(str(Path(__file__).resolve().parent))
from _common import CITIES, FIRST, LAST, email_of, emit, ins_baseline, peak_rss_mib, timed

from gatekeeper.config import load_settings
from gatekeeper.db import Database
from gatekeeper.migrate import upgrade
from gatekeeper.retention.tasks import build_env, run_task
from gatekeeper.security import KeyedHasher

NOW = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
SPAN_DAYS = 3 * 365 + 10
BACKLOG_DAYS = 10


def ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def contact_rows(rows: int, hasher: KeyedHasher) -> list[tuple[object, ...]]:
    out = []
    for i in range(rows):
        deadline = NOW + timedelta(days=(i * 7919) % SPAN_DAYS - BACKLOG_DAYS, hours=1)
        anchor = deadline - timedelta(days=3 * 365)
        email = email_of(i)
        out.append((i + 1, f"crm-{i}", email, hasher.coordinate("email", email), FIRST[i % 10],
                    LAST[i % 10], f'{{"line1": "{i} rue", "postcode": "69001", "city": '
                    f'"{CITIES[i % 8]}"}}', "b2c", ts(anchor), "ACME SAS", "direct", "marketing",
                    ts(NOW), ts(NOW), "prospect", ts(anchor), "collection", ts(deadline),
                    ts(deadline - timedelta(days=30))))
    return out


def event_rows(rows: int) -> list[tuple[object, ...]]:
    # One consent (with IP and user agent) for every third contact, a purchase every tenth.
    out: list[tuple[object, ...]] = []
    for i in range(0, rows, 3):
        out.append((i + 1, "consent", ts(NOW), '{"channel": "email", "given": true, '
                    '"ip": "203.0.113.1", "user_agent": "UA"}', "api", f"c{i}", ts(NOW)))
    for i in range(0, rows, 10):
        out.append((i + 1, "purchase", ts(NOW), '{"amount": 10}', "api", f"p{i}", ts(NOW)))
    return out


def populate(path: Path, rows: int, hasher: KeyedHasher) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO contacts (id, external_id, email, email_hash, first_name, last_name,"
            " postal_address, audience, collected_at, collected_by, source_type, purpose,"
            " created_at, updated_at, clock, clock_anchor_at, clock_anchor_kind, deadline,"
            " reconsent_at) VALUES (" + ", ".join("?" * 19) + ")", contact_rows(rows, hasher))
        conn.executemany(
            "INSERT INTO events (contact_id, type, occurred_at, data, origin, dedupe_key,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)", event_rows(rows))
    conn.execute("ANALYZE")
    conn.close()


def daily_pass(url: str, archive_url: str) -> dict[str, object]:
    settings = load_settings(environ={}, overrides={
        "env": "bench", "secret_key": "bench", "database_url": url,
        "archive_database_url": archive_url})
    database, env = Database(url), build_env(settings)
    done = {name: run_task(database, env, name, NOW)["done"]
            for name in ("plan_reconsent", "purge_expired")}
    database.engine.dispose()
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        baseline = ins_baseline(args.rows, work)
        path = work / "register.db"
        upgrade(f"sqlite:///{path}")
        populate(path, args.rows, KeyedHasher("bench"))
        seconds, done = timed(lambda: daily_pass(f"sqlite:///{path}", f"sqlite:///{work / 'a.db'}"))
    rate = args.rows / seconds
    print(f"daily pass over {args.rows:,} contacts in {seconds:.2f} s: {done}")
    emit([{"bench": "retention", "db": "sqlite", "rows": args.rows, "value": round(rate, 1),
           "unit": "contacts/s", "baseline": "INS", "baseline_value": round(baseline, 1),
           "ratio": round(rate / baseline, 3), "target_min": 0.25, "peak_rss_mib": peak_rss_mib(),
           "due": done}])


if __name__ == "__main__":
    main()
