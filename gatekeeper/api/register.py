"""Register endpoints (API.md "Register"): contacts, events, suppressions, imports, jobs."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify, request
from sqlalchemy.orm import Session

from gatekeeper import jobs
from gatekeeper.api import bp
from gatekeeper.api.auth import requires
from gatekeeper.api.helpers import (
    as_of_param,
    indexed_errors,
    json_items,
    refuse_json_problems,
)
from gatekeeper.db import request_session
from gatekeeper.errors import NotFoundError, ValidationError
from gatekeeper.models import Job, utcnow
from gatekeeper.register.contacts import parse_contact, upsert_contacts
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.events import append_events, parse_event
from gatekeeper.register.imports import KINDS
from gatekeeper.register.schema import Problems, instant
from gatekeeper.register.suppressions import (
    add_suppressions,
    parse_bloctel,
    parse_suppression,
    record_bloctel_check,
)
from gatekeeper.register.views import contact_view


def _ctx() -> RegisterContext:
    ctx: RegisterContext = current_app.extensions["gatekeeper.context"]
    return ctx


@bp.post("/contacts")
@requires("register:write")
def upsert_contacts_view() -> tuple[Response, int]:
    items = json_items("contacts")
    ctx, problems = _ctx(), Problems()
    records = [r for i, raw in enumerate(items) if (r := parse_contact(raw, i, problems, ctx.region))]
    refuse_json_problems(problems, "contacts")
    session = request_session()
    with indexed_errors():
        result = upsert_contacts(session, records, ctx)
    session.commit()
    contacts = [{"id": cid, "external_id": ext} for _row, (cid, ext) in sorted(result.ids.items())]
    body = {
        "created": result.created,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "contacts": contacts,
    }
    return jsonify(body), 200


@bp.post("/events")
@requires("register:write")
def append_events_view() -> tuple[Response, int]:
    items = json_items("events")
    ctx, problems, now = _ctx(), Problems(), utcnow()
    records = [r for i, raw in enumerate(items) if (r := parse_event(raw, i, problems, ctx.region, now))]
    refuse_json_problems(problems, "events")
    session = request_session()
    with indexed_errors():
        result = append_events(session, records, ctx, origin="api")
    session.commit()
    return jsonify({"stored": result.stored, "duplicates": result.duplicates}), 200


@bp.post("/suppressions")
@requires("register:write")
def add_suppressions_view() -> tuple[Response, int]:
    items = json_items("entries")
    ctx, problems, now = _ctx(), Problems(), utcnow()
    entries = [e for i, raw in enumerate(items) for e in parse_suppression(raw, i, problems, ctx.region, now)]
    refuse_json_problems(problems, "entries")
    session = request_session()
    stored = add_suppressions(session, entries, ctx.hasher, origin="api")
    session.commit()
    return jsonify({"stored": stored}), 200


@bp.post("/suppressions/bloctel")
@requires("register:write")
def bloctel_view() -> tuple[Response, int]:
    raw_at = request.args.get("checked_at") or request.form.get("checked_at")
    try:
        checked_at = instant(raw_at)
    except ValueError as exc:
        raise ValidationError(str(exc), [{"field": "checked_at", "problem": str(exc)}]) from exc
    if checked_at is None:
        raise ValidationError(
            "checked_at is required (when the list was scrubbed against Bloctel)",
            [{"field": "checked_at", "problem": "is required"}],
        )
    upload = request.files.get("file")
    data = upload.read() if upload else request.get_data()
    ctx = _ctx()
    entries, problems = parse_bloctel(data.decode("utf-8-sig", errors="replace"), ctx.region, checked_at)
    if problems:
        raise ValidationError(
            f"{problems.total} invalid line(s) in the Bloctel file; nothing was stored",
            [{"line": p["row"], "field": p["field"], "problem": p["problem"]} for p in problems.items],
        )
    session = request_session()
    stored = add_suppressions(session, entries, ctx.hasher, origin="bloctel")
    record_bloctel_check(session, checked_at, stored)
    session.commit()
    return jsonify({"stored": stored, "checked_at": raw_at}), 200


@bp.post("/imports")
@requires("register:write")
def create_import() -> tuple[Response, int]:
    kind = request.args.get("kind", "")
    if kind not in KINDS:
        raise ValidationError(
            f"query parameter kind must be one of {', '.join(KINDS)}",
            [{"field": "kind", "problem": f"got {kind!r}"}],
        )
    upload = request.files.get("file")
    stream = upload.stream if upload else request.stream
    settings = current_app.extensions["gatekeeper.settings"]
    path, sha = jobs.save_upload(stream, settings.max_body_bytes)
    if path.stat().st_size == 0:
        path.unlink()
        raise ValidationError("the upload is empty: send the CSV as the body or as a multipart 'file'")
    session = request_session()
    runner = jobs.runner(current_app)
    job = runner.submit(session, "import", {"kind": kind, "path": str(path)}, sha)
    session.commit()
    runner.start(job.id)
    return jsonify(jobs.job_view(job)), 202


@bp.get("/jobs/<int:job_id>")
@requires("register:read")
def get_job(job_id: int) -> Response:
    job = request_session().get(Job, job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id}")
    return jsonify(jobs.job_view(job))


@bp.get("/contacts/<int:contact_id>")
@requires("register:read")
def get_contact(contact_id: int) -> Response:
    session: Session = request_session()
    view: dict[str, Any] = contact_view(session, _ctx(), contact_id, as_of_param())
    return jsonify(view)
