"""Public links under load: gunicorn (2 sync workers) and wrk on 127.0.0.1 only.

Measures, in the same run and on the same machine (PERFORMANCE.md):
  1. the HTTP baseline: bench/trivial_app.py, a bare WSGI 302, driven by the same wrk request
     script as 2 and 3 (so the load generator's own work is the same on both sides);
  2. ``GET /u/{token}``: verify + read the contact + render the unsubscribe page;
  3. ``GET /c/{token}``: verify + journal a counting click (the clicks spool) + 302, with
     ``gatekeeper drain`` running beside the workers as in production, storing the clicks and
     moving the clocks in batches;
and prints req/s and p99 of each with the ratios to the baseline. For the clicks it also prints
the rate at which they were *stored in the database*: clicks stored during the run divided by
the time from its first request until the spool is drained again (``pending() == 0``), and that
drain lag after the last answer. Each request of 2 and 3 names another contact (a campaign's
clicks come from many people, not one), from a register of generated contacts in a fresh
database.

    .venv/bin/python bench/links.py --seconds 10            # SQLite (default)
    .venv/bin/python bench/links.py --seconds 10 --db postgresql

Needs ``wrk`` (Debian package); run as root it installs it with apt-get, else says how.
The last line of output is the JSON list of figures (PERFORMANCE.md "Output contract").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402

from bench._common import ensure_wrk  # noqa: E402
from gatekeeper.config import load_settings  # noqa: E402
from gatekeeper.db import Database  # noqa: E402
from gatekeeper.links.tokens import LinkSigner, utc_clock  # noqa: E402
from gatekeeper.migrate import upgrade  # noqa: E402
from gatekeeper.register.contacts import parse_contact, upsert_contacts  # noqa: E402
from gatekeeper.register.context import context_from  # noqa: E402
from gatekeeper.register.schema import Problems  # noqa: E402
from gatekeeper.spool import pending  # noqa: E402

PG_ADMIN = os.environ.get("GATEKEEPER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
SECRET = "bench-secret-not-for-production"  # noqa: S105 - a benchmark's throwaway key
BROWSER_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
LUA = """
local paths = {}
for line in io.lines(os.getenv("GK_PATHS")) do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
"""
WARM_UP = 2  # seconds of load before each measured run, not counted
# PERFORMANCE.md targets (ratios to the trivial 302 in the same run).
TARGETS = {"unsubscribe_get": (0.85, 1.5), "click": (0.65, 2.0)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"gunicorn exited with {proc.returncode}; see its log above")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                time.sleep(0.5)  # let both workers boot
                return
        time.sleep(0.1)
    sys.exit("gunicorn did not start listening in time")


@contextmanager
def gunicorn(app: str, env: dict[str, str], log: Path) -> Any:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        "2",
        "--bind",
        f"127.0.0.1:{port}",
        "--chdir",
        str(ROOT),
        app,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env={**os.environ, **env}, stdout=out, stderr=out)
        try:
            wait_listening(port, proc)
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=30)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def run_wrk(
    wrk: str,
    url: str,
    seconds: int,
    connections: int,
    *,
    script: Path | None = None,
    paths: Path | None = None,
) -> dict[str, float]:
    args = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-H",
        f"User-Agent: {BROWSER_UA}",
        "-H",
        "Accept-Language: fr-FR,fr;q=0.9",
    ]
    if script is not None:
        args += ["-s", str(script)]
    env = {**os.environ, "GK_PATHS": str(paths or "")}
    out = subprocess.run([*args, url], capture_output=True, text=True, env=env, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    total = re.search(r"(\d+) requests in", out)
    return {
        "rps": rps,
        "p99_ms": float(p99.group(1)) * _UNITS[p99.group(2)],  # type: ignore[union-attr]
        "bad": float(bad.group(1)) if bad else 0.0,
        "requests": float(total.group(1)) if total else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
    }


def make_register(url: str, contacts: int) -> None:
    upgrade(url)
    settings = load_settings(
        environ={}, overrides={"env": "bench", "secret_key": SECRET, "database_url": url}
    )
    ctx = context_from(settings)
    problems = Problems()
    records = [
        parse_contact(
            {
                "external_id": f"bench-{i}",
                "email": f"user{i}@example{i % 97}.fr",
                "first_name": "Paul",
                "collected_at": "2025-06-10",
                "collected_by": "ACME SAS",
            },
            i,
            problems,
            "FR",
        )
        for i in range(contacts)
    ]
    database = Database(url)
    with database.session_scope() as session:
        upsert_contacts(session, [r for r in records if r is not None], ctx, want_ids=False)
    database.engine.dispose()


def write_paths(path: Path, kind: str, contacts: int) -> None:
    signer = LinkSigner([SECRET], "http://127.0.0.1", utc_clock)
    sent = datetime.now(UTC) - timedelta(hours=1)  # past the scanner grace: every click counts
    with path.open("w") as fh:
        for cid in range(1, contacts + 1):
            if kind == "unsubscribe":
                fh.write(f"/u/{signer.unsubscribe(cid, 1)}\n")
            else:
                token = signer.tracked("click", cid, 1, "https://shop.example/offre?id=42", sent)
                fh.write(f"/c/{token}\n")


@contextmanager
def drainer(env: dict[str, str], log: Path) -> Any:
    """``gatekeeper drain`` (a pass every second), as ``gatekeeper run`` starts it beside the workers."""
    args = [sys.executable, "-m", "gatekeeper.cli", "drain"]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env={**os.environ, **env}, cwd=ROOT, stdout=out, stderr=out)
        try:
            yield proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def wait_drained(spool: Path, proc: subprocess.Popen[bytes], timeout: float = 300.0) -> float:
    """Poll until the clicks spool is empty again; the moment it was."""
    deadline = time.monotonic() + timeout
    while pending(spool, "clicks") > 0:
        if proc.poll() is not None:
            sys.exit(f"the drainer exited with {proc.returncode}; see its log")
        if time.monotonic() > deadline:
            sys.exit("the drainer did not catch up in time")
        time.sleep(0.01)
    return time.monotonic()


def count_clicks(url: str) -> int:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        n = conn.execute(text("SELECT COUNT(*) FROM events WHERE type = 'interest'")).scalar_one()
    engine.dispose()
    return int(n)


@contextmanager
def database(kind: str, workdir: Path) -> Any:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    name = f"gk_bench_{os.getpid()}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def vs_http(
    bench: str, db: str, value: float, unit: str, base: dict[str, float], **extra: Any
) -> dict[str, Any]:
    """A rate figure against the trivial 302's rate (PERFORMANCE.md output contract)."""
    return {
        "bench": bench,
        "db": db,
        "value": round(value, 1),
        "unit": unit,
        "baseline": "HTTP",
        "baseline_value": round(base["rps"], 1),
        "ratio": round(value / base["rps"], 3),
        **extra,
    }


def figure(name: str, db: str, measured: dict[str, float], base: dict[str, float]) -> list[dict[str, Any]]:
    rate_target, p99_target = TARGETS[name]
    return [
        vs_http(f"links.{name}", db, measured["rps"], "req/s", base, target_min=rate_target),
        {
            "bench": f"links.{name}.p99",
            "db": db,
            "value": round(measured["p99_ms"], 2),
            "unit": "ms",
            "baseline": "HTTP p99",
            "baseline_value": round(base["p99_ms"], 2),
            "ratio": round(measured["p99_ms"] / base["p99_ms"], 3),
            "target_max": p99_target,
        },
    ]


ROUNDS = 5  # slices per measured link, each between two slices of the baseline


def interleaved(
    measure: Any, baseline_port: int, subjects: dict[str, tuple[int, str]], seconds: int
) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, list[float]]]:
    """Alternate short slices of the baseline and of each subject (B S1 S2 B S1 S2 ... B), so
    that each subject slice is compared with the baseline measured just before and just after
    it. On these shared machines the rate of the same server drifts by a tenth or more within
    a minute; a baseline measured only at the start and the end of the run charged that drift
    to whichever link ran in between. Each subject still gets ``seconds`` of load in all."""
    rounds = max(1, min(ROUNDS, seconds // 2))
    piece = max(1, round(seconds / rounds))
    base_runs = [measure(baseline_port, "unsubscribe", piece)]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in subjects}
    for _ in range(rounds):
        for name, (port, kind) in subjects.items():
            runs[name].append(measure(port, kind, piece))
        base_runs.append(measure(baseline_port, "unsubscribe", piece))
    # The baseline each slice is held against: the mean of the two around it.
    around = [
        {k: (before[k] + after[k]) / 2 for k in ("rps", "p99_ms")} for before, after in pairwise(base_runs)
    ]
    base = _mean(around)
    results, ratios = {}, {}
    for name, slices in runs.items():
        merged = _mean(slices)
        merged["bad"] = sum(r["bad"] for r in slices)
        merged["socket_errors"] = max(r["socket_errors"] for r in slices)
        merged["requests"] = sum(r["requests"] for r in slices)
        results[name] = merged
        ratios[name] = [r["rps"] / b["rps"] for r, b in zip(slices, around, strict=True)]
    print(
        f"  {rounds} rounds of {piece} s; baseline slices: "
        + ", ".join(f"{r['rps']:,.0f}" for r in base_runs)
        + " req/s"
    )
    return base, results, ratios


def _mean(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(r[k] for r in runs) / len(runs) for k in ("rps", "p99_ms")}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    wrk = ensure_wrk()
    contacts = min(100_000, max(5_000, args.seconds * 3_000))
    with (
        tempfile.TemporaryDirectory(prefix="gk-bench-links-") as tmp,
        database(args.db, Path(tmp)) as url,
    ):
        work = Path(tmp)
        load = f"wrk -t1 -c{args.connections} -d{args.seconds}s"
        print(f"register: {contacts} contacts ({args.db}); {load}", flush=True)
        make_register(url, contacts)
        for kind in ("unsubscribe", "click"):
            write_paths(work / f"{kind}.txt", kind, contacts)
        (work / "paths.lua").write_text(LUA)
        env = {
            "GATEKEEPER_ENV": "bench",
            "GATEKEEPER_SECRET_KEY": SECRET,
            "GATEKEEPER_DATABASE_URL": url,
            "GATEKEEPER_ARCHIVE_DATABASE_URL": f"sqlite:///{work / 'archive.db'}",
            # The limiter still runs on every request; wrk is one address, so lift its ceiling.
            "GATEKEEPER_RATE_LIMIT_PER_MINUTE": str(10**9),
            "GATEKEEPER_SPOOL_DIR": str(work / "spool"),
        }
        with ExitStack() as servers:
            trivial = servers.enter_context(gunicorn("bench.trivial_app:app", {}, work / "t.log"))
            flask_port = servers.enter_context(
                gunicorn("bench.trivial_app:flask_app", {}, work / "flask.log")
            )
            ours = servers.enter_context(gunicorn("gatekeeper.wsgi:app", env, work / "gk.log"))
            drain_proc = servers.enter_context(drainer(env, work / "drain.log"))

            def measure(port: int, kind: str | None = None, seconds: int = 0) -> dict[str, float]:
                files = {"script": work / "paths.lua", "paths": work / f"{kind}.txt"} if kind else {}
                url = f"http://127.0.0.1:{port}{'/r' if kind is None else ''}"
                measured = run_wrk(wrk, url, seconds or args.seconds, args.connections, **files)
                if kind == "click":
                    # The drainer stores a slice's clicks before the next slice starts, so that
                    # its work is not charged to the baseline or the page measured next.
                    wait_drained(work / "spool", drain_proc)
                return measured

            # Warm up every server first: workers import the app and compile templates on first use.
            warm = ((trivial, "unsubscribe"), (flask_port, None), (ours, "unsubscribe"), (ours, "click"))
            for port, kind in warm:
                measure(port, kind, WARM_UP)
            plain = measure(trivial)
            flask = measure(flask_port)
            # The baseline is driven by the same request script as the measured runs (the trivial
            # app ignores the path): wrk shares the two cores with the server, and its per-request
            # Lua costs about a tenth of them, so a scriptless baseline would charge the load
            # generator's work to ours. The scriptless figure is still printed, for reference.
            base, results, slices = interleaved(
                measure,
                trivial,
                {"unsubscribe_get": (ours, "unsubscribe"), "click": (ours, "click")},
                args.seconds,
            )
            # The clicks' storage is measured on a run of its own, from its first request until
            # the drainer has stored the last click: interleaved slices would mix its lag with
            # the other runs.
            files = {"script": work / "paths.lua", "paths": work / "click.txt"}
            clicks_url = f"http://127.0.0.1:{ours}"
            before = count_clicks(url)
            start = time.monotonic()
            stored = run_wrk(wrk, clicks_url, args.seconds, args.connections, **files)
            answered = time.monotonic()
            drained = wait_drained(work / "spool", drain_proc)
            stored["stored"] = float(count_clicks(url) - before)
            stored["stored_per_s"] = stored["stored"] / (drained - start)
            stored["drain_lag_s"] = drained - answered
        report(base, plain, flask, results, slices, stored, db=args.db, work=work)


def report(
    base: dict[str, float],
    plain: dict[str, float],
    flask: dict[str, float],
    results: dict[str, dict[str, float]],
    slices: dict[str, list[float]],
    click: dict[str, float],
    *,
    db: str,
    work: Path,
) -> None:
    print(f"  trivial 302        {base['rps']:>9,.0f} req/s  p99 {base['p99_ms']:6.2f} ms")
    references = (
        ("links.trivial_no_script", "trivial, no script", plain, "wrk without its request script"),
        ("links.flask_302", "flask 302", flask, "the framework alone"),
    )
    figures: list[dict[str, Any]] = []
    for bench, label, measured, what in references:
        ratio = measured["rps"] / base["rps"]
        print(
            f"  ({label:<18} {measured['rps']:>8,.0f} req/s  p99 {measured['p99_ms']:6.2f} ms   "
            f"ratio {ratio:.2f}: {what}, for reference)"
        )
        figures.append(
            vs_http(
                bench,
                db,
                measured["rps"],
                "req/s",
                base,
                p99_ms=round(measured["p99_ms"], 2),
                note=f"reference only, no target: {what}",
            )
        )
    for name, measured in results.items():
        print(
            f"  {name:<18} {measured['rps']:>9,.0f} req/s  p99 {measured['p99_ms']:6.2f} ms   "
            f"ratio {measured['rps'] / base['rps']:.2f} (target >= {TARGETS[name][0]}),  "
            f"p99 ratio {measured['p99_ms'] / base['p99_ms']:.2f} (target <= {TARGETS[name][1]})"
        )
        print(f"  {'':<18} ratio per slice: " + ", ".join(f"{r:.2f}" for r in slices[name]))
        if measured["bad"] or measured["socket_errors"]:
            print(
                f"  WARNING {name}: {measured['bad']:.0f} non-2xx/3xx answers or socket errors; "
                f"see {work}/gk.log"
            )
        figures += figure(name, db, measured, base)
    print(
        f"  clicks stored      {click['stored_per_s']:>9,.0f} clicks/s "
        f"({click['stored']:.0f} of {click['requests']:.0f} answered; spool drained "
        f"{click['drain_lag_s']:.2f} s after the last answer; {click['rps']:,.0f} req/s answered)   "
        f"ratio {click['stored_per_s'] / base['rps']:.2f}"
    )
    # wrk does not count the answers still in flight when it stops: a few more may be stored.
    if click["stored"] < click["requests"]:
        print(f"  WARNING: fewer clicks stored than answered; see {work}/drain.log")
    figures.append(
        vs_http(
            "links.click.stored",
            db,
            click["stored_per_s"],
            "clicks/s",
            base,
            stored=int(click["stored"]),
            answered=int(click["requests"]),
            drain_lag_s=round(click["drain_lag_s"], 3),
            note="first request to spool drained; the req/s target applies to links.click",
        )
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
