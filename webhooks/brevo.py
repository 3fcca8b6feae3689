"""Brevo (ex-Sendinblue) transactional and marketing webhooks: a JSON object, or an array.

Brevo signs nothing: a webhook is protected by a bearer token it sends in ``Authorization``
(``auth: {type: bearer, token}`` at creation), by basic auth written into the URL, or by its
IP ranges (the shell's business, not ours). Batched webhooks post arrays.
Timestamps: ``ts_event`` is when the event happened (seconds, UTC), ``ts_epoch`` milliseconds,
``ts`` seconds; events often arrive out of order, so ``occurred_at`` matters to the shell.
Our ids travel in the ``X-Mailin-custom`` header (JSON object or ``gk_contact=1|gk_campaign=2``)
or in tags such as ``gk_contact:1``.
Source: developers.brevo.com/docs/transactional-webhooks, /docs/secured-webhooks
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
    "opened": "open",
    "unique_opened": "open",
    "proxy_open": "open",
    "unique_proxy_open": "open",
    "unsubscribe": "unsubscribe",  # marketing webhooks
    "unsubscribed": "unsubscribe",  # transactional webhooks
    "hard_bounce": "hard_bounce",
    "invalid_email": "hard_bounce",
    "soft_bounce": "soft_bounce",
    "deferred": "soft_bounce",
    "spam": "complaint",
    "complaint": "complaint",
    "delivered": "delivered",
}


def _metadata(event: Mapping[str, Any]) -> dict[str, Any]:
    found = pairs_from_text(event.get("X-Mailin-custom"))
    tags = event.get("tags")
    for tag in [*(tags if isinstance(tags, list) else []), event.get("tag")]:
        for key, value in pairs_from_text(tag).items():
            found.setdefault(key, value)
    return found


class BrevoAdapter(BaseAdapter):
    name = "brevo"

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
        moment = next((event[k] for k in ("ts_event", "ts_epoch", "ts") if event.get(k) is not None), None)
        occurred_at = parse_timestamp(moment)
        name = text(event, "event") or ""
        link = text(event, "link") or text(event, "URL")
        contact_id, campaign_id = ids_from(_metadata(event))
        return NormalizedEvent(
            provider=self.name,
            kind=KINDS.get(name, "other"),
            provider_event=name,
            dedupe_key=dedupe_key(
                self.name,
                name,
                text(event, "message-id") or text(event, "camp_id"),
                text(event, "email"),
                text(event, "ts_epoch") or text(event, "ts_event"),
                link,
            ),
            occurred_at=occurred_at,
            email=text(event, "email"),
            contact_id=contact_id,
            campaign_id=campaign_id,
            url=link,
            user_agent=text(event, "user_agent"),
            raw=event,
        )


adapter = BrevoAdapter()
