"""``POST /api/v1/links`` (API.md "The gate"): tracked URLs for a platform's own messages.

``{"campaign_id", "sent_at"?, "links": [{"contact": {...}, "url", "kind"}]}`` →
``{"campaign_id", "sent_at", "links": [{"index", "contact_id", "kind", "url", "tracked_url"}]}``.
All or nothing: any bad item is a 422 naming its index and field. Only absolute http(s) URLs
without credentials are signed; the token carries the URL, so the redirect never reads it from
the query string (no open redirect).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Response, current_app, jsonify
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.urls import iri_to_uri

from gatekeeper.api import bp
from gatekeeper.api.auth import requires
from gatekeeper.api.helpers import json_body, json_items, refuse_json_problems
from gatekeeper.db import request_session
from gatekeeper.errors import ValidationError
from gatekeeper.links import links_of
from gatekeeper.links.tokens import TRACKED, check_campaign_id
from gatekeeper.models import Contact, utcnow
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.events import contact_ref
from gatekeeper.register.schema import Problems, instant
from gatekeeper.timeparse import isoformat

MAX_URL_LENGTH = 2048
_CHUNK = 1000  # bound the IN lists


class UrlError(ValueError):
    pass


def checked_url(value: Any) -> str:
    """An absolute http(s) URL, as an ASCII URI (it goes into a Location header)."""
    if not isinstance(value, str) or not value.strip():
        raise UrlError("url is required")
    url = value.strip()
    if len(url) > MAX_URL_LENGTH:
        raise UrlError(f"url longer than {MAX_URL_LENGTH} characters")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        raise UrlError("url contains spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise UrlError("only absolute http:// or https:// URLs can be tracked")
    if "@" in parts.netloc:
        raise UrlError("url must not carry credentials")
    return iri_to_uri(url)


def _top_fields(body: dict[str, Any]) -> tuple[int | str | None, datetime]:
    try:
        campaign_id = check_campaign_id(body.get("campaign_id"))
    except ValueError as exc:
        raise ValidationError(str(exc), [{"field": "campaign_id", "problem": str(exc)}]) from exc
    if campaign_id is None:
        raise ValidationError("campaign_id is required", [{"field": "campaign_id", "problem": "is required"}])
    try:
        sent_at = instant(body.get("sent_at")) or utcnow()
    except ValueError as exc:
        raise ValidationError(str(exc), [{"field": "sent_at", "problem": str(exc)}]) from exc
    return campaign_id, sent_at


def _parse_item(
    raw: dict[str, Any], index: int, problems: Problems, region: str
) -> tuple[tuple[str, str], str, str] | None:
    ref = contact_ref(raw, index, problems, region)
    kind = raw.get("kind", "click")
    if kind not in TRACKED:
        problems.add(index, "kind", f"kind must be one of {', '.join(TRACKED)}")
    try:
        url = checked_url(raw.get("url"))
    except UrlError as exc:
        problems.add(index, "url", str(exc))
        return None
    return (ref, url, str(kind)) if ref is not None and kind in TRACKED else None


def resolve_contacts(session: Session, refs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Contacts named by external_id, e-mail or phone, set-based; erased ones are not found."""
    wanted: dict[str, set[str]] = {}
    for kind, value in refs:
        wanted.setdefault(kind, set()).add(value)
    found: dict[tuple[str, str], int] = {}
    for kind, values in wanted.items():
        column = getattr(Contact, kind)
        ordered = sorted(values)
        for start in range(0, len(ordered), _CHUNK):
            rows = session.execute(
                select(Contact.id, column).where(
                    column.in_(ordered[start : start + _CHUNK]), Contact.anonymised_at.is_(None)
                )
            )
            found.update({(kind, value): cid for cid, value in rows})
    return found


@bp.post("/links")
@requires("gate")
def tracked_links_view() -> tuple[Response, int]:
    campaign_id, sent_at = _top_fields(json_body())
    items = json_items("links")
    ctx: RegisterContext = current_app.extensions["gatekeeper.context"]
    problems = Problems()
    parsed = {i: p for i, raw in enumerate(items) if (p := _parse_item(raw, i, problems, ctx.region))}
    ids = resolve_contacts(request_session(), (ref for ref, _url, _kind in parsed.values()))
    for index, (ref, _url, _kind) in parsed.items():
        if ref not in ids:
            problems.add(index, "contact", f"no contact in the register with this {ref[0]}")
    refuse_json_problems(problems, "links")
    signer = links_of(current_app)
    out = []
    for index, (ref, url, kind) in sorted(parsed.items()):
        token = signer.tracked(kind, ids[ref], campaign_id, url, sent_at)
        out.append(
            {
                "index": index,
                "contact_id": ids[ref],
                "kind": kind,
                "url": url,
                "tracked_url": signer.url(kind, token),
            }
        )
    return jsonify({"campaign_id": campaign_id, "sent_at": isoformat(sent_at), "links": out}), 200
