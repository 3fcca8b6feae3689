"""Request parsing shared by the API views: JSON bodies, item limits, ``as_of``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from flask import current_app, request

from gatekeeper.errors import MalformedError, TooLargeError, ValidationError
from gatekeeper.models import utcnow
from gatekeeper.register.schema import Problems
from gatekeeper.timeparse import InstantError, parse_instant


def json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise MalformedError("the body must be a JSON object (Content-Type: application/json)")
    return body


def json_items(key: str) -> list[Any]:
    body = json_body()
    items = body.get(key)
    if not isinstance(items, list):
        raise MalformedError(f"the body must hold a list under {key!r}")
    limit = current_app.extensions["gatekeeper.settings"].api_max_items
    if len(items) > limit:
        raise TooLargeError(f"at most {limit} {key} per call; use the CSV import for more")
    bad = [i for i, item in enumerate(items) if not isinstance(item, dict)]
    if bad:
        raise ValidationError(
            f"each of {key} must be an object",
            [{"index": i, "field": None, "problem": "not an object"} for i in bad[:100]],
        )
    return items


def refuse_json_problems(problems: Problems, key: str) -> None:
    if problems:
        details = [{"index": p["row"], "field": p["field"], "problem": p["problem"]} for p in problems.items]
        raise ValidationError(f"{problems.total} invalid item(s) in {key}; nothing was stored", details)


@contextmanager
def indexed_errors() -> Iterator[None]:
    """Services number bulk items as rows; a JSON caller knows them by their index."""
    try:
        yield
    except ValidationError as exc:
        exc.details = [{("index" if k == "row" else k): v for k, v in d.items()} for d in exc.details]
        raise


def as_of_param(body: dict[str, Any] | None = None) -> datetime:
    raw = (body or {}).get("as_of") or request.args.get("as_of")
    if raw in (None, ""):
        return utcnow()
    try:
        return parse_instant(raw)
    except InstantError as exc:
        raise ValidationError(str(exc), [{"field": "as_of", "problem": str(exc)}]) from exc
