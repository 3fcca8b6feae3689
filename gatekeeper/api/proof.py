"""Proof and rights endpoints (API.md: evidence, export, erase; issue 7): the evidence pack, the
person's rights, the journal check and the auditor's reads of the legal archive."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, g, jsonify, render_template, request

from gatekeeper.api import bp
from gatekeeper.api.auth import requires
from gatekeeper.api.helpers import as_of_param, json_body
from gatekeeper.config import Settings
from gatekeeper.db import get_database, request_session
from gatekeeper.errors import ValidationError
from gatekeeper.models import utcnow
from gatekeeper.proof import journal, rights
from gatekeeper.proof.evidence import evidence_pack
from gatekeeper.proof.verify import verify
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.schema import CHANNELS
from gatekeeper.retention.archive import ArchiveStore
from gatekeeper.timeparse import isoformat


def _ctx() -> RegisterContext:
    ctx: RegisterContext = current_app.extensions["gatekeeper.context"]
    return ctx


def _archive() -> ArchiveStore:
    # Opened per call: erasures and audits are rare, and the archive is not the register.
    settings: Settings = current_app.extensions["gatekeeper.settings"]
    return ArchiveStore(settings.archive_database_url)


@bp.get("/contacts/<int:contact_id>/evidence")
@requires("register:read")
def evidence_view(contact_id: int) -> Response | str:
    pack = evidence_pack(request_session(), _ctx(), contact_id, as_of_param())
    if request.args.get("format") == "html":
        return render_template("proof/evidence.html", pack=pack)
    return jsonify(pack)


@bp.get("/contacts/<int:contact_id>/export")
@requires("register:read")
def export_view(contact_id: int) -> Response:
    # A GET that writes (the export itself is journaled): a session of its own that may write,
    # not the request's read-only one, so on SQLite it takes the write lock before reading and
    # never fails on a snapshot another writer made stale.
    with get_database(current_app).session_scope() as session:
        data = rights.access_export(session, _ctx(), contact_id, utcnow())
    return Response(
        data,
        mimetype="application/zip",
        headers={"Content-Disposition": f'attachment; filename="contact-{contact_id}.zip"'},
    )


@bp.post("/contacts/<int:contact_id>/erase")
@requires("register:write")
def erase_view(contact_id: int) -> tuple[Response, int]:
    session, archive = request_session(), _archive()
    try:
        result = rights.erase(session, _ctx(), contact_id, utcnow(), archive=archive)
        session.commit()
    finally:
        archive.dispose()
    return jsonify(result), 200


@bp.post("/contacts/<int:contact_id>/objection")
@requires("register:write")
def objection_view(contact_id: int) -> tuple[Response, int]:
    body = request.get_json(silent=True) or {}
    chans = body.get("channels") if isinstance(body, dict) else None
    if chans not in (None, "all") and not (isinstance(chans, list) and set(chans) <= set(CHANNELS)):
        raise ValidationError(
            'channels: a list of channels or "all"',
            [{"field": "channels", "problem": f"expected some of {', '.join(CHANNELS)}"}],
        )
    session = request_session()
    rights.object_to(
        session,
        _ctx(),
        contact_id,
        utcnow(),
        channels=None if chans == "all" else chans,
        via=str(body.get("via") or "form"),
    )
    session.commit()
    return jsonify({"id": contact_id, "channels": chans or "all"}), 200


@bp.patch("/contacts/<int:contact_id>")
@requires("register:write")
def rectify_view(contact_id: int) -> tuple[Response, int]:
    session = request_session()
    fields = rights.rectify(session, _ctx(), contact_id, json_body(), utcnow())
    session.commit()
    return jsonify({"id": contact_id, "rectified": fields}), 200


@bp.get("/audit/verify")
@requires("audit")
def verify_view() -> tuple[Response, int]:
    report = verify(request_session(), _ctx().hasher, anchor=request.args.get("anchor"))
    return jsonify(report.as_dict()), 200


@bp.get("/archive/records")
@requires("audit")
def archive_read_view() -> tuple[Response, int]:
    """Only an auditor key reads the archive; the read is logged there and journaled here."""
    purpose = (request.args.get("purpose") or "").strip()
    if not purpose:
        raise ValidationError(
            "say why the archive is read: ?purpose=...", [{"field": "purpose", "problem": "is required"}]
        )
    kind, archive, session, now = request.args.get("kind"), _archive(), request_session(), utcnow()
    try:
        found = archive.read(f"api-key:{g.api_key_id}", purpose, kind=kind)
    finally:
        archive.dispose()
    journal.record_other(
        session,
        _ctx().hasher,
        "archive_read",
        f"api-key:{g.api_key_id}",
        {"purpose": purpose, "kind": kind, "records": [r["source_ref"] for r in found], "at": now},
        now=now,
    )
    session.commit()
    return jsonify({"records": [_archived(r) for r in found]}), 200


def _archived(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": row["kind"],
        "source_ref": row["source_ref"],
        "occurred_at": isoformat(row["occurred_at"]),
        "keep_until": isoformat(row["keep_until"]),
        "archived_at": isoformat(row["archived_at"]),
        "data": row["data"],
    }
