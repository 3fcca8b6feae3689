"""Mailjet Event API: a JSON array when events are grouped (Version 2), a bare object otherwise.

Mailjet signs nothing; its documentation recommends HTTPS with basic auth in the URL
(``https://user:pass@host/...``), which arrives as an ``Authorization: Basic`` header.
Mailjet wants a 200 and retries anything else for 24 hours.
``sent`` means the recipient's server accepted the message, so it maps to ``delivered``.
Our ids travel in ``CustomID`` and/or ``Payload`` (a JSON object or ``gk_contact=1&gk_campaign=2``).
Source: dev.mailjet.com/email/guides/webhooks/ (Event API: real-time notifications)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from webhooks.base import (
    BaseAdapter,
    InboundRequest,
    Kind,
    NormalizedEvent,
    ParseResult,
    ReplayGuard,
    dedupe_key,
    ids_from,
    json_objects,
    load_json,
    pairs_from_text,
    parse_timestamp,
    text,
    verify_http_credentials,
)

KINDS: dict[str, Kind] = {
    "click": "click",
    "open": "open",
    "unsub": "unsubscribe",
    "spam": "complaint",
    "sent": "delivered",
}


def _kind(event: Mapping[str, Any]) -> Kind:
    name = text(event, "event") or ""
    if name == "bounce":
        return "hard_bounce" if event.get("hard_bounce") is True else "soft_bounce"
    return KINDS.get(name, "other")


class MailjetAdapter(BaseAdapter):
    name = "mailjet"

    def verify(
        self,
        request: InboundRequest,
        credentials: Sequence[Mapping[str, str]],
        *,
        now: datetime,
        guard: ReplayGuard,
    ) -> None:
        verify_http_credentials(request, credentials)

    def parse(self, request: InboundRequest) -> ParseResult:
        events = json_objects(load_json(request.body), allow_single=True)
        return ParseResult(events=[self._event(event) for event in events])

    def _event(self, event: Mapping[str, Any]) -> NormalizedEvent:
        occurred_at = parse_timestamp(event.get("time"))
        metadata = pairs_from_text(event.get("Payload"))
        for key, value in pairs_from_text(event.get("CustomID")).items():
            metadata.setdefault(key, value)
        contact_id, campaign_id = ids_from(metadata)
        name = text(event, "event") or ""
        return NormalizedEvent(
            provider=self.name,
            kind=_kind(event),
            provider_event=name,
            dedupe_key=dedupe_key(
                self.name,
                name,
                text(event, "MessageID") or text(event, "Message_GUID"),
                text(event, "email"),
                text(event, "time"),
                text(event, "url"),
            ),
            occurred_at=occurred_at,
            email=text(event, "email"),
            contact_id=contact_id,
            campaign_id=campaign_id,
            url=text(event, "url"),
            user_agent=text(event, "agent"),
            raw=event,
        )


adapter = MailjetAdapter()
