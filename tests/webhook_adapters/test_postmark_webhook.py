"""Postmark: one unsigned JSON object per request, RecordType as discriminator."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from webhooks.base import InboundRequest, PayloadError
from webhooks.postmark import adapter

URL = "https://gk.example.com/webhooks/postmark"
MESSAGE_ID = "883953f4-6105-42a2-a16a-77a8eac79483"


def request_for(document) -> InboundRequest:
    return InboundRequest("POST", URL, {}, json.dumps(document).encode())


CASES = [
    (
        "click",
        "click",
        datetime(2024, 5, 6, 12, 21, 0, 417039, tzinfo=UTC),
        f"postmark:Click|{MESSAGE_ID}|john@example.com|2024-05-06T12:21:00.4170395Z|"
        "https://shop.example.com/offer",
        "https://shop.example.com/offer",
    ),
    (
        "open",
        "open",
        datetime(2024, 5, 6, 12, 20, 0, 273539, tzinfo=UTC),
        f"postmark:Open|{MESSAGE_ID}|john@example.com|2024-05-06T08:20:00.2735393-04:00|",
        None,
    ),
    (
        "unsubscribe",
        "unsubscribe",
        datetime(2024, 5, 6, 12, 22, 0, 416071, tzinfo=UTC),
        f"postmark:SubscriptionChange|{MESSAGE_ID}|john@example.com|2024-05-06T12:22:00.416071Z|",
        None,
    ),
    (
        "hard_bounce",
        "hard_bounce",
        datetime(2024, 5, 6, 12, 15, 0, 273539, tzinfo=UTC),
        "postmark:Bounce|4323372036854775807",
        None,
    ),
    (
        "soft_bounce",
        "soft_bounce",
        datetime(2024, 5, 6, 12, 15, 10, tzinfo=UTC),
        "postmark:Bounce|4323372036854775808",
        None,
    ),
    (
        "complaint",
        "complaint",
        datetime(2024, 5, 6, 12, 30, 0, 907025, tzinfo=UTC),
        "postmark:SpamComplaint|42",
        None,
    ),
    (
        "delivered",
        "delivered",
        datetime(2024, 5, 6, 12, 0, 50, tzinfo=UTC),
        f"postmark:Delivery|{MESSAGE_ID}|john@example.com|2024-05-06T12:00:50Z|",
        None,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_documented_event_parses_into_our_normalised_event(payload, case):
    name, kind, occurred_at, key, url = case
    (event,) = adapter.parse(request_for(payload("postmark", name))).events
    assert event.kind == kind
    assert event.email == "john@example.com"
    assert event.occurred_at == occurred_at
    assert event.dedupe_key == key
    assert (event.contact_id, event.campaign_id) == (42, 7)
    assert event.url == url


def test_a_reactivation_is_not_an_unsubscribe(payload):
    document = payload("postmark", "unsubscribe")
    document["SuppressSending"] = False
    assert adapter.parse(request_for(document)).events[0].kind == "other"


def test_parsing_twice_gives_the_same_dedupe_key(payload):
    request = request_for(payload("postmark", "open"))
    assert (
        adapter.parse(request).events[0].dedupe_key == adapter.parse(request).events[0].dedupe_key
    )


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"RecordType": "Open"}'])
def test_a_malformed_body_is_a_payload_error(body):
    with pytest.raises(PayloadError):
        adapter.parse(InboundRequest("POST", URL, {}, body))
