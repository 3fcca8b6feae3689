"""Campaigns and verdict runs: stored so every decision can be traced to the policy version
that made it (RULES.md §6)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gatekeeper.config import VAR_DIR
from gatekeeper.db import when_writable
from gatekeeper.domain import Campaign
from gatekeeper.errors import NotFoundError, ValidationError
from gatekeeper.gate.campaigns import parse_campaign
from gatekeeper.gate.engine import Decided
from gatekeeper.gate.lists import Item, LinkMinter, decide_list
from gatekeeper.links.tokens import LinkSigner
from gatekeeper.models import CampaignRow, VerdictRun
from gatekeeper.proof import journal
from gatekeeper.register.context import RegisterContext
from gatekeeper.sqlbulk import load_rows
from gatekeeper.timeparse import isoformat

VERDICTS_DIR = VAR_DIR / "verdicts"


def campaign_from_row(row: CampaignRow, default_send_at: datetime) -> Campaign:
    values = {
        k: getattr(row, k)
        for k in (
            "channel",
            "purpose",
            "sender",
            "sender_nonprofit",
            "product_category",
            "topic_tags",
            "professional_relevance",
            "partner",
            "sector",
        )
    }
    values["send_at"] = row.send_at or default_send_at
    campaign, _ = parse_campaign(values, default_send_at)
    return campaign


def create_campaign(session: Session, raw: Any, now: datetime) -> CampaignRow:
    _campaign, values = parse_campaign(raw, now)
    explicit_send_at = raw.get("send_at") if isinstance(raw, dict) else None
    row = CampaignRow(
        name=values["name"],
        channel=values["channel"],
        purpose=values["purpose"],
        sender=values["sender"],
        sender_nonprofit=bool(values["sender_nonprofit"]),
        product_category=values["product_category"],
        topic_tags=values["topic_tags"] or [],
        professional_relevance=bool(values["professional_relevance"]),
        partner=values["partner"],
        sector=values["sector"],
        send_at=values["send_at"] if explicit_send_at else None,
    )
    session.add(row)
    session.flush()
    return row


def get_campaign(session: Session, campaign_id: int) -> CampaignRow:
    row = session.get(CampaignRow, campaign_id)
    if row is None:
        raise NotFoundError(f"no campaign {campaign_id}")
    return row


def summarise(decided: Iterable[Decided]) -> dict[str, Any]:
    by_reason: Counter[str] = Counter()
    allowed = blocked = 0
    for d in decided:
        by_reason[d.verdict.reasons[0]] += 1
        allowed += d.verdict.decision == "allow"
        blocked += d.verdict.decision == "block"
    return {"allowed": allowed, "blocked": blocked, "by_reason": dict(by_reason.most_common())}


def record_run(
    session: Session,
    ctx: RegisterContext,
    *,
    kind: str,
    as_of: datetime,
    summary: dict[str, Any],
    campaign_id: int | None = None,
    output: Path | None = None,
    job_id: int | None = None,
) -> VerdictRun:
    run = VerdictRun(
        campaign_id=campaign_id,
        kind=kind,
        as_of=as_of,
        policy_id=ctx.policy.id,
        policy_version=ctx.policy.version,
        recipients=summary.get("recipients", summary["allowed"] + summary["blocked"]),
        allowed=summary["allowed"],
        blocked=summary["blocked"],
        duplicates=summary.get("duplicates", 0),
        by_reason=summary["by_reason"],
        output_path=None if output is None else str(output),
        job_id=job_id,
    )
    session.add(run)
    session.flush()
    journal.record_run(session, ctx.hasher, run)  # every verdict batch is proven (RULES.md §6)
    return run


def list_links(signer: LinkSigner, campaign_id: int | None) -> LinkMinter:
    """Signed unsubscribe and preference-centre URLs for an allowed row (ids only inside)."""

    def mint(contact_id: int | None) -> tuple[str, str]:
        assert contact_id is not None
        return (
            signer.url("unsubscribe", signer.unsubscribe(contact_id, campaign_id)),
            signer.url("preferences", signer.preferences(contact_id, campaign_id)),
        )

    return mint


ITEM_COLUMNS = [("run_id", "int"), ("contact_id", "int"), ("decision", "text"), ("reasons", "text")]


def record_items(session: Session, run_id: int, items: Iterable[Item]) -> int:
    """The verdict each known contact got in this run (executemany on SQLite, COPY on
    PostgreSQL): the evidence pack shows a person every decision made about them."""
    return load_rows(session, "verdict_items", ITEM_COLUMNS, ((run_id, *item) for item in items))


def run_list(
    session: Session,
    ctx: RegisterContext,
    campaign_id: int,
    as_of: datetime,
    in_path: Path,
    progress: Any,
    job_id: int | None = None,
    links: LinkSigner | None = None,
    record: Callable[[], AbstractContextManager[Session]] | None = None,
) -> dict[str, Any]:
    """Decide a campaign's list in ``session`` and record the run. ``record``: a writing session
    of its own for the run, so ``session`` may be read-only (``job_kind(reads_first=True)``)
    and the decision never holds SQLite's write lock."""
    row = get_campaign(session, campaign_id)
    campaign = campaign_from_row(row, as_of)
    VERDICTS_DIR.mkdir(parents=True, exist_ok=True)
    out = VERDICTS_DIR / f"campaign-{campaign_id}-job-{job_id or 'cli'}.csv"
    minter = None if links is None else list_links(links, campaign_id)
    items: list[Item] = []
    # The job's session has only read so far (the campaign): other connections see the same.
    summary = decide_list(
        session, ctx, campaign, as_of, in_path, out, progress, minter, items, unwritten=True
    )
    if record is None:
        run = _record_list_run(session, ctx, as_of, summary, campaign_id, out, job_id, items)
    else:
        session.rollback()  # the decision's read transaction: nothing in it to keep

        def write_run() -> VerdictRun:
            with record() as writer:
                return _record_list_run(writer, ctx, as_of, summary, campaign_id, out, job_id, items)

        # In the background, a decided list waits for a busy database rather than being lost.
        run = when_writable(write_run)
    return {**summary, "run_id": run.id, "policy": {"id": run.policy_id, "version": run.policy_version}}


def _record_list_run(
    session: Session,
    ctx: RegisterContext,
    as_of: datetime,
    summary: dict[str, Any],
    campaign_id: int,
    out: Path,
    job_id: int | None,
    items: list[Item],
) -> VerdictRun:
    run = record_run(
        session,
        ctx,
        kind="list",
        as_of=as_of,
        summary=summary,
        campaign_id=campaign_id,
        output=out,
        job_id=job_id,
    )
    record_items(session, run.id, items)
    return run


def latest_run(session: Session, campaign_id: int) -> VerdictRun | None:
    return session.scalars(
        select(VerdictRun)
        .where(VerdictRun.campaign_id == campaign_id, VerdictRun.kind == "list")
        .order_by(VerdictRun.id.desc())
        .limit(1)
    ).first()


def run_view(run: VerdictRun | None) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "id": run.id,
        "as_of": isoformat(run.as_of),
        "policy": {"id": run.policy_id, "version": run.policy_version},
        "summary": {
            "recipients": run.recipients,
            "allowed": run.allowed,
            "blocked": run.blocked,
            "duplicates": run.duplicates,
            "by_reason": run.by_reason or {},
        },
    }


def verdict_file(session: Session, campaign_id: int) -> Path:
    run = latest_run(session, campaign_id)
    if run is None or not run.output_path or not Path(run.output_path).exists():
        raise ValidationError(
            "no verdicts yet for this campaign: upload a list and wait for its job to finish"
        )
    return Path(run.output_path)
