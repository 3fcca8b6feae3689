"""``POST /webhooks/<provider>``: emailing-platform events into the register (API.md, WEBHOOKS.md).

Theory of operation
-------------------
No API key: each request proves itself to its provider's adapter (``webhooks/``), on the raw
bytes, with the accounts configured in ``GATEKEEPER_WEBHOOKS``. One transaction per request, in
warehouse's order: verify → parse → drop the events already stored → apply the state change →
store the raw events → commit → 200. Everything that only reads runs first; the writes (the
one-time token, recorded by a database guard, with them) take a short turn at the end. The token
shares the transaction, so a request that fails after verification does not burn it for the
provider's retry. Every status comes from the adapter (``status_for``): a refused request
stores nothing, and a database failure answers the transient code (503) so the provider retries.
An SNS ``SubscriptionConfirmation`` is confirmed by GETting the URL the adapter vouched for.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import Blueprint, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState
from sqlalchemy.exc import SQLAlchemyError

from gatekeeper.config import Settings
from gatekeeper.db import request_session
from gatekeeper.errors import ConfigError
from gatekeeper.models import utcnow
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.deliveries import (
    DatabaseReplayGuard,
    DeliveryResult,
    apply_deliveries,
    plan_deliveries,
    write_turn,
)
from webhooks import (
    Adapter,
    AuthenticationError,
    InboundRequest,
    PayloadError,
    ReplayError,
    UpstreamError,
    WebhookError,
    load_adapters,
)

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")
log = logging.getLogger(__name__)

ADAPTERS = "gatekeeper.webhook_adapters"
CREDENTIALS = "gatekeeper.webhook_credentials"
# SNS waits on our answer while we confirm: stay well inside its own timeout.
CONFIRM_TIMEOUT_SECONDS = 5

Credentials = dict[str, list[dict[str, str]]]


@bp.record_once
def _configure(state: BlueprintSetupState) -> None:
    # Read once at startup, so a typo in GATEKEEPER_WEBHOOKS stops the service, not a webhook.
    settings: Settings = state.app.extensions["gatekeeper.settings"]
    adapters = load_adapters()
    state.app.extensions[ADAPTERS] = adapters
    state.app.extensions[CREDENTIALS] = parse_credentials(settings.webhooks, adapters)


def parse_credentials(raw: str, adapters: Mapping[str, Adapter]) -> Credentials:
    """``{"provider": [{"key": "value", ...}, ...]}``: several accounts per provider (a bare
    object is one account). Unknown providers and non-string values are configuration errors."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"GATEKEEPER_WEBHOOKS is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError("GATEKEEPER_WEBHOOKS must be a JSON object keyed by provider")
    found: Credentials = {}
    for provider, accounts in data.items():
        if provider not in adapters:
            known = ", ".join(sorted(adapters))
            raise ConfigError(f"GATEKEEPER_WEBHOOKS names unknown provider {provider!r} ({known})")
        listed = [accounts] if isinstance(accounts, dict) else accounts
        found[provider] = _accounts(provider, listed)
    return found


def _accounts(provider: str, accounts: Any) -> list[dict[str, str]]:
    if not isinstance(accounts, list) or not all(
        isinstance(account, dict) and all(isinstance(v, str) for v in account.values())
        for account in accounts
    ):
        raise ConfigError(f"GATEKEEPER_WEBHOOKS[{provider!r}] must be a list of objects of strings")
    checked: list[dict[str, str]] = accounts
    return checked


@bp.route("/<provider>", methods=["POST", "HEAD"])  # HEAD: Mandrill's setup check
def receive(provider: str) -> tuple[Response, int]:
    adapter: Adapter | None = current_app.extensions[ADAPTERS].get(provider)
    if adapter is None:
        return _error(404, "not_found", f"no webhook for provider {provider!r}")
    try:
        result = _ingest(provider, adapter, _inbound())
    except WebhookError as exc:
        log.warning("webhook %s refused: %s", provider, exc)
        return _error(adapter.status_for(exc), _code(exc), str(exc))
    except SQLAlchemyError:
        log.exception("webhook %s: storage failed, the provider will retry", provider)
        status = adapter.status_for(None, transient=True)
        return _error(status, "storage_unavailable", "events not stored; retry later")
    body = {"received": result.received, "stored": result.stored, "duplicates": result.duplicates}
    return jsonify(body), adapter.status_for(None)


def _inbound() -> InboundRequest:
    # Mandrill signs the URL exactly as configured at the provider: the public one, not ours.
    settings: Settings = current_app.extensions["gatekeeper.settings"]
    url = settings.public_base_url.rstrip("/") + request.path
    if request.query_string:
        url += "?" + request.query_string.decode("latin-1")
    return InboundRequest(
        method=request.method,
        url=url,
        headers=dict(request.headers),
        body=request.get_data(cache=False),  # the raw bytes: signatures cover them exactly
        remote_addr=request.remote_addr,
    )


def _ingest(provider: str, adapter: Adapter, inbound: InboundRequest) -> DeliveryResult:
    credentials: Credentials = current_app.extensions[CREDENTIALS]
    ctx: RegisterContext = current_app.extensions["gatekeeper.context"]
    session, now = request_session(), utcnow()
    guard = DatabaseReplayGuard(session)
    adapter.verify(inbound, credentials.get(provider, []), now=now, guard=guard)
    parsed = adapter.parse(inbound)
    if parsed.subscribe_url:
        confirm_subscription(parsed.subscribe_url)
    plan = plan_deliveries(session, parsed.events, ctx, now=now)  # reads only
    with write_turn(session):  # the writes, the token with them, then commit
        guard.record()
        result = apply_deliveries(session, plan, ctx)
        session.commit()
    return result


def confirm_subscription(url: str) -> None:
    """GET the SubscribeURL. The adapter checked it is an SNS host; we insist on HTTPS and no
    redirect, so a forged envelope can never make us fetch anything else."""
    if urlsplit(url).scheme != "https":
        raise PayloadError("subscription URL is not HTTPS")
    try:
        response = requests.get(url, timeout=CONFIRM_TIMEOUT_SECONDS, allow_redirects=False)
    except requests.RequestException as exc:
        raise UpstreamError(f"subscription confirmation failed: {exc}") from exc
    if response.status_code // 100 != 2:  # a redirect is not a confirmation either
        raise UpstreamError(f"subscription confirmation answered {response.status_code}")


def _code(exc: WebhookError) -> str:
    if isinstance(exc, ReplayError):
        return "replayed"
    if isinstance(exc, AuthenticationError):
        return "unauthorized"
    if isinstance(exc, UpstreamError):
        return "upstream_unavailable"
    return "malformed"


def _error(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message, "details": []}}), status
