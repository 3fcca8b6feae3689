"""``POST /webhooks/<provider>``: emailing-platform events into the register (API.md, WEBHOOKS.md).

No API key: each request proves itself to its provider's adapter (``webhooks/``), on the raw
bytes, with the accounts configured in ``GATEKEEPER_WEBHOOKS``. The ingestion itself, one
transaction per request, is ``webhook_service``'s; plain POSTs are served by the WSGI fast path
in front of Flask (``webhook_fastpath``), and this blueprint answers the rest the same way
(Mandrill's HEAD probe, bodies without a length, unknown providers, bodies over the limit).
Events without legal urgency are journaled in the spool's ``webhooks`` stream and applied by
``gatekeeper drain`` (``webhook_spooled``).
An SNS ``SubscriptionConfirmation`` is confirmed by GETting the URL the adapter vouched for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState

from gatekeeper.config import Settings
from gatekeeper.db import get_database
from gatekeeper.errors import ConfigError
from gatekeeper.spool import Spool
from gatekeeper.webhook_fastpath import FastWebhooks
from gatekeeper.webhook_service import Credentials, WebhookService
from gatekeeper.webhook_spooled import STREAM
from webhooks import Adapter, InboundRequest, load_adapters

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")

SERVICE = "gatekeeper.webhook_service"


@bp.record_once
def _configure(state: BlueprintSetupState) -> None:
    # Read once at startup, so a typo in GATEKEEPER_WEBHOOKS stops the service, not a webhook.
    app = cast(Flask, state.app)  # registered on a Flask app, never a bare sansio App
    settings: Settings = app.extensions["gatekeeper.settings"]
    adapters = load_adapters()
    service = WebhookService(
        adapters,
        parse_credentials(settings.webhooks, adapters),
        app.extensions["gatekeeper.context"],
        get_database(app).engine,
        settings.public_base_url,
        Spool(Path(settings.spool_dir), STREAM, fsync=settings.spool_fsync),
    )
    app.extensions[SERVICE] = service
    app.wsgi_app = FastWebhooks(app.wsgi_app, service, app.config.get("MAX_CONTENT_LENGTH"))  # type: ignore[method-assign]


def service_of(app: Flask) -> WebhookService:
    service: WebhookService = app.extensions[SERVICE]
    return service


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
    inbound = InboundRequest(
        method=request.method,
        url=service_of(current_app).external_url(request.path, request.query_string.decode("latin-1")),
        headers=dict(request.headers),
        body=request.get_data(cache=False),  # the raw bytes: signatures cover them exactly
        remote_addr=request.remote_addr,
    )
    status, body = service_of(current_app).receive(provider, inbound)
    return jsonify(body), status
