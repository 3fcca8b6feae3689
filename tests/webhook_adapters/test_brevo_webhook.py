"""Brevo: unsigned JSON objects (or batched arrays), ids in X-Mailin-custom or tags."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from webhooks.base import InboundRequest, PayloadError
from webhooks.brevo import adapter

URL = "https://gk.example.com/webhooks/brevo"
MESSAGE_ID = "<202405061220.12345678901@smtp-relay.mailin.fr>"


def request_for(document) -> InboundRequest:
    return InboundRequest(
        "POST", URL, {"Content-Type": "application/json"}, json.dumps(document).encode()
    )


CASES = [
    ("click", "click", "click", 1715000460, "https://boutique.example.fr/offre"),
    ("open", "open", "unique_opened", 1715000400, None),
    ("unsubscribe", "unsubscribe", "unsubscribed", 1715000520, None),
    ("hard_bounce", "hard_bounce", "hard_bounce", 1715000100, None),
    ("soft_bounce", "soft_bounce", "soft_bounce", 1715000110, None),
    ("complaint", "complaint", "spam", 1715000600, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_documented_event_parses_into_our_normalised_event(payload, case):
    name, kind, provider_event, ts, url = case
    (event,) = adapter.parse(request_for(payload("brevo", name))).events
    assert event.kind == kind
    assert event.provider_event == provider_event
    assert event.email == "marie@example.fr"
    assert event.occurred_at == datetime.fromtimestamp(ts, tz=UTC)
    link = url or ""
    assert event.dedupe_key == (
        f"brevo:{provider_event}|{MESSAGE_ID}|marie@example.fr|{ts * 1000 + 123}|{link}"
    )
    assert (event.contact_id, event.campaign_id) == (42, 7)
    assert event.url == url


def test_a_batched_array_gives_one_event_each(payload):
    events = adapter.parse(request_for(payload("brevo", "batch"))).events
    assert [e.kind for e in events] == ["delivered", "open"]
    assert len({e.dedupe_key for e in events}) == 2


def test_parsing_twice_gives_the_same_dedupe_keys(payload):
    request = request_for(payload("brevo", "batch"))
    assert [e.dedupe_key for e in adapter.parse(request).events] == [
        e.dedupe_key for e in adapter.parse(request).events
    ]


def test_the_event_time_prefers_ts_event_and_reads_milliseconds(payload):
    document = payload("brevo", "click")
    del document["ts_event"]
    (event,) = adapter.parse(request_for(document)).events
    assert event.occurred_at == datetime(2024, 5, 6, 13, 1, 0, 123000, tzinfo=UTC)


def test_a_marketing_click_uses_its_url_field(payload):
    document = {
        "id": 1,
        "camp_id": 99,
        "email": "marie@example.fr",
        "event": "click",
        "date_sent": "2024-05-06 14:00:00",
        "date_event": "2024-05-06 15:01:00",
        "ts_sent": 1715000000,
        "ts_event": 1715000460,
        "ts": 1715000460,
        "tag": "",
        "URL": "https://boutique.example.fr/offre",
    }
    (event,) = adapter.parse(request_for(document)).events
    assert event.url == "https://boutique.example.fr/offre"
    assert event.dedupe_key.startswith("brevo:click|99|")


@pytest.mark.parametrize("body", [b"{not json", b'"text"', b"[1]", b'{"event": "click"}'])
def test_a_malformed_body_is_a_payload_error(body):
    with pytest.raises(PayloadError):
        adapter.parse(InboundRequest("POST", URL, {}, body))
