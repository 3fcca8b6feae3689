"""Shared bits of the benchmarks: deterministic data, timing, peak memory, the output line."""

from __future__ import annotations

import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

FIRST = ["Paul", "Marie", "Jean", "Hélène", "Luc", "Chloé", "Nadia", "Karim", "Léa", "Hugo"]
LAST = [
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Richard",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
]
CITIES = ["Paris", "Lyon", "Marseille", "Lille", "Nantes", "Rennes", "Bordeaux", "Nice"]


def email_of(i: int) -> str:
    return f"user{i}@example{i % 97}.fr"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def peak_rss_mib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def ins_baseline(rows: int, workdir: Path) -> float:
    """INS (PERFORMANCE.md): SQLite executemany of N tuples into a table with a unique index,
    one transaction. Returns rows per second."""
    path = workdir / "ins.db"
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, email TEXT, first_name TEXT, last_name TEXT, city TEXT)"
    )
    conn.execute("CREATE UNIQUE INDEX t_email ON t (email)")
    data = [(email_of(i), FIRST[i % 10], LAST[i % 10], CITIES[i % 8]) for i in range(rows)]
    start = time.perf_counter()
    with conn:
        conn.executemany("INSERT INTO t (email, first_name, last_name, city) VALUES (?, ?, ?, ?)", data)
    elapsed = time.perf_counter() - start
    conn.close()
    return rows / elapsed


PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def fresh_pg(name: str) -> str:
    """An empty PostgreSQL database for one benchmark (dropped and created again)."""
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def emit(figures: list[dict[str, Any]]) -> None:
    for f in figures:
        print(
            f"  {f['bench']:<10} {f.get('db', ''):<10} {f['value']:>12,.1f} {f['unit']:<10} "
            f"baseline {f['baseline']} {f['baseline_value']:,.1f}  ratio {f['ratio']:.2f}"
        )
    print(json.dumps(figures))


def ensure_wrk() -> str:
    """The path of ``wrk`` (the Debian package), installed with apt-get when run as root."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is not installed; it is the Debian package 'wrk'.", flush=True)
    if os.geteuid() == 0:
        print("installing it: apt-get install -y wrk", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "wrk"],
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    found = shutil.which("wrk")
    if not found:
        sys.exit("wrk is required: run `sudo apt-get install wrk`, then this benchmark again")
    return found
