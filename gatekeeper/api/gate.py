"""The gate (API.md "The gate"): synchronous checks, campaigns with lists of any size."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

from flask import Response, current_app, jsonify, request, stream_with_context
from sqlalchemy.orm import Session

from gatekeeper import jobs
from gatekeeper.api import bp
from gatekeeper.api.auth import requires
from gatekeeper.api.helpers import as_of_param, json_body
from gatekeeper.csvio import detect_format, open_text, text_buffer
from gatekeeper.db import get_database, request_session
from gatekeeper.errors import MalformedError, TooLargeError, ValidationError
from gatekeeper.gate import runs
from gatekeeper.gate.campaigns import parse_campaign
from gatekeeper.gate.engine import decide_recipients
from gatekeeper.gate.recipients import parse_recipient
from gatekeeper.links import links_of, settle
from gatekeeper.models import Job, utcnow
from gatekeeper.register.context import RegisterContext
from gatekeeper.timeparse import isoformat


def _ctx() -> RegisterContext:
    ctx: RegisterContext = current_app.extensions["gatekeeper.context"]
    return ctx


@bp.post("/checks")
@requires("gate")
def checks() -> Response:
    body = json_body()
    as_of = as_of_param(body)
    campaign, _ = parse_campaign(body.get("campaign"), as_of)
    items = body.get("recipients")
    if not isinstance(items, list):
        raise MalformedError("the body must hold a list under 'recipients'")
    limit = current_app.extensions["gatekeeper.settings"].api_max_items
    if len(items) > limit:
        raise TooLargeError(f"at most {limit} recipients per check; upload a campaign list for more")
    recipients = [parse_recipient(i, item, campaign.channel, _ctx().region) for i, item in enumerate(items)]
    # Unsubscribes journaled while the database was busy are recorded before anything is read.
    settle(current_app.extensions["gatekeeper.settings"], get_database(current_app))
    ctx, session = _ctx(), request_session()
    campaign_id = _campaign_id(session, body.get("campaign_id"))
    _staged, decided = decide_recipients(session, ctx, campaign, as_of, recipients, with_retention=True)
    by_row = {d.row: d for d in decided}
    # A repeated recipient was decided once, at its first occurrence; it gets that verdict.
    first = {(r.kind, r.value): by_row[r.row] for r in reversed(recipients) if r.row in by_row}
    verdicts = [_verdict(items[r.row], by_row.get(r.row) or first[(r.kind, r.value)]) for r in recipients]
    if campaign_id is not None:
        _add_links(verdicts, campaign_id)
    unique = list(by_row.values())
    summary = runs.summarise(unique)
    run = runs.record_run(
        session,
        ctx,
        kind="check",
        as_of=as_of,
        summary={**summary, "recipients": len(items), "duplicates": len(items) - len(unique)},
        campaign_id=campaign_id,
    )
    runs.record_items(
        session,
        run.id,
        ((d.contact_id, d.verdict.decision, " ".join(d.verdict.reasons)) for d in unique if d.contact_id),
    )
    session.commit()
    return jsonify(
        {
            "policy": {"id": ctx.policy.id, "version": ctx.policy.version},
            "as_of": isoformat(as_of),
            "summary": {**summary, "duplicates": len(items) - len(unique)},
            "verdicts": verdicts,
        }
    )


def _campaign_id(session: Session, value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        detail = {"field": "campaign_id", "problem": "not an integer"}
        raise ValidationError("campaign_id must be an integer", [detail])
    runs.get_campaign(session, value)  # 404 when unknown
    return value


def _add_links(verdicts: list[dict[str, Any]], campaign_id: int) -> None:
    """API.md: allowed recipients known to the register get signed links and the RFC 8058
    headers, so a platform that sends itself can put them in the message."""
    signer = links_of(current_app)
    for v in verdicts:
        cid = v["contact_id"]
        if v["decision"] == "allow" and cid is not None:
            v["links"] = {
                "unsubscribe": signer.url("unsubscribe", signer.unsubscribe(cid, campaign_id)),
                "preferences": signer.url("preferences", signer.preferences(cid, campaign_id)),
            }
            v["headers"] = signer.list_unsubscribe_headers(cid, campaign_id)


def _verdict(sent: Any, d: Any) -> dict[str, Any]:
    v = d.verdict
    retention = None if d.contact_id is None else {"state": d.state, "deadline": isoformat(d.deadline)}
    return {
        "recipient": sent,
        "contact_id": d.contact_id,
        "decision": v.decision,
        "reasons": list(v.reasons),
        "basis": v.basis,
        "retention": retention,
    }


@bp.post("/campaigns")
@requires("gate")
def create_campaign() -> tuple[Response, int]:
    body = json_body()
    session = request_session()
    row = runs.create_campaign(session, body.get("campaign", body), utcnow())
    session.commit()
    return jsonify({"id": row.id}), 201


@bp.post("/campaigns/<int:campaign_id>/lists")
@requires("gate")
def upload_list(campaign_id: int) -> tuple[Response, int]:
    session = request_session()
    runs.get_campaign(session, campaign_id)
    as_of = as_of_param()
    upload = request.files.get("file")
    settings = current_app.extensions["gatekeeper.settings"]
    path, sha = jobs.save_upload(upload.stream if upload else request.stream, settings.max_body_bytes)
    if path.stat().st_size == 0:
        path.unlink()
        raise ValidationError("the upload is empty: send the CSV as the body or as a multipart 'file'")
    runner = jobs.runner(current_app)
    job = runner.submit(
        session,
        "campaign_list",
        {"campaign_id": campaign_id, "path": str(path), "as_of": isoformat(as_of)},
        sha,
    )
    session.commit()
    runner.start(job.id)
    return jsonify(jobs.job_view(job)), 202


@bp.get("/campaigns/<int:campaign_id>")
@requires("gate")
def get_campaign(campaign_id: int) -> Response:
    session = request_session()
    row = runs.get_campaign(session, campaign_id)
    job = session.query(Job).filter(Job.kind == "campaign_list").order_by(Job.id.desc()).all()
    mine = next((j for j in job if (j.params or {}).get("campaign_id") == campaign_id), None)
    return jsonify(
        {
            "id": row.id,
            "name": row.name,
            "campaign": {
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
            | {"send_at": isoformat(row.send_at)},
            "job": None if mine is None else jobs.job_view(mine),
            "run": runs.run_view(runs.latest_run(session, campaign_id)),
        }
    )


@bp.get("/campaigns/<int:campaign_id>/verdicts.csv")
@requires("gate")
def verdicts_csv(campaign_id: int) -> Response:
    decision = request.args.get("decision")
    if decision not in (None, "", "allow", "block"):
        raise ValidationError(
            "decision must be allow or block",
            [{"field": "decision", "problem": f"got {decision!r}"}],
        )
    path = runs.verdict_file(request_session(), campaign_id)
    body = stream_with_context(_stream(path, decision or None))
    return Response(
        body,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="campaign-{campaign_id}-verdicts.csv"'},
    )


def _stream(path: Any, decision: str | None) -> Iterator[str]:
    fmt = detect_format(path)
    with open_text(path, fmt) as fh:
        reader = csv.reader(fh, delimiter=fmt.delimiter)
        buf = text_buffer()
        writer = csv.writer(buf, delimiter=fmt.delimiter)
        header = next(reader)
        col = header.index("decision")
        writer.writerow(header)
        for i, row in enumerate(reader):
            if decision is None or row[col] == decision:
                writer.writerow(row)
            if i % 1000 == 0:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()
