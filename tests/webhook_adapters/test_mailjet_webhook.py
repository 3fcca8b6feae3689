"""Mailjet: unsigned events, grouped in arrays or bare, ids in CustomID / Payload."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from webhooks.base import InboundRequest, PayloadError
from webhooks.mailjet import adapter

URL = "https://gk.example.com/webhooks/mailjet"


def request_for(document) -> InboundRequest:
    return InboundRequest("POST", URL, {}, json.dumps(document).encode())


CASES = [
    ("click", "click", "click", 1715000460, "https://boutique.example.fr/offre"),
    ("open", "open", "open", 1715000400, None),
    ("unsubscribe", "unsubscribe", "unsub", 1715000520, None),
    ("hard_bounce", "hard_bounce", "bounce", 1715000100, None),
    ("soft_bounce", "soft_bounce", "bounce", 1715000110, None),
    ("complaint", "complaint", "spam", 1715000600, None),
    ("delivered", "delivered", "sent", 1715000050, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_documented_event_parses_into_our_normalised_event(payload, case):
    name, kind, provider_event, ts, url = case
    (event,) = adapter.parse(request_for(payload("mailjet", name))).events
    assert event.kind == kind
    assert event.provider_event == provider_event
    assert event.email == "paul@example.fr"
    assert event.occurred_at == datetime.fromtimestamp(ts, tz=UTC)
    assert event.dedupe_key == (
        f"mailjet:{provider_event}|19421777836302490|paul@example.fr|{ts}|{url or ''}"
    )
    assert (event.contact_id, event.campaign_id) == (42, 7)
    assert event.url == url


def test_a_bare_object_and_a_grouped_array_both_parse(payload):
    bare = payload("mailjet", "open")
    assert isinstance(bare, dict)
    assert len(adapter.parse(request_for(bare)).events) == 1
    assert len(adapter.parse(request_for([bare, *payload("mailjet", "click")])).events) == 2


def test_parsing_twice_gives_the_same_dedupe_key(payload):
    request = request_for(payload("mailjet", "click"))
    assert (
        adapter.parse(request).events[0].dedupe_key == adapter.parse(request).events[0].dedupe_key
    )


def test_the_click_user_agent_comes_from_agent(payload):
    (event,) = adapter.parse(request_for(payload("mailjet", "click"))).events
    assert event.user_agent is not None
    assert event.user_agent.startswith("Mozilla/5.0")


@pytest.mark.parametrize("body", [b"{not json", b"42", b'[{"event": "open"}]'])
def test_a_malformed_body_is_a_payload_error(body):
    with pytest.raises(PayloadError):
        adapter.parse(InboundRequest("POST", URL, {}, body))
