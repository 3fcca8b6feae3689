"""Mailgun webhooks: one JSON object ``{"signature": {...}, "event-data": {...}}`` per request.

Signature: hex HMAC-SHA256 of ``timestamp + token`` keyed with the webhook signing key (the
subaccount ``parent-signature`` is accepted with the parent's key). The event data itself is
not signed, so a signature can be replayed with other data: tokens are single-use (via the
guard) and timestamps more than 15 minutes from our clock are refused, as Mailgun suggests.
Answering 406 tells Mailgun to drop the request; anything else non-2xx is retried for 8 hours.
Source: documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from webhooks.base import (
    AuthenticationError,
    BaseAdapter,
    InboundRequest,
    Kind,
    NormalizedEvent,
    ParseResult,
    PayloadError,
    ReplayError,
    ReplayGuard,
    dedupe_key,
    ids_from,
    load_json,
    obj,
    parse_timestamp,
    require_credentials,
    same,
    text,
)

# Mailgun warns its own delivery can lag; 15 minutes tolerates that and bounds a replay window.
MAX_CLOCK_SKEW = timedelta(minutes=15)

KINDS: dict[str, Kind] = {
    "clicked": "click",
    "opened": "open",
    "unsubscribed": "unsubscribe",
    "complained": "complaint",
    "delivered": "delivered",
}


def _document(request: InboundRequest) -> Mapping[str, Any]:
    return _decoded(request.body)


@lru_cache(maxsize=1)
def _decoded(body: bytes) -> Mapping[str, Any]:
    # verify() and parse() both read the body of the same request: decode it once. Nothing
    # writes into the document, so handing the same object to both is safe.
    data = load_json(body)
    if not isinstance(data, dict):
        raise PayloadError("Mailgun body must be a JSON object")
    return data


def _kind(event_data: Mapping[str, Any], name: str) -> Kind:
    if name == "failed":
        return "hard_bounce" if text(event_data, "severity") == "permanent" else "soft_bounce"
    return KINDS.get(name, "other")


class MailgunAdapter(BaseAdapter):
    name = "mailgun"
    payload_status = 406  # "drop, never retry": the same bytes will never parse
    replay_status = 406  # a used token means the first delivery was already stored

    def verify(
        self,
        request: InboundRequest,
        credentials: Sequence[Mapping[str, str]],
        *,
        now: datetime,
        guard: ReplayGuard,
    ) -> None:
        require_credentials(credentials)
        signature = obj(_document(request), "signature")
        timestamp, token = text(signature, "timestamp"), text(signature, "token")
        offered = [s for s in (text(signature, "signature"), text(signature, "parent-signature")) if s]
        if not timestamp or not token or not offered:
            raise AuthenticationError("Mailgun signature fields missing")
        try:
            signed_at = parse_timestamp(timestamp)
        except PayloadError as exc:
            raise AuthenticationError("Mailgun signature timestamp unreadable") from exc
        if abs(now - signed_at) > MAX_CLOCK_SKEW:
            raise AuthenticationError("Mailgun signature timestamp is stale")
        message = (timestamp + token).encode()
        for cred in credentials:
            key = cred.get("signing_key", "").encode()
            if not key:
                continue
            expected = hmac.digest(key, message, hashlib.sha256).hex()  # one-shot: no HMAC object
            if any(same(expected, candidate.lower()) for candidate in offered):
                break
        else:
            raise AuthenticationError("Mailgun signature does not verify")
        if guard.seen(self.name, token, now=now):
            raise ReplayError("Mailgun token already used")

    def parse(self, request: InboundRequest) -> ParseResult:
        document = _document(request)
        event_data = obj(document, "event-data")
        if not event_data:
            raise PayloadError("Mailgun body has no event-data")
        occurred_at = parse_timestamp(event_data.get("timestamp"))
        event_id, token = text(event_data, "id"), text(obj(document, "signature"), "token")
        if not event_id and not token:
            raise PayloadError("Mailgun event has neither an id nor a token")
        # The id is only unique within a day, hence the day; the token is the fallback.
        key_parts = (event_id, occurred_at.date().isoformat()) if event_id else (token,)
        contact_id, campaign_id = ids_from(obj(event_data, "user-variables"))
        name = text(event_data, "event") or ""
        # Positional, in NormalizedEvent's order: one per request, on the hot path.
        event = NormalizedEvent(
            self.name,
            _kind(event_data, name),
            name,
            dedupe_key(self.name, *key_parts),
            occurred_at,
            text(event_data, "recipient"),
            contact_id,
            campaign_id,
            text(event_data, "url"),
            text(obj(event_data, "client-info"), "user-agent"),
            event_data,
        )
        return ParseResult(events=[event])


adapter = MailgunAdapter()
