"""Where a webhook request's CPU goes: bench/webhooks.py's bodies, in-process, phase by phase.

    .venv/bin/python bench/webhooks_phases.py --batches 150 --singles 8000

Not a target figure (no HTTP, no second worker, no baseline): a guide to what
``bench/webhooks.py`` measures through gunicorn. It builds the same register and signs the same
request bodies, serves a warm-up, then calls ``WebhookService.receive`` directly, one request
after another, and drains the spool as ``gatekeeper drain`` would. Each phase is timed in CPU
seconds (``time.process_time``) by wrapping the function that does it; nested phases are
indented and included in their parent. ``write turn`` is what a request holds SQLite's single
writer for (the apply and the commit): its inverse bounds the requests per second of any
number of workers. Prints one table per run; the last line is a JSON list of the figures,
milliseconds per request (per event for the drain).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# As in bench/webhooks.py: keep bench/ off the path, or bench/webhooks.py shadows the adapters.
sys.path[:] = [str(HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from bench.webhooks import mailgun_body, seed_register, sendgrid_batches, service_env  # noqa: E402
from gatekeeper import webhook_service, webhook_spooled  # noqa: E402
from gatekeeper.app import create_app  # noqa: E402
from gatekeeper.config import load_settings  # noqa: E402
from gatekeeper.db import Database  # noqa: E402
from gatekeeper.proof import journal  # noqa: E402
from gatekeeper.register import delivery_apply, delivery_plan, rawsql  # noqa: E402
from gatekeeper.spool import Spool, drain  # noqa: E402
from gatekeeper.webhook_views import SERVICE  # noqa: E402
from webhooks import InboundRequest  # noqa: E402
from webhooks.mailgun import MailgunAdapter  # noqa: E402
from webhooks.sendgrid import SendGridAdapter  # noqa: E402

# (owner, attribute, label): the label's leading spaces show the nesting.
PHASES: list[tuple[Any, str, str]] = [
    (webhook_service.WebhookService, "receive", "request"),
    (SendGridAdapter, "verify", "  verify"),
    (MailgunAdapter, "verify", "  verify"),
    (SendGridAdapter, "parse", "  parse"),
    (MailgunAdapter, "parse", "  parse"),
    (webhook_service, "spool_record", "  spool line (encode)"),
    (Spool, "append", "  spool append (os.write)"),
    (delivery_plan, "plan", "  plan (reads)"),
    (webhook_service, "writers_turn", "  write turn"),
    (webhook_spooled, "writers_turn", "  write turn"),
    (delivery_apply, "apply", "    apply"),
    (delivery_apply, "_store_raw_sqlite", "      raw events"),
    (delivery_apply, "insert_facts", "      register facts"),
    (delivery_apply, "upsert_suppressions", "      suppressions"),
    (journal, "write_sql", "      proof journal"),
    (delivery_apply, "_refresh_clocks", "      clocks"),
    (rawsql.Sql, "commit", "    commit"),
    (webhook_service.Connections, "written", "  WAL checkpoint"),
    (webhook_spooled, "readable", "  read spool lines"),
]


class Phases:
    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)

    def install(self) -> None:
        for owner, name, label in PHASES:
            setattr(owner, name, self._timed(getattr(owner, name), label))

    def _timed(self, fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        spent = self.spent
        if label.strip() == "write turn":  # a context manager: time the block it guards

            @contextmanager
            def turn(*args: Any, **kwargs: Any) -> Iterator[None]:
                began = time.process_time()
                with fn(*args, **kwargs):
                    yield
                spent[label] += time.process_time() - began

            return turn

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[label] += time.process_time() - began

        return timed

    @contextmanager
    def run(self, title: str, count: int, unit: str, figures: list[dict[str, Any]]) -> Iterator[None]:
        self.spent.clear()
        yield
        print(f"\n{title}: {count:,} {unit}s, ms of CPU per {unit}")
        seen = set()
        for _, _, label in PHASES:
            if label in seen or label not in self.spent:
                continue
            seen.add(label)
            value = self.spent[label] / count * 1000
            print(f"  {label:34s} {value:8.3f}")
            figures.append({"bench": "webhooks_phases", "run": title, "phase": label.strip(),
                            "value": round(value, 4), "unit": f"ms/{unit}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=150, help="500-event SendGrid batches")
    parser.add_argument("--singles", type=int, default=8_000, help="Mailgun single events")
    args = parser.parse_args()
    figures: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="gk-bench-phases-") as tmp:
        workdir = Path(tmp)
        key = ec.generate_private_key(ec.SECP256R1())
        env = service_env(workdir, key)
        register = seed_register(env["GATEKEEPER_DATABASE_URL"], args.contacts, workdir, env)
        settings = load_settings(environ=env)
        service = create_app(settings).extensions[SERVICE]
        handle = webhook_spooled.handler(settings, Database(settings.database_url))
        spool_dir = Path(settings.spool_dir)
        now = int(time.time())
        batches = [("sendgrid", _inbound("sendgrid", body, headers))
                   for body, headers in sendgrid_batches(register, args.batches + 20, key)]
        singles = [("mailgun", _inbound("mailgun", mailgun_body(register, n, now),
                                        {"Content-Type": "application/json"}))
                   for n in range(args.singles + 2_000)]
        for provider, request in batches[:20] + singles[:2_000]:  # warm: caches, prepared statements
            service.receive(provider, request)
        drain(spool_dir, webhook_spooled.STREAM, handle)
        phases = Phases()
        phases.install()
        with phases.run("batched (SendGrid, 500 events)", args.batches, "request", figures):
            for provider, request in batches[20:]:
                service.receive(provider, request)
        with phases.run("single (Mailgun)", args.singles, "request", figures):
            for provider, request in singles[2_000:]:
                service.receive(provider, request)
        began = time.process_time()
        with phases.run("drain of the singles' spool", args.singles, "event", figures):
            drain(spool_dir, webhook_spooled.STREAM, handle)
        whole = (time.process_time() - began) / args.singles * 1000
        print(f"  {'the whole pass':34s} {whole:8.3f}")
        figures.append({"bench": "webhooks_phases", "run": "drain of the singles' spool",
                        "phase": "the whole pass", "value": round(whole, 4), "unit": "ms/event"})
    print(json.dumps(figures))  # no baseline: not a target figure, so not emit()'s contract


def _inbound(provider: str, body: bytes, headers: dict[str, str]) -> InboundRequest:
    return InboundRequest("POST", f"http://127.0.0.1/webhooks/{provider}", headers, body)


if __name__ == "__main__":
    main()
