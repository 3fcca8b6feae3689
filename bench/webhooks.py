"""Webhook ingestion through HTTP against the INGEST and HTTP baselines of the same run
(PERFORMANCE.md).

    .venv/bin/python bench/webhooks.py --seconds 10

What runs, in order, on 127.0.0.1:
- HTTP baseline: gunicorn (2 sync workers) serving ``_trivial_webhook_app`` (a 302), loaded by
  ``wrk -t1 -c16 --latency`` for N seconds (after a 2-second warm-up).
- INGEST baseline, in-process: the same 500-event bodies, ``json.loads`` + an ``executemany``
  of tuples (key, kind, email, time, raw JSON) ``ON CONFLICT DO NOTHING`` into a SQLite table
  with a unique index, one transaction per batch, same pragmas as the service.
- gatekeeper under the same gunicorn setup, on a temporary SQLite register of ``--contacts``
  contacts, GATEKEEPER_WEBHOOKS holding a SendGrid public key and a Mailgun signing key, each
  run after 2 seconds of the same load that are not counted:
  * batched: signed SendGrid batches of 500 events (a newsletter's mix, ``SENDGRID_MIX``: 3 %
    clicks, 17 % opens; 9 in 10 for known contacts, with our ids), posted by ``--clients``
    Python threads, one connection per request (sync workers close it);
  * single: signed Mailgun events, one per request, by ``wrk -t1 -c16`` like the baseline.
  Every body is generated and signed before the clock starts, each with its own event ids (and
  Mailgun token): the server stores every event, none is a cheap duplicate.
  The service journals the events without legal urgency in its spool (gatekeeper/spool.py), and
  a request that stores its events leaves their index by contact and its clicks' facts in a
  queue table (gatekeeper/register/webhook_queue.py), so ``gatekeeper drain`` runs beside it
  throughout. Each run reports the answer rate *and* the rate at which events were stored *and
  applied*: every event stored, counted from the first request until the spool and the queue
  are both empty again; the drain lag is the time from the last answer to that moment. The
  ratio uses that rate.
- Both baselines again: on a shared, noisy machine, the ratios use the mean of the two.
The script is named as the issue asks, which makes it shadow the ``webhooks`` adapters package
while bench/ is on ``sys.path``: its own directory is removed from the path before any import.
Prints events/s and req/s, the baselines and the ratios; the last line is the JSON list of
PERFORMANCE.md's output contract.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

HERE = Path(__file__).resolve().parent
# This file's name would shadow the ``webhooks`` adapters package for every import made while
# bench/ is on the path (the editable install's finder comes after the path): keep it off.
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]
from bench._common import emit, ensure_wrk  # noqa: E402
from gatekeeper.config import load_settings  # noqa: E402
from gatekeeper.db import Database  # noqa: E402
from gatekeeper.migrate import upgrade  # noqa: E402
from gatekeeper.register.context import context_from  # noqa: E402
from gatekeeper.register.imports import import_file  # noqa: E402
from gatekeeper.spool import pending  # noqa: E402
from gatekeeper.webhook_spooled import STREAM  # noqa: E402

ROOT = HERE.parent
BIN = Path(sys.executable).parent
BATCH = 500
MAILGUN_KEY = "bench-mailgun-signing-key"
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36"
# Per hundred events, what a newsletter's event webhook carries: every message processed and
# delivered, a sixth opened, a few clicked, about one bounce, unsubscribe and complaint.
SENDGRID_MIX = (["processed"] * 38 + ["delivered"] * 38 + ["open"] * 17 + ["click"] * 3
                + ["deferred", "bounce", "unsubscribe", "spamreport"])
MAILGUN_MIX = ["delivered"] * 70 + ["opened"] * 24 + ["clicked"] * 4 + ["failed", "unsubscribed"]
# Upper bounds of the rates, to size the pre-signed pools (a pool that runs dry ends the run).
MAX_BATCHES_PER_SECOND = 150
MAX_SINGLES_PER_SECOND = 9_000
# Seconds of load before each measured run, not counted: both workers booted and warm.
WARM_UP = 2
WARM_UP_BATCHES = 40
# The warm-up's own pool, as large as the measured one per second: a pool that ran dry replayed
# tokens during the warm-up (refused, logged by the hundred), which exercised the wrong path.
WARM_UP_SINGLES = WARM_UP * MAX_SINGLES_PER_SECOND


@dataclass
class Register:
    """The bench's contacts: address and id, as our sends would have tagged them."""

    contacts: list[tuple[int, str]]
    rng: random.Random = field(default_factory=lambda: random.Random(6))

    def recipient(self) -> tuple[int | None, str]:
        if self.rng.random() < 0.1:  # a forwarded message, an address we never held
            return None, f"stranger{self.rng.randrange(10**9)}@elsewhere.example.net"
        return self.rng.choice(self.contacts)


# --- bodies, generated and signed before the clock starts ---------------------------------


def sendgrid_event(register: Register, batch: int, i: int, now: int) -> dict[str, Any]:
    kind = SENDGRID_MIX[i % len(SENDGRID_MIX)]
    contact_id, email = register.recipient()
    event: dict[str, Any] = {
        "email": email, "timestamp": now - 60 + i % 60, "event": kind,
        "sg_event_id": f"bench-{batch}-{i}", "sg_message_id": f"msg-{batch}.{i}.filter0001",
        "smtp-id": f"<{batch}.{i}@bench>", "category": ["newsletter"], "gk_campaign": "1",
    }
    if contact_id is not None:
        event["gk_contact"] = str(contact_id)
    if kind in ("open", "click"):
        event |= {"useragent": UA, "ip": "203.0.113.10"}
    if kind == "click":
        event["url"] = "https://shop.example.com/offer"
    if kind == "bounce":
        event |= {"type": "bounce", "reason": "550 5.1.1 user unknown", "status": "5.1.1"}
    return event


def sendgrid_batches(register: Register, count: int, key: ec.EllipticCurvePrivateKey) -> list[
        tuple[bytes, dict[str, str]]]:
    now = int(time.time())
    signed = []
    for batch in range(count):
        body = json.dumps([sendgrid_event(register, batch, i, now) for i in range(BATCH)]).encode()
        stamp = str(now)
        signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        signed.append((body, {
            "Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
        }))
    return signed


def mailgun_body(register: Register, n: int, now: int) -> bytes:
    kind = MAILGUN_MIX[n % len(MAILGUN_MIX)]
    contact_id, email = register.recipient()
    token = secrets.token_hex(25)
    stamp = str(now)
    digest = hmac.new(MAILGUN_KEY.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    data: dict[str, Any] = {
        "id": f"bench{n:012d}", "timestamp": now - 30 + n % 30, "event": kind, "recipient": email,
        "user-variables": {"gk_campaign": "1"} | ({"gk_contact": str(contact_id)}
                                                  if contact_id else {}),
        "message": {"headers": {"message-id": f"{n}@mg.bench"}},
    }
    if kind in ("opened", "clicked"):
        data["client-info"] = {"user-agent": UA, "client-type": "browser"}
    if kind == "clicked":
        data["url"] = "https://shop.example.com/offer"
    if kind == "failed":
        data |= {"severity": "permanent", "reason": "bounce"}
    signature = {"timestamp": stamp, "token": token, "signature": digest}
    return json.dumps({"signature": signature, "event-data": data}).encode()


# --- servers --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Server:
    port: int
    pid: int

    def workers_cpu(self) -> float:
        """CPU seconds used so far by the master's workers (Linux /proc): a figure that other
        processes on a shared machine disturb much less than throughput."""
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # a process that ended while we looked
            if int(fields[1]) == self.pid:
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")


@contextmanager
def gunicorn(app: str, env: dict[str, str], chdir: Path) -> Iterator[Server]:
    """2 sync workers on 127.0.0.1, as the HTTP baseline of PERFORMANCE.md."""
    port = free_port()
    command = [str(BIN / "gunicorn"), "-w", "2", "-k", "sync", "-b", f"127.0.0.1:{port}",
               "--chdir", str(chdir), "--log-level", "warning", app]
    process = subprocess.Popen(command, env=env)
    try:
        wait_for(port)
        yield Server(port, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_for(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                time.sleep(0.5)  # both workers booted, not just the master listening
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not listen on {port}")


# --- load -----------------------------------------------------------------------------------


@dataclass
class Run:
    requests: int
    seconds: float
    p99_ms: float
    errors: int
    cpu_seconds: float = 0.0  # the server workers' CPU time during the run
    stored: int = 0  # events in the database once the spool was empty again
    stored_seconds: float = 0.0  # from the first request until then
    drain_lag: float = 0.0  # from the last answer until then
    drainer_cpu_seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    @property
    def stored_per_second(self) -> float:
        return self.stored / self.stored_seconds if self.stored_seconds else 0.0

    @property
    def cpu_ms(self) -> float:
        return self.cpu_seconds / max(self.requests, 1) * 1000


@contextmanager
def cpu_of(server: Server) -> Iterator[list[float]]:
    """Measures the workers' CPU seconds across the block into the yielded list."""
    spent: list[float] = []
    before = server.workers_cpu()
    yield spent
    spent.append(server.workers_cpu() - before)


def wrk(port: int, seconds: int, path: str = "/", script: Path | None = None,
        script_args: list[str] | None = None) -> Run:
    command = [ensure_wrk(), "-t1", "-c16", f"-d{seconds}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(f"http://127.0.0.1:{port}{path}")
    if script_args:
        command += ["--", *script_args]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Run(total, float(seconds), _p99(out), int(errors.group(1)) if errors else 0)


def _p99(out: str) -> float:
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


MAILGUN_LUA = """
local bodies, n, i = {}, 0, 0
local errors = 0
function init(args)
  for line in io.lines(args[1]) do n = n + 1; bodies[n] = line end
end
function request()
  i = i % n + 1  -- a pool run dry replays tokens: answered 406 and counted as errors
  return wrk.format("POST", "/webhooks/mailgun", {["Content-Type"] = "application/json"},
                    bodies[i])
end
"""


def post_batches(port: int, pool: list[tuple[bytes, dict[str, str]]], clients: int,
                 seconds: int) -> Run:
    lock, statuses, latencies = threading.Lock(), [], []
    it = iter(pool)
    stop = time.perf_counter() + seconds

    def worker() -> None:
        while time.perf_counter() < stop:
            with lock:
                item = next(it, None)
            if item is None:
                return  # the pool ran dry: the run ends early, measured over its real length
            began = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            conn.request("POST", "/webhooks/sendgrid", body=item[0], headers=item[1])
            response = conn.getresponse()
            response.read()
            conn.close()
            with lock:
                statuses.append(response.status)
                latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else 0.0
    return Run(len(statuses), elapsed, p99, sum(s != 200 for s in statuses))


# --- baselines and setup --------------------------------------------------------------------


def ingest_baseline(bodies: list[bytes], workdir: Path, name: str) -> tuple[float, float]:
    """INGEST: parse a 500-event JSON batch + INSERT … ON CONFLICT DO NOTHING, one transaction
    per batch, SQLite with the service's pragmas. Events per second, CPU ms per batch."""
    conn = sqlite3.connect(workdir / f"ingest-{name}.db", isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL"):
        conn.execute(f"PRAGMA {pragma}")
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, dedupe_key TEXT NOT NULL UNIQUE,"
                 " kind TEXT, email TEXT, occurred_at INTEGER, raw TEXT)")
    sql = ("INSERT INTO events (dedupe_key, kind, email, occurred_at, raw) VALUES (?, ?, ?, ?, ?)"
           " ON CONFLICT (dedupe_key) DO NOTHING")
    began, cpu = time.perf_counter(), time.process_time()
    for body in bodies:
        rows = [(e["sg_event_id"], e["event"], e.get("email"), e["timestamp"], json.dumps(e))
                for e in json.loads(body)]
        conn.execute("BEGIN")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    conn.close()
    return len(bodies) * BATCH / elapsed, cpu / len(bodies) * 1000


def seed_register(url: str, contacts: int, workdir: Path, env: dict[str, str]) -> Register:
    upgrade(url)
    csv_path = workdir / "contacts.csv"
    with csv_path.open("w") as fh:
        fh.write("email,collected_at,collected_by\n")
        fh.writelines(f"person{i}@bench{i % 89}.example.fr,2025-03-01,ACME SAS\n"
                      for i in range(contacts))
    settings = load_settings(environ=env)
    database = Database(url)
    with database.session_scope() as session:
        import_file(session, "contacts", csv_path, context_from(settings))
    with database.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT id, email FROM contacts").all()
    database.engine.dispose()
    return Register([(int(cid), str(email)) for cid, email in rows])


@contextmanager
def drainer(env: dict[str, str]) -> Iterator[int]:
    """``gatekeeper drain`` (a pass every second), as ``gatekeeper run`` starts it; yields its pid."""
    interval = os.environ.get("BENCH_DRAIN_INTERVAL", "1.0")  # the CLI's default
    process = subprocess.Popen([sys.executable, "-m", "gatekeeper.cli", "drain", "--interval", interval],
                               env=env, cwd=ROOT)
    try:
        yield process.pid
    finally:
        process.terminate()
        process.wait(timeout=60)


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def until_drained(spool_dir: Path, url: str, seconds: float = 600) -> float:
    """Waits until the drainer has applied everything journaled in the spool and everything the
    requests queued in the database (``webhook_pending``: the index by contact, the clicks'
    facts); the moment it had."""
    deadline = time.monotonic() + seconds
    database = Database(url)
    try:
        with database.engine.connect() as conn:
            while True:
                if not pending(spool_dir, STREAM):
                    queued = conn.exec_driver_sql("SELECT 1 FROM webhook_pending LIMIT 1").first()
                    conn.rollback()  # a fresh snapshot each time round
                    if queued is None:
                        return time.perf_counter()
                if time.monotonic() > deadline:
                    raise RuntimeError("the drainer did not empty the spool and the queue")
                time.sleep(0.01)
    finally:
        database.engine.dispose()


def stored_run(server: Server, load: Any, url: str, spool_dir: Path, drainer_pid: int) -> Run:
    """``measured``, then until the spool is empty: what reached the database, and when."""
    until_drained(spool_dir, url)  # nothing left over from the warm-up
    before, cpu = stored(url), process_cpu(drainer_pid)
    began = time.perf_counter()
    run = measured(server, load)
    answered = time.perf_counter()
    done = until_drained(spool_dir, url)
    run.stored, run.stored_seconds = stored(url) - before, done - began
    run.drain_lag, run.drainer_cpu_seconds = done - answered, process_cpu(drainer_pid) - cpu
    return run


def service_env(workdir: Path, key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    hooks = {"sendgrid": [{"public_key": base64.b64encode(der).decode()}],
             "mailgun": [{"signing_key": MAILGUN_KEY}]}
    return {**os.environ, "GATEKEEPER_ENV": "production",
            "GATEKEEPER_SECRET_KEY": secrets.token_urlsafe(32),
            "GATEKEEPER_DATABASE_URL": f"sqlite:///{workdir / 'gatekeeper.db'}",
            "GATEKEEPER_ARCHIVE_DATABASE_URL": f"sqlite:///{workdir / 'archive.db'}",
            "GATEKEEPER_SPOOL_DIR": str(workdir / "spool"),
            "GATEKEEPER_WEBHOOKS": json.dumps(hooks)}


def stored(url: str) -> int:
    database = Database(url)
    with database.engine.connect() as conn:
        count = int(conn.exec_driver_sql("SELECT count(*) FROM webhook_events").scalar_one())
    database.engine.dispose()
    return count


def figure(bench: str, value: float, unit: str, *, baseline: str, base: float, target: float,
           **extra: Any) -> dict[str, Any]:
    return {"bench": bench, "db": "sqlite", **extra, "value": round(value, 1), "unit": unit,
            "baseline": baseline, "baseline_value": round(base, 1),
            "ratio": round(value / base, 3), "target_min": target}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each load run")
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=4, help="threads posting batches")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gk-bench-webhooks-") as tmp:
        workdir = Path(tmp)
        key = ec.generate_private_key(ec.SECP256R1())
        env = service_env(workdir, key)
        url = env["GATEKEEPER_DATABASE_URL"]
        register = seed_register(url, args.contacts, workdir, env)
        print(f"register: {len(register.contacts):,} contacts; signing the request pools…")
        batches = sendgrid_batches(register, (args.seconds + WARM_UP) * MAX_BATCHES_PER_SECOND, key)
        warm_batches, batches = batches[:WARM_UP_BATCHES], batches[WARM_UP_BATCHES:]
        now = int(time.time())
        warm_singles = mailgun_pool(workdir / "warm.jsonl", register, range(WARM_UP_SINGLES), now)
        singles = mailgun_pool(workdir / "mailgun.jsonl", register,
                               range(WARM_UP_SINGLES, WARM_UP_SINGLES
                                     + args.seconds * MAX_SINGLES_PER_SECOND), now)
        (workdir / "mailgun.lua").write_text(MAILGUN_LUA)

        # The baselines run first and last: on a shared, noisy machine their mean is the
        # fairer yardstick for the runs in between.
        http_runs = [http_baseline(env, args.seconds)]
        ingests = [ingest_baseline([body for body, _ in batches[:200]], workdir, "first")]
        spool = Path(env["GATEKEEPER_SPOOL_DIR"])
        with gunicorn("gatekeeper.wsgi:app", env, ROOT) as server, drainer(env) as drain_pid:
            post_batches(server.port, warm_batches, args.clients, WARM_UP)  # workers booted, warm
            batched = stored_run(server, lambda: post_batches(server.port, batches, args.clients,
                                                              args.seconds), url, spool, drain_pid)
            mailgun = workdir / "mailgun.lua"
            wrk(server.port, WARM_UP, "/webhooks/mailgun", mailgun, [str(warm_singles)])
            single = stored_run(server, lambda: wrk(server.port, args.seconds, "/webhooks/mailgun",
                                                    mailgun, [str(singles)]), url, spool, drain_pid)
        ingests.append(ingest_baseline([body for body, _ in batches[200:400]], workdir, "last"))
        http_runs.append(http_baseline(env, args.seconds))
    http_run = Run(sum(r.requests for r in http_runs), sum(r.seconds for r in http_runs),
                   max(r.p99_ms for r in http_runs), sum(r.errors for r in http_runs),
                   sum(r.cpu_seconds for r in http_runs))
    ingest = (sum(i[0] for i in ingests) / 2, sum(i[1] for i in ingests) / 2)
    report(args, http_run, ingest, batched, single)


def http_baseline(env: dict[str, str], seconds: int) -> Run:
    with gunicorn("_trivial_webhook_app:app", env, ROOT / "bench") as server:
        wrk(server.port, WARM_UP)
        return measured(server, lambda: wrk(server.port, seconds))


def mailgun_pool(path: Path, register: Register, numbers: range, now: int) -> Path:
    """One signed Mailgun body a line, each with its own event id and token."""
    with path.open("wb") as fh:
        for n in numbers:
            fh.write(mailgun_body(register, n, now) + b"\n")
    return path


def measured(server: Server, load: Any) -> Run:
    with cpu_of(server) as spent:
        run: Run = load()
    run.cpu_seconds = spent[0]
    return run


def report(args: argparse.Namespace, http_run: Run, ingest: tuple[float, float], batched: Run,
           single: Run) -> None:
    ingest_rate, ingest_cpu_ms = ingest
    answered = batched.requests * BATCH / batched.seconds
    events = batched.stored_per_second
    drainer_ms_per_batch = batched.drainer_cpu_seconds / max(batched.requests, 1) * 1000
    drainer_ms_per_single = single.drainer_cpu_seconds / max(single.requests, 1) * 1000
    print(f"HTTP baseline   {http_run.per_second:10,.0f} req/s   p99 {http_run.p99_ms:.1f} ms,"
          f" {http_run.cpu_ms:.2f} ms worker CPU/request")
    print(f"INGEST baseline {ingest_rate:10,.0f} events/s (SQLite, in-process),"
          f" {ingest_cpu_ms:.1f} ms CPU/batch")
    print(f"batched         {events:10,.0f} events/s stored ({batched.stored:,} in "
          f"{batched.stored_seconds:.1f} s, drain lag {batched.drain_lag:.2f} s); answered "
          f"{answered:,.0f} events/s ({batched.requests} batches in {batched.seconds:.1f} s, "
          f"p99 {batched.p99_ms:.0f} ms, {batched.errors} errors), {batched.cpu_ms:.1f} ms worker"
          f" + {drainer_ms_per_batch:.1f} ms drainer CPU/batch")
    print(f"single          {single.stored_per_second:10,.0f} events/s stored ({single.stored:,} in "
          f"{single.stored_seconds:.1f} s, drain lag {single.drain_lag:.2f} s); answered "
          f"{single.per_second:,.0f} req/s, p99 {single.p99_ms:.1f} ms ({single.errors} errors),"
          f" {single.cpu_ms:.2f} ms worker + {drainer_ms_per_single:.2f} ms drainer CPU/request")
    emit([
        figure("webhooks_batched", events, "events/s", baseline="INGEST", base=ingest_rate,
               target=0.5, seconds=round(batched.seconds, 1), batch=BATCH,
               contacts=args.contacts, answered_per_s=round(answered, 1),
               stored=batched.stored, drain_lag_s=round(batched.drain_lag, 2),
               p99_ms=round(batched.p99_ms, 1), errors=batched.errors,
               cpu_ms_per_batch=round(batched.cpu_ms, 2),
               drainer_cpu_ms_per_batch=round(drainer_ms_per_batch, 2),
               baseline_cpu_ms_per_batch=round(ingest_cpu_ms, 2)),
        figure("webhooks_single", single.stored_per_second, "events/s", baseline="HTTP",
               base=http_run.per_second, target=0.6, seconds=args.seconds,
               contacts=args.contacts, answered_per_s=round(single.per_second, 1),
               stored=single.stored, drain_lag_s=round(single.drain_lag, 2),
               p99_ms=round(single.p99_ms, 2),
               baseline_p99_ms=round(http_run.p99_ms, 2), errors=single.errors,
               cpu_ms_per_request=round(single.cpu_ms, 3),
               drainer_cpu_ms_per_request=round(drainer_ms_per_single, 3),
               baseline_cpu_ms_per_request=round(http_run.cpu_ms, 3)),
    ])


if __name__ == "__main__":
    main()
