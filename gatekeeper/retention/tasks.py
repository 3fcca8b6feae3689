"""The scheduled tasks, as plain functions of (session, as_of, env), each doing one batch.

Theory of operation
-------------------
A task function does at most one batch of work in the caller's transaction and says whether
more is left; ``run_task`` calls it in fresh transactions until nothing is left, so no
transaction touches more than a few thousand rows (PERFORMANCE.md) and a crash loses at most
one batch, which the next run redoes. Every task finds its work through an indexed date
(``reconsent_at``, ``deadline``, ``refused_at``, the outbox's ``next_attempt_at``), so a run
costs in proportion to the contacts due, not to the register. Each is idempotent for a day:
planning twice queues nothing new, purging twice finds nobody left, the sender only takes
queued messages.

* ``plan_reconsent``: contacts whose ``deadline - lead`` has come get one reconsent message;
  those within the reminder days whose first message left a day ago or more get one reminder.
* ``send_outbox``: drains the outbox (outbox.py).
* ``purge_expired``: anonymises contacts past their deadline or who refused (purge.py), and
  drops archived records past their own deadline.
"""

from __future__ import annotations

import email.utils
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from gatekeeper.config import Settings
from gatekeeper.db import Database
from gatekeeper.links.i18n import date_in_words
from gatekeeper.links.tokens import LinkSigner, signer_secrets, utc_clock
from gatekeeper.links.unsubscribes import settle
from gatekeeper.proof import journal
from gatekeeper.register.context import RegisterContext, context_from
from gatekeeper.retention import outbox
from gatekeeper.retention.archive import ArchiveStore
from gatekeeper.retention.messages import (
    DkimKey,
    Envelope,
    Renderer,
    build_message,
    dkim_from_environ,
    to_bytes,
)
from gatekeeper.retention.purge import anonymise_contacts
from gatekeeper.retention.transports import (
    PermanentSendError,
    TemporarySendError,
    Transport,
    transport_from_url,
)
from gatekeeper.sqlbulk import dialect_of, read_ts, ts_value
from gatekeeper.timeparse import isoformat
from gatekeeper.webhook_spooled import settle_interest

PLAN_BATCH = 2000
PURGE_BATCH = 500  # a contact's events are rewritten too: stays under ~5k rows a transaction
SEND_BATCH = 50  # short transactions: the claimed rows stay locked while they are sent
TASK_RUNS_KEPT = timedelta(days=31)
MESSAGE_KINDS = ("reconsent", "reconsent_reminder")


@dataclass
class TaskEnv:
    """What the tasks need besides a session, built once per process."""

    settings: Settings
    ctx: RegisterContext
    signer: LinkSigner
    transport: Transport
    renderer: Renderer
    dkim: DkimKey | None
    archive: ArchiveStore | None
    limiter: outbox.SendRateLimiter


def build_env(
    settings: Settings,
    *,
    transport: Transport | None = None,
    signer: LinkSigner | None = None,
    send_rate: float | None = None,
) -> TaskEnv:
    """``send_rate`` (messages a second, 0 = unlimited) defaults to GATEKEEPER_SEND_RATE or 10."""
    rate = float(os.environ.get("GATEKEEPER_SEND_RATE", "10")) if send_rate is None else send_rate
    secrets = signer_secrets(settings.secret_key, settings.old_secret_keys)
    return TaskEnv(
        settings=settings,
        ctx=context_from(settings),
        signer=signer or LinkSigner(secrets, settings.public_base_url, utc_clock),
        transport=transport or transport_from_url(settings.smtp_url),
        renderer=Renderer(),
        dkim=dkim_from_environ(),
        archive=ArchiveStore(settings.archive_database_url),
        limiter=outbox.SendRateLimiter(rate),
    )


@dataclass(frozen=True, slots=True)
class Batch:
    counts: dict[str, int]
    more: bool


# --- plan_reconsent --------------------------------------------------------------------------


def plan_reconsent(session: Session, as_of: datetime, env: TaskEnv, limit: int = PLAN_BATCH) -> Batch:
    policy = env.ctx.policy
    days = {"lead_days": policy.reconsent_lead_days, "reminder_days": policy.reconsent_reminder_days}
    counts, left = {}, limit
    for kind in MESSAGE_KINDS:
        counts[kind] = outbox.queue_due(session, kind, as_of, limit=left, **days) if left else 0
        left -= counts[kind]
    return Batch(counts, more=left == 0)


def plan_reconsent_dry(session: Session, as_of: datetime, env: TaskEnv) -> dict[str, Any]:
    policy = env.ctx.policy
    days = {"lead_days": policy.reconsent_lead_days, "reminder_days": policy.reconsent_reminder_days}
    return {"would_queue": {k: outbox.count_due(session, k, as_of, **days) for k in MESSAGE_KINDS}}


# --- send_outbox -----------------------------------------------------------------------------

_RECIPIENTS = (
    "SELECT c.id, c.email, c.first_name, c.deadline, c.timezone, c.clock"
    " FROM contacts c WHERE c.id IN ({ids}) AND {lawful}"
)


def send_outbox(session: Session, as_of: datetime, env: TaskEnv, limit: int = SEND_BATCH) -> Batch:
    claimed = outbox.claim(session, as_of, limit)
    if not claimed:
        return Batch({}, more=False)
    ids = ", ".join(str(int(c.contact_id)) for c in claimed)
    people = {
        r["id"]: r
        for r in session.execute(text(_RECIPIENTS.format(ids=ids, lawful=outbox.LAWFUL_EMAIL))).mappings()
    }
    counts: Counter[str] = Counter()
    for row in claimed:
        counts[_send_one(session, row, people.get(row.contact_id), as_of, env)] += 1
    return Batch(dict(counts), more=len(claimed) == limit)


def _send_one(session: Session, row: outbox.Claimed, person: Any, as_of: datetime, env: TaskEnv) -> str:
    if person is None:  # erased, objected or refused since the message was planned
        outbox.mark_cancelled(session, row, "no lawful channel any more")
        return "cancelled"
    deadline = None if person["deadline"] is None else read_ts(person["deadline"])
    if deadline != row.cycle or deadline <= as_of:  # the clock restarted, or it is too late
        outbox.mark_cancelled(session, row, "the deadline this message was about has changed")
        return "cancelled"
    message = _message(row, person, deadline, as_of, env)
    env.limiter.wait()
    try:
        env.transport.send(message, to_bytes(message, env.dkim))
    except TemporarySendError as exc:
        return (
            "retry"
            if outbox.mark_failed(session, row, str(exc), as_of, permanent=False) == "queued"
            else "failed"
        )
    except PermanentSendError as exc:
        outbox.mark_failed(session, row, str(exc), as_of, permanent=True)
        return "failed"
    outbox.mark_sent(session, row, str(message["Message-ID"]), as_of)
    # RULES.md §6: the reconsent request is part of the story an inspector reads (references only).
    journal.record_other(
        session,
        env.ctx.hasher,
        f"{row.kind}_sent",
        f"contact:{row.contact_id}",
        {"outbox": row.id, "kind": row.kind, "cycle": isoformat(row.cycle)},
        now=as_of,
    )
    return "sent"


def _message(row: outbox.Claimed, person: Any, deadline: datetime, as_of: datetime, env: TaskEnv) -> Any:
    settings, signer, cid = env.settings, env.signer, row.contact_id
    address = email.utils.parseaddr(settings.mail_from)[1]
    policy = env.ctx.policy
    years = policy.client_retention_years if person["clock"] == "client" else policy.prospect_retention_years
    values = {
        "sender": settings.sender_entity,
        "sender_address": address,
        "first_name": person["first_name"],
        "years": years,
        "reminder": row.kind != "reconsent",
        "deadline_fr": date_in_words(deadline, "fr", person["timezone"]),
        "deadline_en": date_in_words(deadline, "en", person["timezone"]),
        "keep_url": signer.url("reconsent", signer.reconsent(cid, deadline)),
        "unsubscribe_url": signer.url("unsubscribe", signer.unsubscribe(cid)),
    }
    headers = signer.list_unsubscribe_headers(cid, None, f"{address}?subject=unsubscribe")
    envelope = Envelope(settings.mail_from, person["email"], headers)
    return build_message(envelope, env.renderer.render(row.kind, values), as_of)


def send_outbox_dry(session: Session, as_of: datetime, env: TaskEnv) -> dict[str, Any]:
    del env
    ready = session.execute(
        text("SELECT COUNT(*) FROM outbox WHERE state = 'queued' AND next_attempt_at <= :now"),
        {"now": ts_value(dialect_of(session), as_of)},
    ).scalar_one()
    return {"would_send": int(ready)}


# --- purge_expired ---------------------------------------------------------------------------

_EXPIRED = (
    "SELECT id FROM contacts WHERE deadline <= :as_of AND anonymised_at IS NULL"
    " ORDER BY deadline, id LIMIT :limit"
)
# Ordered by refused_at so both databases walk ix_contacts_refused_at and stop at the limit:
# ordered by id, SQLite scanned the whole register in id order on every batch (0.22 s a batch
# at 1M contacts with nobody refused: two thirds of the daily pass).
_REFUSED = (
    "SELECT id FROM contacts WHERE refused_at IS NOT NULL AND anonymised_at IS NULL"
    " ORDER BY refused_at, id LIMIT :limit"
)


def purge_expired(session: Session, as_of: datetime, env: TaskEnv, limit: int = PURGE_BATCH) -> Batch:
    params = {"as_of": ts_value(dialect_of(session), as_of), "limit": limit}
    counts, left = {}, limit
    for reason, sql in (("refused", _REFUSED), ("expired", _EXPIRED)):
        ids = [r[0] for r in session.execute(text(sql), params | {"limit": left})] if left else []
        counts[reason] = anonymise_contacts(
            session, ids, env.ctx, reason=reason, archive=env.archive, now=as_of
        )
        left -= len(ids)
    more = left == 0
    if not more:
        counts["task_runs_pruned"] = _prune_task_runs(session, as_of)
        if env.archive is not None:
            counts["archive_purged"] = env.archive.purge(as_of)
    return Batch(counts, more)


def _prune_task_runs(session: Session, as_of: datetime) -> int:
    # The sender claims a slot a minute: keep a month of the guard's history, no more.
    old = ts_value(dialect_of(session), as_of - TASK_RUNS_KEPT)
    result = session.execute(text("DELETE FROM task_runs WHERE started_at < :old"), {"old": old})
    return int(result.rowcount)  # type: ignore[attr-defined]


def purge_expired_dry(session: Session, as_of: datetime, env: TaskEnv) -> dict[str, Any]:
    del env
    at = {"as_of": ts_value(dialect_of(session), as_of)}
    due = "FROM contacts WHERE anonymised_at IS NULL AND (deadline <= :as_of OR refused_at IS NOT NULL)"
    contacts = session.execute(text(f"SELECT COUNT(*) {due}"), at).scalar_one()
    invoices = session.execute(
        text(
            "SELECT COUNT(*) FROM events WHERE type = 'purchase'"  # noqa: S608
            f" AND contact_id IN (SELECT id {due})"
        ),
        at,
    ).scalar_one()
    return {"would_anonymise": int(contacts), "would_archive_invoices": int(invoices)}


# --- journal_catch_up ------------------------------------------------------------------------

CATCH_UP_BATCH = 2_000


def journal_catch_up(session: Session, as_of: datetime, env: TaskEnv, limit: int = CATCH_UP_BATCH) -> Batch:
    """Journal facts written outside a request's transaction (tracked clicks served by the
    links' fast path) so every fact has its entry within minutes (RULES.md §6)."""
    del as_of
    events = journal.record_pending_events(session, env.ctx.hasher, limit=limit)
    anonymised = journal.record_pending_anonymisations(session, env.ctx.hasher, limit=limit)
    return Batch({"events": events, "anonymised": anonymised}, more=max(events, anonymised) >= limit)


def journal_catch_up_dry(session: Session, as_of: datetime, env: TaskEnv) -> dict[str, Any]:
    del as_of, env
    pending = session.execute(
        text(
            "SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM journal j"
            " WHERE j.fact_table = 'event' AND j.fact_id = e.id)"
        )
    ).scalar_one()
    return {"would_journal_events": int(pending)}


# --- running ---------------------------------------------------------------------------------

TaskFn = Callable[[Session, datetime, TaskEnv], Batch]
DryFn = Callable[[Session, datetime, TaskEnv], dict[str, Any]]
TASKS: dict[str, tuple[TaskFn, DryFn]] = {
    "plan_reconsent": (plan_reconsent, plan_reconsent_dry),
    "send_outbox": (send_outbox, send_outbox_dry),
    "purge_expired": (purge_expired, purge_expired_dry),
    "journal_catch_up": (journal_catch_up, journal_catch_up_dry),
}


# The tasks that choose whom to write to: an unsubscribe journaled while the database was busy
# (``links.unsubscribes``) is recorded first, so nobody who just unsubscribed gets a message.
SETTLE_FIRST = ("plan_reconsent", "send_outbox")
# The tasks that read the retention clocks: the clicks the webhooks journaled or queued for the
# drainer (``webhook_spooled.settle_interest``) move them first, so nobody who just clicked is
# asked again or anonymised.
INTEREST_FIRST = ("plan_reconsent", "purge_expired")


def run_task(
    database: Database, env: TaskEnv, name: str, as_of: datetime, *, dry_run: bool = False
) -> dict[str, Any]:
    """Run a task to the end, one transaction per batch; returns what it did (or would do)."""
    task, dry = TASKS[name]
    head: dict[str, Any] = {"task": name, "as_of": isoformat(as_of), "dry_run": dry_run}
    if dry_run:
        with database.session_scope() as session:
            return head | dry(session, as_of, env)
    if name in SETTLE_FIRST:
        settle(env.settings, database)
    if name in INTEREST_FIRST:
        settle_interest(env.settings, database)
    totals: Counter[str] = Counter()
    batches = 0
    while True:
        with database.session_scope() as session:
            batch = task(session, as_of, env)
        batches += 1
        totals.update(batch.counts)
        if not batch.more:
            return head | {"batches": batches, "done": dict(totals)}
