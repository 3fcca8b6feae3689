"""SendGrid: ECDSA-signed JSON arrays of events."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from webhooks.base import AuthenticationError, InboundRequest, PayloadError
from webhooks.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER, adapter

URL = "https://gk.example.com/webhooks/sendgrid"
TIMESTAMP = "1715000700"


@pytest.fixture(scope="module")
def private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_key_as_configured(key: ec.EllipticCurvePrivateKey) -> str:
    """What SendGrid's settings page shows: base64 DER, no PEM armour."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def signed_request(body: bytes, key: ec.EllipticCurvePrivateKey) -> InboundRequest:
    signature = key.sign(TIMESTAMP.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        SIGNATURE_HEADER.lower(): base64.b64encode(signature).decode(),
        TIMESTAMP_HEADER: TIMESTAMP,
        "Content-Type": "application/json",
    }
    return InboundRequest("POST", URL, headers, body)


def body_of(payload, name: str) -> bytes:
    return json.dumps(payload("sendgrid", name)).encode()


CASES = [
    (
        "click",
        "click",
        datetime(2024, 5, 6, 13, 1, tzinfo=UTC),
        "c2VuZGdyaWQtY2xpY2stMQ",
        "https://shop.example.com/offer",
    ),
    ("open", "open", datetime(2024, 5, 6, 13, 0, tzinfo=UTC), "c2VuZGdyaWQtb3Blbi0x", None),
    (
        "unsubscribe",
        "unsubscribe",
        datetime(2024, 5, 6, 13, 2, tzinfo=UTC),
        "c2VuZGdyaWQtdW5zdWItMQ",
        "https://u.example.com/unsubscribe",
    ),
    (
        "hard_bounce",
        "hard_bounce",
        datetime(2024, 5, 6, 12, 55, tzinfo=UTC),
        "c2VuZGdyaWQtYm91bmNlLTE",
        None,
    ),
    (
        "soft_bounce",
        "soft_bounce",
        datetime(2024, 5, 6, 12, 55, 10, tzinfo=UTC),
        "c2VuZGdyaWQtYmxvY2tlZC0x",
        None,
    ),
    (
        "deferred",
        "soft_bounce",
        datetime(2024, 5, 6, 12, 54, 20, tzinfo=UTC),
        "c2VuZGdyaWQtZGVmZXJyZWQtMQ",
        None,
    ),
    (
        "complaint",
        "complaint",
        datetime(2024, 5, 6, 13, 3, 20, tzinfo=UTC),
        "c2VuZGdyaWQtc3BhbS0x",
        None,
    ),
    (
        "delivered",
        "delivered",
        datetime(2024, 5, 6, 12, 54, 10, tzinfo=UTC),
        "c2VuZGdyaWQtZGVsaXZlcmVkLTE",
        None,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_documented_event_parses_into_our_normalised_event(payload, case):
    name, kind, occurred_at, event_id, url = case
    (event,) = adapter.parse(InboundRequest("POST", URL, {}, body_of(payload, name))).events
    assert event.kind == kind
    assert event.email == "jane@example.com"
    assert event.occurred_at == occurred_at
    assert event.dedupe_key == f"sendgrid:{event_id}"
    assert (event.contact_id, event.campaign_id) == (42, 7)
    assert event.url == url
    assert event.raw["sg_event_id"] == event_id


def test_a_click_carries_the_user_agent_for_link_scanner_detection(payload):
    (event,) = adapter.parse(InboundRequest("POST", URL, {}, body_of(payload, "click"))).events
    assert event.user_agent is not None
    assert event.user_agent.startswith("Mozilla/5.0")


def test_parsing_the_same_batch_twice_gives_the_same_dedupe_keys(payload):
    body = json.dumps([e for n in ("click", "open", "hard_bounce") for e in payload("sendgrid", n)])
    first = adapter.parse(InboundRequest("POST", URL, {}, body.encode())).events
    second = adapter.parse(InboundRequest("POST", URL, {}, body.encode())).events
    assert [e.dedupe_key for e in first] == [e.dedupe_key for e in second]
    assert len({e.dedupe_key for e in first}) == 3


def test_an_event_without_sg_event_id_gets_a_stable_composite_key(payload):
    events = payload("sendgrid", "click")
    del events[0]["sg_event_id"]
    body = json.dumps(events).encode()
    keys = {adapter.parse(InboundRequest("POST", URL, {}, body)).events[0].dedupe_key for _ in "ab"}
    assert len(keys) == 1
    assert next(iter(keys)).startswith("sendgrid:click|")


def test_non_integer_custom_args_are_ignored(payload):
    events = payload("sendgrid", "open")
    events[0]["gk_contact"] = "not-a-number"
    (event,) = adapter.parse(InboundRequest("POST", URL, {}, json.dumps(events).encode())).events
    assert (event.contact_id, event.campaign_id) == (None, 7)


def test_a_valid_signature_verifies(payload, private_key, now, guard):
    request = signed_request(body_of(payload, "click"), private_key)
    adapter.verify(
        request, [{"public_key": public_key_as_configured(private_key)}], now=now, guard=guard
    )


def test_any_configured_account_may_verify(payload, private_key, now, guard):
    other = public_key_as_configured(ec.generate_private_key(ec.SECP256R1()))
    request = signed_request(body_of(payload, "click"), private_key)
    credentials = [{"public_key": other}, {"public_key": public_key_as_configured(private_key)}]
    adapter.verify(request, credentials, now=now, guard=guard)


def test_a_tampered_body_is_refused(payload, private_key, now, guard):
    request = signed_request(body_of(payload, "click"), private_key)
    tampered = InboundRequest("POST", URL, request.headers, request.body.replace(b"42", b"43"))
    with pytest.raises(AuthenticationError):
        adapter.verify(
            tampered, [{"public_key": public_key_as_configured(private_key)}], now=now, guard=guard
        )


def test_a_signature_from_another_key_is_refused(payload, private_key, now, guard):
    request = signed_request(body_of(payload, "click"), ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(AuthenticationError):
        adapter.verify(
            request, [{"public_key": public_key_as_configured(private_key)}], now=now, guard=guard
        )


def test_a_request_without_signature_headers_is_refused(payload, private_key, now, guard):
    request = InboundRequest("POST", URL, {}, body_of(payload, "click"))
    with pytest.raises(AuthenticationError):
        adapter.verify(
            request, [{"public_key": public_key_as_configured(private_key)}], now=now, guard=guard
        )


def test_no_configured_key_means_no_request_is_accepted(payload, private_key, now, guard):
    request = signed_request(body_of(payload, "click"), private_key)
    with pytest.raises(AuthenticationError):
        adapter.verify(request, [], now=now, guard=guard)
    with pytest.raises(AuthenticationError):
        adapter.verify(request, [{"public_key": "not base64 DER"}], now=now, guard=guard)


@pytest.mark.parametrize("body", [b"{not json", b'{"event": "open"}', b"[1, 2]"])
def test_a_malformed_body_is_a_payload_error(body):
    with pytest.raises(PayloadError):
        adapter.parse(InboundRequest("POST", URL, {}, body))
