"""Bearer API keys: created by the CLI, stored as keyed hashes, scoped."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, g, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from gatekeeper.api import bp
from gatekeeper.db import get_database
from gatekeeper.errors import AuthError, ForbiddenError
from gatekeeper.models import ApiKey
from gatekeeper.security import KeyedHasher, new_api_key

SCOPES = ("register:read", "register:write", "gate", "tasks", "audit")
# The auditor scope reads the legal archive: never granted unless asked for.
DEFAULT_SCOPES = tuple(s for s in SCOPES if s != "audit")
PUBLIC_ENDPOINTS = frozenset({"api.openapi_document"})

F = TypeVar("F", bound=Callable[..., Any])


def create_api_key(session: Session, hasher: KeyedHasher, name: str, scopes: tuple[str, ...]) -> str:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    key = new_api_key()
    session.add(ApiKey(name=name, prefix=key[:10], key_hash=hasher.api_key(key), scopes=" ".join(scopes)))
    return key


@bp.before_request
def _authenticate() -> None:
    if request.endpoint in PUBLIC_ENDPOINTS:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthError("an API key is required: Authorization: Bearer <key>")
    hasher: KeyedHasher = current_app.extensions["gatekeeper.context"].hasher
    # A read of its own, not the request's session: on SQLite a writing request's session
    # holds the write lock from its first statement, and the key check comes before the view
    # knows whether it will write, or hand work to a session of its own (a task run).
    with get_database(current_app).session_scope(read_only=True) as session:
        row = session.execute(
            select(ApiKey.id, ApiKey.scopes).where(
                ApiKey.key_hash == hasher.api_key(key.strip()), ApiKey.revoked_at.is_(None)
            )
        ).first()
    if row is None:
        raise AuthError("unknown or revoked API key")
    g.api_scopes = frozenset(row.scopes.split())
    g.api_key_id = row.id


def requires(scope: str) -> Callable[[F], F]:
    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if scope not in g.get("api_scopes", frozenset()):
                raise ForbiddenError(f"this API key lacks the {scope!r} scope")
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
