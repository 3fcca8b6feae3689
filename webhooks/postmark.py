"""Postmark webhooks: one JSON object per request, ``RecordType`` says which event it is.

Postmark signs nothing: a webhook is protected by basic auth in its URL or by custom headers
set on the webhook (a token in ``Authorization: Bearer`` or a header named in the credential).
``Bounce`` and ``SpamComplaint`` records carry a bounce ``ID``; the others get a composite key.
``SubscriptionChange`` with ``SuppressSending: true`` is a suppression (an unsubscribe, or a
manual or automatic deactivation); ``false`` is a reactivation and maps to ``other``.
Sources: postmarkapp.com/developer/webhooks/ bounce-webhook, spam-complaint-webhook,
click-webhook, open-tracking-webhook, subscription-change-webhook
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
    PayloadError,
    ReplayGuard,
    dedupe_key,
    ids_from,
    load_json,
    obj,
    parse_timestamp,
    text,
    verify_http_credentials,
)

# RecordType -> (field holding the recipient, field holding the moment)
FIELDS: dict[str, tuple[str, str]] = {
    "Bounce": ("Email", "BouncedAt"),
    "SpamComplaint": ("Email", "BouncedAt"),
    "Delivery": ("Recipient", "DeliveredAt"),
    "Open": ("Recipient", "ReceivedAt"),
    "Click": ("Recipient", "ReceivedAt"),
    "SubscriptionChange": ("Recipient", "ChangedAt"),
}


def _kind(record_type: str, record: Mapping[str, Any]) -> Kind:
    if record_type == "Bounce":
        return "hard_bounce" if text(record, "Type") == "HardBounce" else "soft_bounce"
    if record_type == "SubscriptionChange":
        return "unsubscribe" if record.get("SuppressSending") is True else "other"
    simple: dict[str, Kind] = {
        "SpamComplaint": "complaint",
        "Delivery": "delivered",
        "Open": "open",
        "Click": "click",
    }
    return simple.get(record_type, "other")


class PostmarkAdapter(BaseAdapter):
    name = "postmark"

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
        record = load_json(request.body)
        if not isinstance(record, dict):
            raise PayloadError("Postmark body must be a JSON object")
        record_type = text(record, "RecordType") or ""
        email_field, moment_field = FIELDS.get(record_type, ("Recipient", "ReceivedAt"))
        occurred_at = parse_timestamp(record.get(moment_field))
        email = text(record, email_field)
        bounce_id = text(record, "ID") if record_type in ("Bounce", "SpamComplaint") else None
        key_parts: tuple[object, ...] = (
            (record_type, bounce_id)
            if bounce_id
            else (
                record_type,
                text(record, "MessageID"),
                email,
                text(record, moment_field),
                text(record, "OriginalLink"),
            )
        )
        contact_id, campaign_id = ids_from(obj(record, "Metadata"))
        event = NormalizedEvent(
            provider=self.name,
            kind=_kind(record_type, record),
            provider_event=record_type,
            dedupe_key=dedupe_key(self.name, *key_parts),
            occurred_at=occurred_at,
            email=email,
            contact_id=contact_id,
            campaign_id=campaign_id,
            url=text(record, "OriginalLink"),
            user_agent=text(record, "UserAgent"),
            raw=record,
        )
        return ParseResult(events=[event])


adapter = PostmarkAdapter()
