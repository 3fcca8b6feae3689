"""Mandrill (Mailchimp Transactional) webhooks: form field ``mandrill_events``, a JSON array.

Signature: ``X-Mandrill-Signature`` is the base64 HMAC-SHA1, keyed with the webhook key, of the
exact URL configured at Mandrill followed by every POST key and its value, keys sorted. The URL
must be byte-identical to Mandrill's copy (scheme, host, path, query), hence the optional
``url`` credential for when the shell sits behind a proxy. Mandrill checks a new webhook with
an unsigned HEAD, which is let through (it carries no events).
Source: mailchimp.com/developer/transactional/guides/track-respond-activity-webhooks/
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from webhooks.base import (
    AuthenticationError,
    BaseAdapter,
    InboundRequest,
    Kind,
    NormalizedEvent,
    ParseResult,
    PayloadError,
    ReplayGuard,
    dedupe_key,
    ids_from,
    json_objects,
    load_json,
    obj,
    parse_timestamp,
    require_credentials,
    same,
    text,
)

SIGNATURE_HEADER = "X-Mandrill-Signature"

KINDS: dict[str, Kind] = {
    "click": "click",
    "open": "open",
    "unsub": "unsubscribe",
    "hard_bounce": "hard_bounce",
    "soft_bounce": "soft_bounce",
    "spam": "complaint",
}


def _fields(request: InboundRequest) -> list[tuple[str, str]]:
    try:
        return parse_qsl(request.body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError("Mandrill body is not form-encoded UTF-8") from exc


def signature_for(url: str, fields: Sequence[tuple[str, str]], key: str) -> str:
    signed = url + "".join(name + value for name, value in sorted(fields))
    digest = hmac.new(key.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


class MandrillAdapter(BaseAdapter):
    name = "mandrill"

    def verify(
        self,
        request: InboundRequest,
        credentials: Sequence[Mapping[str, str]],
        *,
        now: datetime,
        guard: ReplayGuard,
    ) -> None:
        if request.method.upper() == "HEAD":  # setup probe, sent before the key even exists
            return
        require_credentials(credentials)
        offered = (request.header(SIGNATURE_HEADER) or "").strip()
        if not offered:
            raise AuthenticationError("Mandrill signature header missing")
        fields = _fields(request)
        for cred in credentials:
            key = cred.get("webhook_key")
            url = cred.get("url") or request.url
            if key and same(signature_for(url, fields, key), offered):
                return
        raise AuthenticationError("Mandrill signature does not verify")

    def parse(self, request: InboundRequest) -> ParseResult:
        if request.method.upper() == "HEAD":
            return ParseResult()
        raw_events = dict(_fields(request)).get("mandrill_events")
        if raw_events is None:
            raise PayloadError("Mandrill body has no mandrill_events field")
        events = json_objects(load_json(raw_events.encode()), allow_single=False)
        return ParseResult(events=[self._event(event) for event in events])

    def _event(self, event: Mapping[str, Any]) -> NormalizedEvent:
        name = text(event, "event") or ""
        message = obj(event, "msg")
        contact_id, campaign_id = ids_from(obj(message, "metadata"))
        return NormalizedEvent(
            provider=self.name,
            kind=KINDS.get(name, "other"),
            provider_event=name,
            dedupe_key=dedupe_key(
                self.name,
                text(event, "_id") or text(message, "_id"),
                name,
                text(event, "ts"),
                text(event, "url"),
            ),
            occurred_at=parse_timestamp(event.get("ts")),
            email=text(message, "email"),
            contact_id=contact_id,
            campaign_id=campaign_id,
            url=text(event, "url"),
            user_agent=text(event, "user_agent"),
            raw=event,
        )


adapter = MandrillAdapter()
