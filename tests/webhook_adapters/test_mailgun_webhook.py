"""Mailgun: HMAC-signed JSON objects, single-use tokens, 406 to stop retries."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from webhooks.base import AuthenticationError, InboundRequest, PayloadError, ReplayError
from webhooks.mailgun import adapter

URL = "https://gk.example.com/webhooks/mailgun"
SIGNING_KEY = "key-0123456789abcdef0123456789abcdef"
CREDENTIALS = [{"signing_key": SIGNING_KEY}]


def signed(document: dict, key: str = SIGNING_KEY, token: str | None = None) -> InboundRequest:
    signature = document["signature"]
    if token is not None:
        signature["token"] = token
    message = (signature["timestamp"] + signature["token"]).encode()
    signature["signature"] = hmac.new(key.encode(), message, hashlib.sha256).hexdigest()
    return InboundRequest(
        "POST", URL, {"Content-Type": "application/json"}, json.dumps(document).encode()
    )


CASES = [
    (
        "click",
        "click",
        datetime(2024, 5, 6, 13, 1, 0, 873676, tzinfo=UTC),
        "Ase7i2zsRYeDXztHGENqRA",
        "https://shop.example.com/offer",
    ),
    (
        "open",
        "open",
        datetime(2024, 5, 6, 13, 0, 0, 126405, tzinfo=UTC),
        "Fs7-5t81S2ORm2yf4I-LyA",
        None,
    ),
    (
        "unsubscribe",
        "unsubscribe",
        datetime(2024, 5, 6, 13, 2, 0, 500000, tzinfo=UTC),
        "Ase7i2zsRYeDXztHGENqRB",
        None,
    ),
    (
        "hard_bounce",
        "hard_bounce",
        datetime(2024, 5, 6, 12, 55, 0, 436854, tzinfo=UTC),
        "G9Bn5sl1TC6nu79C8C0bwg",
        None,
    ),
    (
        "soft_bounce",
        "soft_bounce",
        datetime(2024, 5, 6, 12, 55, 10, 200000, tzinfo=UTC),
        "G9Bn5sl1TC6nu79C8C0bwh",
        None,
    ),
    (
        "complaint",
        "complaint",
        datetime(2024, 5, 6, 13, 3, 20, tzinfo=UTC),
        "-Agny091SquKnsrW2NEKUA",
        None,
    ),
    (
        "delivered",
        "delivered",
        datetime(2024, 5, 6, 12, 54, 10, 370000, tzinfo=UTC),
        "CPgfbmQMTCKtHW6uIWtuVe",
        None,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_documented_event_parses_into_our_normalised_event(payload, case):
    name, kind, occurred_at, event_id, url = case
    (event,) = adapter.parse(signed(payload("mailgun", name))).events
    assert event.kind == kind
    assert event.email == "alice@example.com"
    assert abs(event.occurred_at - occurred_at) < timedelta(microseconds=2)
    assert event.dedupe_key == f"mailgun:{event_id}|2024-05-06"
    assert (event.contact_id, event.campaign_id) == (42, 7)
    assert event.url == url


def test_a_click_carries_the_client_user_agent(payload):
    (event,) = adapter.parse(signed(payload("mailgun", "click"))).events
    assert event.user_agent is not None
    assert "Chrome" in event.user_agent


def test_parsing_the_same_request_twice_gives_the_same_dedupe_key(payload):
    request = signed(payload("mailgun", "hard_bounce"))
    assert (
        adapter.parse(request).events[0].dedupe_key == adapter.parse(request).events[0].dedupe_key
    )


def test_a_valid_signature_verifies_and_burns_its_token(payload, now, guard):
    adapter.verify(signed(payload("mailgun", "click")), CREDENTIALS, now=now, guard=guard)
    assert ("mailgun", payload("mailgun", "click")["signature"]["token"]) in guard.used


def test_a_replayed_token_is_refused(payload, now, guard):
    request = signed(payload("mailgun", "click"))
    adapter.verify(request, CREDENTIALS, now=now, guard=guard)
    with pytest.raises(ReplayError):
        adapter.verify(request, CREDENTIALS, now=now, guard=guard)


def test_the_same_token_with_other_event_data_is_a_replay_too(payload, now, guard):
    adapter.verify(signed(payload("mailgun", "click")), CREDENTIALS, now=now, guard=guard)
    with pytest.raises(ReplayError):
        adapter.verify(signed(payload("mailgun", "unsubscribe")), CREDENTIALS, now=now, guard=guard)


def test_a_forged_signature_is_refused_without_burning_the_token(payload, now, guard):
    with pytest.raises(AuthenticationError) as raised:
        adapter.verify(
            signed(payload("mailgun", "click"), key="wrong"), CREDENTIALS, now=now, guard=guard
        )
    assert not isinstance(raised.value, ReplayError)
    assert guard.used == set()


SIGNED_AT = datetime(2024, 5, 6, 13, 5, tzinfo=UTC)  # the captured signature.timestamp


@pytest.mark.parametrize("skew", [timedelta(minutes=16), timedelta(minutes=-16)])
def test_a_timestamp_more_than_fifteen_minutes_away_is_refused(payload, guard, skew):
    with pytest.raises(AuthenticationError):
        adapter.verify(
            signed(payload("mailgun", "click")), CREDENTIALS, now=SIGNED_AT + skew, guard=guard
        )


def test_a_timestamp_within_fifteen_minutes_is_accepted(payload, guard):
    late = SIGNED_AT + timedelta(minutes=14)
    adapter.verify(signed(payload("mailgun", "click")), CREDENTIALS, now=late, guard=guard)


def test_any_configured_signing_key_may_verify(payload, now, guard):
    credentials = [{"signing_key": "key-other"}, *CREDENTIALS]
    adapter.verify(signed(payload("mailgun", "click")), credentials, now=now, guard=guard)


def test_a_subaccount_parent_signature_verifies_with_the_parent_key(payload, now, guard):
    document = payload("mailgun", "click")
    signature = document["signature"]
    message = (signature["timestamp"] + signature["token"]).encode()
    signature["signature"] = "0" * 64
    signature["parent-signature"] = hmac.new(b"key-parent", message, hashlib.sha256).hexdigest()
    request = InboundRequest("POST", URL, {}, json.dumps(document).encode())
    adapter.verify(request, [{"signing_key": "key-parent"}], now=now, guard=guard)


def test_missing_signature_fields_or_credentials_are_refused(payload, now, guard):
    document = payload("mailgun", "click")
    del document["signature"]
    with pytest.raises(AuthenticationError):
        adapter.verify(
            InboundRequest("POST", URL, {}, json.dumps(document).encode()),
            CREDENTIALS,
            now=now,
            guard=guard,
        )
    with pytest.raises(AuthenticationError):
        adapter.verify(signed(payload("mailgun", "click")), [], now=now, guard=guard)


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"signature": {}}'])
def test_a_malformed_body_is_a_payload_error(body):
    with pytest.raises(PayloadError):
        adapter.parse(InboundRequest("POST", URL, {}, body))
