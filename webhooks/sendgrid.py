"""SendGrid Event Webhook: a JSON array of events, optionally signed with ECDSA P-256.

Signature: ``X-Twilio-Email-Event-Webhook-Signature`` is a base64 DER ECDSA signature over the
``X-Twilio-Email-Event-Webhook-Timestamp`` header followed by the raw body, SHA-256; the public
key is shown in SendGrid's mail settings as base64 DER (no PEM armour). SendGrid documents no
freshness window and retries for up to 24 hours, so the timestamp age is not checked: replays
are absorbed by the per-event ``sg_event_id`` dedupe key instead.
Source: twilio.com/docs/sendgrid/for-developers/tracking-events/
getting-started-event-webhook-security-features and .../tracking-events/event
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key

from webhooks.base import (
    AuthenticationError,
    BaseAdapter,
    InboundRequest,
    Kind,
    NormalizedEvent,
    ParseResult,
    ReplayGuard,
    dedupe_key,
    ids_from,
    json_array_items,
    parse_timestamp,
    require_credentials,
    text,
)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

KINDS: dict[str, Kind] = {
    "click": "click",
    "open": "open",
    "unsubscribe": "unsubscribe",
    "group_unsubscribe": "unsubscribe",
    "spamreport": "complaint",
    "delivered": "delivered",
    "deferred": "soft_bounce",
}


@lru_cache(maxsize=32)
def _public_key(configured: str) -> ec.EllipticCurvePublicKey | None:
    body = "".join(line for line in configured.splitlines() if not line.startswith("-----"))
    try:
        key = load_der_public_key(base64.b64decode("".join(body.split()), validate=True))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        return None
    return key


def _kind(name: str, event: Mapping[str, Any]) -> Kind:
    if name == "bounce":  # "blocked" is a temporary refusal; "bounce" (or none) is permanent
        return "soft_bounce" if text(event, "type") == "blocked" else "hard_bounce"
    return KINDS.get(name, "other")


class SendGridAdapter(BaseAdapter):
    name = "sendgrid"

    def verify(
        self,
        request: InboundRequest,
        credentials: Sequence[Mapping[str, str]],
        *,
        now: datetime,
        guard: ReplayGuard,
    ) -> None:
        require_credentials(credentials)
        signature, timestamp = request.header(SIGNATURE_HEADER), request.header(TIMESTAMP_HEADER)
        if not signature or not timestamp:
            raise AuthenticationError("SendGrid signature headers missing")
        try:
            der_signature = base64.b64decode(signature.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise AuthenticationError("SendGrid signature is not base64") from exc
        signed = timestamp.encode() + request.body
        for cred in credentials:
            key = _public_key(cred.get("public_key", ""))
            if key is None:
                continue
            try:
                key.verify(der_signature, signed, ec.ECDSA(hashes.SHA256()))
            except (InvalidSignature, ValueError):
                continue
            return
        raise AuthenticationError("SendGrid signature does not verify")

    def parse(self, request: InboundRequest) -> ParseResult:
        # Each event keeps its own slice of the body as its raw JSON (no second encoding).
        return ParseResult(events=[self._event(event, raw) for event, raw in json_array_items(request.body)])

    def _event(self, event: Mapping[str, Any], raw_json: str | None = None) -> NormalizedEvent:
        occurred_at = parse_timestamp(event.get("timestamp"))
        name, email, url = text(event, "event") or "", text(event, "email"), text(event, "url")
        event_id = text(event, "sg_event_id")
        key = (
            dedupe_key(self.name, event_id)
            if event_id
            else dedupe_key(
                self.name, name or None, text(event, "sg_message_id"), email, occurred_at.isoformat(), url
            )
        )
        contact_id, campaign_id = ids_from(event)  # custom_args arrive flattened
        # Positional, in NormalizedEvent's order: 500 per batch, keywords cost a third more.
        return NormalizedEvent(
            self.name,
            _kind(name, event),
            name,
            key,
            occurred_at,
            email,
            contact_id,
            campaign_id,
            url,
            text(event, "useragent"),
            event,
            raw_json,
        )


adapter = SendGridAdapter()
