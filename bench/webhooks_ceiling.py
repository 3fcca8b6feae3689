"""How fast can a webhook endpoint that stores before it answers go at all? The ceilings of the
webhook targets, measured (diagnostic, no target).

    .venv/bin/python bench/webhooks_ceiling.py --seconds 5 --rounds 2

The targets (PERFORMANCE.md) are batched >= 0.5 x INGEST and single >= 0.6 x HTTP, through
HTTP. This script serves, under bench/webhooks.py's gunicorn setup (2 sync workers) and load
clients (``--clients`` Python threads posting the same signed 500-event SendGrid batches; wrk
-t1 -c16 posting the same signed Mailgun events), bare endpoints (``bench/_bare_webhook_app.py``)
that do only what a step list says, each on a fresh SQLite copy, and gatekeeper itself:

- batched, events/s stored, against INGEST in-process (the baseline): ``ingest`` (what INGEST
  does, behind HTTP: the ceiling of any endpoint that stores before its 2xx), then cumulatively
  ``+ verify`` (ECDSA), ``+ facts`` (register facts, suppressions), ``+ journal`` (hash chain),
  ``+ clocks`` (counting clicks move the deadline): everything issue #6 mandates; last
  ``gatekeeper`` as bench/webhooks.py measures it;
- single, events/s stored, against HTTP (the trivial 302): ``verify, no store`` (parse and
  verify the HMAC, then 200 with nothing stored: not durable, the floor of any verifying
  endpoint, for scale), ``sqlite`` (verify the HMAC, the token as a unique row, the raw event,
  commit, 200), ``sqlite + effects`` (also the batched steps' fact, journal entry, suppression
  and clock), ``spool + drainer`` (verify, one line appended, 200; a bare drainer polling
  every 0.05 s stores the lines beside it, counted once stored, as gatekeeper's spool is),
  ``spool + effects`` (the drainer applies the effects too), then ``gatekeeper``.
The arms run interleaved, ``--rounds`` times, every other round in reverse order, so drift on
a shared machine falls on all of them; each line prints the mean, the spread (min-max) over
the rounds and the ratio of the means. The last line is the JSON list of the output contract.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

HERE = Path(__file__).resolve().parent
# As in bench/webhooks.py: keep bench/ off the path, or bench/webhooks.py shadows the adapters.
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]
from bench import _bare_webhook_app as bare  # noqa: E402
from bench._common import emit  # noqa: E402
from bench.webhooks import (  # noqa: E402
    BATCH,
    MAILGUN_KEY,
    MAILGUN_LUA,
    WARM_UP,
    WARM_UP_BATCHES,
    Register,
    Run,
    drainer,
    gunicorn,
    ingest_baseline,
    mailgun_pool,
    measured,
    post_batches,
    seed_register,
    sendgrid_batches,
    service_env,
    stored_run,
    wrk,
)

BATCHES_PER_SECOND = 320  # pool size: above any arm's rate here (a dry pool ends a run early)
SINGLES_PER_SECOND = 9_000
INGEST_BODIES = 200
STEPS = ("ingest", "verify", "facts", "journal", "clocks")
EFFECTS = "ingest,facts,journal,clocks"  # a single's mandated effects, its HMAC always verified

Signed = list[tuple[bytes, dict[str, str]]]


@dataclass
class Arm:
    name: str
    measure: Callable[[Path], Run]  # in a fresh directory: the run, its events/s in ``stored``
    values: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # server workers' CPU per request

    def record(self, run: Run) -> None:
        self.values.append(run.stored_per_second)
        self.cpu_ms.append(run.cpu_ms)
        lag = (
            f", answered {run.per_second:,.0f} req/s, drain lag {run.drain_lag:.2f} s"
            if run.drain_lag
            else ""
        )
        print(
            f"    {self.name:<22} {run.stored_per_second:>10,.0f} events/s stored, {run.cpu_ms:7.2f} ms"
            f" worker CPU/request{lag}",
            flush=True,
        )


@dataclass
class Bench:
    workdir: Path
    seconds: int
    clients: int
    key: ec.EllipticCurvePrivateKey
    register: Register
    register_db: Path  # gatekeeper's seeded register, copied for each of its runs
    bare_db: Path  # the bare schema with the same contacts, copied for each bare run
    batches: Signed = field(default_factory=list)
    warm_batches: Signed = field(default_factory=list)
    singles: Path = Path()
    warm_singles: Path = Path()

    def sign(self) -> None:
        """(Re)sign every pool with the current time: both providers' stamps must stay fresh."""
        if not self.batches:
            count = WARM_UP_BATCHES + self.seconds * BATCHES_PER_SECOND
            signed = sendgrid_batches(self.register, count, self.key)
            self.warm_batches, self.batches = signed[:WARM_UP_BATCHES], signed[WARM_UP_BATCHES:]
        else:
            self.warm_batches, self.batches = (
                resign(self.warm_batches, self.key),
                resign(self.batches, self.key),
            )
        now = int(time.time())
        warm = WARM_UP * SINGLES_PER_SECOND
        self.warm_singles = mailgun_pool(self.workdir / "warm.jsonl", self.register, range(warm), now)
        self.singles = mailgun_pool(
            self.workdir / "singles.jsonl",
            self.register,
            range(warm, warm + self.seconds * SINGLES_PER_SECOND),
            now,
        )

    # --- environments -----------------------------------------------------------------------

    def bare_env(self, run: Path, steps: str, spool: bool = False) -> dict[str, str]:
        shutil.copy(self.bare_db, run / "bare.db")
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        env = {
            **os.environ,
            "BARE_DB": str(run / "bare.db"),
            "BARE_STEPS": steps,
            "BARE_PUBLIC_KEY": base64.b64encode(der).decode(),
            "BARE_MAILGUN_KEY": MAILGUN_KEY,
        }
        if spool:
            env["BARE_SPOOL"] = str(run / "spool.jsonl")
        return env

    def service_env(self, run: Path) -> dict[str, str]:
        env = service_env(run, self.key)
        shutil.copy(self.register_db, run / "gatekeeper.db")
        return env

    # --- batched ----------------------------------------------------------------------------

    def bare_batched(self, steps: str) -> Callable[[Path], Run]:
        def measure(run: Path) -> Run:
            with gunicorn("_bare_webhook_app:app", self.bare_env(run, steps), HERE) as server:
                post_batches(server.port, self.warm_batches, self.clients, WARM_UP)
                result = measured(
                    server, lambda: post_batches(server.port, self.batches, self.clients, self.seconds)
                )
            result.stored, result.stored_seconds = result.requests * BATCH, result.seconds
            return checked(result, len(self.batches))

        return measure

    def ours_batched(self, run: Path) -> Run:
        env = self.service_env(run)
        url, spool = env["GATEKEEPER_DATABASE_URL"], Path(env["GATEKEEPER_SPOOL_DIR"])
        with gunicorn("gatekeeper.wsgi:app", env, HERE.parent) as server, drainer(env) as drain_pid:
            post_batches(server.port, self.warm_batches, self.clients, WARM_UP)
            result = stored_run(
                server,
                lambda: post_batches(server.port, self.batches, self.clients, self.seconds),
                url,
                spool,
                drain_pid,
            )
        wal_note(run)
        return checked(result, len(self.batches))

    def ingest(self, run: Path) -> Run:
        bodies = [body for body, _ in self.batches[:INGEST_BODIES]]
        rate, cpu_ms = ingest_baseline(bodies, run, "baseline")
        seconds = len(bodies) * BATCH / rate
        return Run(len(bodies), seconds, 0.0, 0, cpu_ms * len(bodies) / 1000, len(bodies) * BATCH, seconds)

    # --- single -----------------------------------------------------------------------------

    def http(self, run: Path) -> Run:
        del run
        with gunicorn("_trivial_webhook_app:app", dict(os.environ), HERE) as server:
            wrk(server.port, WARM_UP)
            result = measured(server, lambda: wrk(server.port, self.seconds))
        result.stored, result.stored_seconds = result.requests, result.seconds
        return result

    def mailgun(self, port: int, pool: Path, seconds: int) -> Run:
        script = self.workdir / "mailgun.lua"
        return wrk(port, seconds, "/webhooks/mailgun", script, [str(pool)])

    def bare_single(self, steps: str) -> Callable[[Path], Run]:
        def measure(run: Path) -> Run:
            with gunicorn("_bare_webhook_app:app", self.bare_env(run, steps), HERE) as server:
                self.mailgun(server.port, self.warm_singles, WARM_UP)
                result = measured(server, lambda: self.mailgun(server.port, self.singles, self.seconds))
            result.stored, result.stored_seconds = result.requests, result.seconds
            return checked(result)

        return measure

    def spooled_single(self, steps: str) -> Callable[[Path], Run]:
        def measure(run: Path) -> Run:
            env = self.bare_env(run, steps, spool=True)
            done = run / "drained"
            command = [
                sys.executable,
                str(HERE / "_bare_webhook_app.py"),
                "drain",
                env["BARE_SPOOL"],
                env["BARE_DB"],
                str(done),
                steps,
            ]
            drain = subprocess.Popen(command, env=env)
            try:
                with gunicorn("_bare_webhook_app:app", env, HERE) as server:
                    self.mailgun(server.port, self.warm_singles, WARM_UP)
                    spool = Path(env["BARE_SPOOL"])
                    until_offset(done, spool.stat().st_size)
                    before, began = count_events(run / "bare.db"), time.perf_counter()
                    result = measured(server, lambda: self.mailgun(server.port, self.singles, self.seconds))
                    size = spool.stat().st_size
                finished = until_offset(done, size)
            finally:
                drain.terminate()
                drain.wait(timeout=30)
            result.stored = count_events(run / "bare.db") - before
            result.stored_seconds, result.drain_lag = finished - began, finished - began - result.seconds
            return checked(result)

        return measure

    def ours_single(self, run: Path) -> Run:
        env = self.service_env(run)
        url, spool = env["GATEKEEPER_DATABASE_URL"], Path(env["GATEKEEPER_SPOOL_DIR"])
        with gunicorn("gatekeeper.wsgi:app", env, HERE.parent) as server, drainer(env) as drain_pid:
            self.mailgun(server.port, self.warm_singles, WARM_UP)
            result = stored_run(
                server, lambda: self.mailgun(server.port, self.singles, self.seconds), url, spool, drain_pid
            )
        wal_note(run)
        return checked(result)


def slug(name: str) -> str:
    return re.sub("[^a-z0-9]+", "_", name.lower()).strip("_")


def wal_note(run: Path) -> None:
    """The WAL's size once the load ended: its frames since the last restart of the log. Two
    workers that take turns writing while the other reads can keep every checkpoint from
    restarting it, and then it holds everything the run wrote."""
    wal = run / "gatekeeper.db-wal"
    size = wal.stat().st_size / 2**20 if wal.exists() else 0.0
    print(f"    (gatekeeper's WAL at the end: {size:,.0f} MiB)")


def resign(pool: Signed, key: ec.EllipticCurvePrivateKey) -> Signed:
    stamp = str(int(time.time()))
    signed = []
    for body, headers in pool:
        signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        signed.append(
            (
                body,
                headers
                | {
                    "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
                    "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
                },
            )
        )
    return signed


def checked(run: Run, pool: int | None = None) -> Run:
    if run.errors:
        raise RuntimeError(f"{run.errors} requests were not answered 2xx: the figure would flatter")
    if pool is not None and run.requests >= pool:
        print(f"    (the pool of {pool} ran dry: measured over {run.seconds:.1f} s)")
    return run


def count_events(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        conn.close()


def until_offset(done: Path, size: int, seconds: float = 300) -> float:
    """Waits until the bare drainer has stored the spool up to ``size`` bytes; the moment it had."""
    deadline = time.monotonic() + seconds
    while not done.exists() or int(done.read_text() or 0) < size:
        if time.monotonic() > deadline:
            raise RuntimeError("the bare drainer did not catch up")
        time.sleep(0.01)
    return time.perf_counter()


def interleaved(bench: Bench, arms: list[Arm], rounds: int) -> None:
    for r in range(rounds):
        bench.sign()
        print(f"  round {r + 1}:", flush=True)
        for arm in arms if r % 2 == 0 else arms[::-1]:
            with tempfile.TemporaryDirectory(dir=bench.workdir) as tmp:
                result = arm.measure(Path(tmp))
            arm.record(result)


def summary(
    series: str, arms: list[Arm], target: float, unit_base: str, **extra: Any
) -> list[dict[str, Any]]:
    base = arms[0]
    base_mean = statistics.mean(base.values)
    print(f"\n{series}: mean events/s (min-max over rounds), ratio to {unit_base} (target {target})")
    figures = []
    for arm in arms:
        mean = statistics.mean(arm.values)
        ratios = [v / b for v, b in zip(arm.values, base.values, strict=True)]
        spread = f"{min(arm.values):,.0f}-{max(arm.values):,.0f}"
        cpu = statistics.mean(arm.cpu_ms)
        flag = "" if arm is base else ("  below target" if mean / base_mean < target else "  reaches target")
        print(
            f"  {arm.name:<22} {mean:>10,.0f}  ({spread:>17})  {mean / base_mean:5.2f} x"
            f"  (per round {min(ratios):.2f}-{max(ratios):.2f})  {cpu:7.2f} ms CPU{flag}"
        )
        if arm is base:
            continue
        figures.append(
            {
                "bench": f"webhooks_ceiling.{series}.{slug(arm.name)}",
                "db": "sqlite",
                **extra,
                "value": round(mean, 1),
                "unit": "events/s",
                "baseline": unit_base,
                "baseline_value": round(base_mean, 1),
                "ratio": round(mean / base_mean, 3),
                "spread": [round(min(arm.values), 1), round(max(arm.values), 1)],
                "ratio_spread": [round(min(ratios), 3), round(max(ratios), 3)],
                "worker_cpu_ms_per_request": round(cpu, 3),
                "note": f"diagnostic, no target; the target is {target} x {unit_base}",
            }
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each load run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every arm")
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=4, help="threads posting batches")
    parser.add_argument("--only", choices=("batched", "single"), help="one series only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gk-bench-ceiling-") as tmp:
        workdir = Path(tmp)
        key = ec.generate_private_key(ec.SECP256R1())
        seeded = workdir / "seed"
        seeded.mkdir()
        env = service_env(seeded, key)
        register = seed_register(env["GATEKEEPER_DATABASE_URL"], args.contacts, seeded, env)
        with sqlite3.connect(seeded / "gatekeeper.db") as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        bare.create(str(workdir / "bare.db"), register.contacts)
        bench = Bench(
            workdir, args.seconds, args.clients, key, register, seeded / "gatekeeper.db", workdir / "bare.db"
        )
        (workdir / "mailgun.lua").write_text(MAILGUN_LUA)
        print(f"register: {len(register.contacts):,} contacts; {args.rounds} rounds of {args.seconds} s")
        figures: list[dict[str, Any]] = []
        if args.only in (None, "batched"):
            arms = [Arm("INGEST (in-process)", bench.ingest)]
            arms += [
                Arm(("bare " if i == 0 else "+ ") + step, bench.bare_batched(",".join(STEPS[: i + 1])))
                for i, step in enumerate(STEPS)
            ]
            arms.append(Arm("gatekeeper", bench.ours_batched))
            print("batched (500-event SendGrid batches):")
            interleaved(bench, arms, args.rounds)
            figures += summary(
                "batched",
                arms,
                0.5,
                "INGEST",
                batch=BATCH,
                seconds=args.seconds,
                rounds=args.rounds,
                contacts=args.contacts,
            )
        if args.only in (None, "single"):
            arms = [
                Arm("HTTP (trivial 302)", bench.http),
                Arm("bare verify, no store", bench.bare_single("verify")),
                Arm("bare sqlite", bench.bare_single("ingest")),
                Arm("bare sqlite + effects", bench.bare_single(EFFECTS)),
                Arm("bare spool + drainer", bench.spooled_single("ingest")),
                Arm("spool + effects", bench.spooled_single(EFFECTS)),
                Arm("gatekeeper", bench.ours_single),
            ]
            print("\nsingle (Mailgun events):")
            interleaved(bench, arms, args.rounds)
            figures += summary(
                "single", arms, 0.6, "HTTP", seconds=args.seconds, rounds=args.rounds, contacts=args.contacts
            )
    emit(figures)


if __name__ == "__main__":
    main()
