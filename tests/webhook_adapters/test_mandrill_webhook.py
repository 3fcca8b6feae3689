"""Mandrill: form-encoded mandrill_events, HMAC-SHA1 over the configured URL and the fields."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest

from webhooks.base import AuthenticationError, InboundRequest, PayloadError
from webhooks.mandrill import SIGNATURE_HEADER, adapter

URL = "https://gk.example.com/webhooks/mandrill"
KEY = "aBcDeFgHiJkLmNoPqRsTuV"
CREDENTIALS = [{"webhook_key": KEY, "url": URL}]


def signed(events, *, url: str = URL, key: str = KEY, request_url: str = URL) -> InboundRequest:
    fields = {"mandrill_events": json.dumps(events)}
    signed_data = url + "".join(name + value for name, value in sorted(fields.items()))
    digest = hmac.new(key.encode(), signed_data.encode(), hashlib.sha1).digest()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        SIGNATURE_HEADER: base64.b64encode(digest).decode(),
    }
    return InboundRequest("POST", request_url, headers, urlencode(fields).encode())


CASES = [
    (
        "click",
        "click",
        "click",
        1715000460,
        "exampleaaaaaaaaaaaaaaaaaaaaaaaa1",
        "https://shop.example.com/offer",
    ),
    ("open", "open", "open", 1715000400, "exampleaaaaaaaaaaaaaaaaaaaaaaaa2", None),
    ("unsubscribe", "unsubscribe", "unsub", 1715000520, "exampleaaaaaaaaaaaaaaaaaaaaaaaa3", None),
    (
        "hard_bounce",
        "hard_bounce",
        "hard_bounce",
        1715000100,
        "exampleaaaaaaaaaaaaaaaaaaaaaaaa4",
        None,
    ),
    (
        "soft_bounce",
        "soft_bounce",
        "soft_bounce",
        1715000110,
        "exampleaaaaaaaaaaaaaaaaaaaaaaaa5",
        None,
    ),
    ("complaint", "complaint", "spam", 1715000600, "exampleaaaaaaaaaaaaaaaaaaaaaaaa6", None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_documented_event_parses_into_our_normalised_event(payload, case):
    name, kind, provider_event, ts, event_id, url = case
    (event,) = adapter.parse(signed(payload("mandrill", name))).events
    assert event.kind == kind
    assert event.email == "example.webhook@mandrillapp.com"
    assert event.occurred_at == datetime.fromtimestamp(ts, tz=UTC)
    assert event.dedupe_key == f"mandrill:{event_id}|{provider_event}|{ts}|{url or ''}"
    assert (event.contact_id, event.campaign_id) == (42, 7)
    assert event.url == url


def test_a_batch_parses_into_one_event_each_with_stable_keys(payload):
    batch = [e for n in ("click", "open", "complaint") for e in payload("mandrill", n)]
    request = signed(batch)
    first, second = adapter.parse(request).events, adapter.parse(request).events
    assert [e.kind for e in first] == ["click", "open", "complaint"]
    assert [e.dedupe_key for e in first] == [e.dedupe_key for e in second]


def test_a_valid_signature_verifies(payload, now, guard):
    adapter.verify(signed(payload("mandrill", "click")), CREDENTIALS, now=now, guard=guard)


def test_the_configured_url_is_signed_not_the_one_behind_the_proxy(payload, now, guard):
    request = signed(
        payload("mandrill", "click"), request_url="http://10.0.0.5:8000/webhooks/mandrill"
    )
    adapter.verify(request, CREDENTIALS, now=now, guard=guard)
    with pytest.raises(AuthenticationError):
        adapter.verify(request, [{"webhook_key": KEY}], now=now, guard=guard)


def test_a_signature_for_another_url_or_key_is_refused(payload, now, guard):
    for request in (
        signed(payload("mandrill", "click"), url=URL + "/"),
        signed(payload("mandrill", "click"), key="another-key"),
    ):
        with pytest.raises(AuthenticationError):
            adapter.verify(request, CREDENTIALS, now=now, guard=guard)


def test_a_tampered_body_or_missing_signature_is_refused(payload, now, guard):
    request = signed(payload("mandrill", "click"))
    tampered = InboundRequest("POST", URL, request.headers, request.body.replace(b"42", b"43"))
    unsigned = InboundRequest("POST", URL, {}, request.body)
    for bad in (tampered, unsigned):
        with pytest.raises(AuthenticationError):
            adapter.verify(bad, CREDENTIALS, now=now, guard=guard)
    with pytest.raises(AuthenticationError):
        adapter.verify(request, [], now=now, guard=guard)


def test_the_unsigned_setup_head_request_passes_and_carries_no_events(now, guard):
    head = InboundRequest("HEAD", URL, {}, b"")
    adapter.verify(head, [], now=now, guard=guard)
    assert adapter.parse(head).events == []


@pytest.mark.parametrize(
    "body",
    [
        b"other=1",
        urlencode({"mandrill_events": "{not json"}).encode(),
        urlencode({"mandrill_events": "{}"}).encode(),
        b"\xff\xfe",
    ],
    ids=["no field", "not json", "not an array", "not utf-8"],
)
def test_a_malformed_body_is_a_payload_error(body):
    with pytest.raises(PayloadError):
        adapter.parse(InboundRequest("POST", URL, {}, body))
