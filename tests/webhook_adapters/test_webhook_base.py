"""Shared webhook helpers: timestamps, dedupe keys, our ids, headers, the plugin registry."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from webhooks import load_adapters, sendgrid
from webhooks.base import (
    MAX_DEDUPE_KEY_LENGTH,
    Adapter,
    InboundRequest,
    PayloadError,
    as_int,
    dedupe_key,
    ids_from,
    json_array_items,
    pairs_from_text,
    parse_timestamp,
)

MOMENT = datetime(2024, 5, 6, 13, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        1715000460,
        1715000460.0,
        "1715000460",
        " 1715000460 ",
        1715000460000,
        "1715000460000",
        "2024-05-06T13:01:00Z",
        "2024-05-06T15:01:00+02:00",
        "2024-05-06T09:01:00.0000000-04:00",
        "2024-05-06T13:01:00",
    ],
    ids=[
        "int seconds",
        "float seconds",
        "numeric string",
        "padded string",
        "milliseconds",
        "millisecond string",
        "iso zulu",
        "iso offset",
        "iso seven digit fraction",
        "iso naive",
    ],
)
def test_timestamps_in_every_provider_format_become_utc_datetimes(value):
    parsed = parse_timestamp(value)
    assert parsed == MOMENT
    assert parsed.tzinfo == UTC


@pytest.mark.parametrize("value", [None, True, "", "yesterday", float("nan"), [1], 10**30])
def test_an_unreadable_timestamp_is_a_payload_error(value):
    with pytest.raises(PayloadError):
        parse_timestamp(value)


def test_a_short_dedupe_key_is_readable_and_prefixed_by_the_provider():
    assert dedupe_key("brevo", "click", "<m@x>", None, 5) == "brevo:click|<m@x>||5"


def test_a_long_composite_is_hashed_to_a_stable_key_within_the_column():
    url = "https://example.com/" + "x" * 400
    key = dedupe_key("mailjet", "click", 1, url)
    assert key == dedupe_key("mailjet", "click", 1, url)
    assert key.startswith("mailjet:sha256:")
    assert len(key) <= MAX_DEDUPE_KEY_LENGTH
    assert key != dedupe_key("mailjet", "click", 2, url)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (42, 42),
        ("42", 42),
        (" 7 ", 7),
        (["42"], 42),
        ("4.2", None),
        ("abc", None),
        (True, None),
        (None, None),
        (4.0, None),
        ([], None),
        ("-3", None),
        ("+5", 5),
        ("123456789012345678", 123456789012345678),
        ("1234567890123456789", None),
        ("²", None),
    ],
)
def test_only_integer_metadata_values_become_ids(value, expected):
    assert as_int(value) == expected


def test_ids_are_read_from_our_two_keys_only():
    assert ids_from({"gk_contact": "42", "gk_campaign": 7, "user_id": 111}) == (42, 7)
    assert ids_from({}) == (None, None)


@pytest.mark.parametrize(
    "text",
    [
        '{"gk_contact": 42, "gk_campaign": 7}',
        "gk_contact=42&gk_campaign=7",
        "gk_contact=42|gk_campaign=7",
        "gk_contact:42;gk_campaign:7",
    ],
)
def test_ids_carried_in_one_string_are_understood_in_each_documented_form(text):
    assert ids_from(pairs_from_text(text)) == (42, 7)


def test_headers_are_looked_up_case_insensitively():
    request = InboundRequest("POST", "https://x", {"X-Mandrill-Signature": "abc"}, b"")
    assert request.header("x-mandrill-signature") == "abc"
    assert request.header("X-Other") is None


def test_every_provider_adapter_is_registered_as_a_plugin():
    adapters = load_adapters()
    assert set(adapters) >= {
        "sendgrid",
        "mailgun",
        "brevo",
        "mailjet",
        "postmark",
        "mandrill",
        "ses",
    }
    for name, adapter in adapters.items():
        assert adapter.name == name
        assert callable(adapter.verify)
        assert callable(adapter.parse)


def test_adapters_satisfy_the_protocol_statically():
    typed: Adapter = sendgrid.adapter
    assert typed.status_for(None) == 200


ARRAYS = [
    b"[]",
    b" [ ]\n",
    b'[{"event":"open","n":1}]',
    b'[ {"event": "open", "n": [1, 2, {"x": null}]} ,\n {"event": "click", "s": "a,]b"} ]  ',
    '[{"email": "hélène@example.fr", "s": "\\u00e9\\"}"}]'.encode(),
    b'\xef\xbb\xbf[{"bom": true}]',
    '[{"utf16": "é"}]'.encode("utf-16"),
]


@pytest.mark.parametrize("body", ARRAYS, ids=["empty", "blank", "one", "nested", "escapes", "bom", "utf-16"])
def test_array_items_are_the_decoded_events_each_with_its_own_text(body):
    items = json_array_items(body)
    assert [event for event, _ in items] == json.loads(body)
    assert [json.loads(raw) for _, raw in items] == json.loads(body)


NOT_ARRAYS = [
    b"",
    b"[",
    b'[{"a":1},]',
    b'[{"a":1} {"b":2}]',
    b'[{"a":1}] x',
    b'[{"a":1}][]',
    b"[1]",
    b'[{"a":1}, "b"]',
    b'{"a":1}',
    b"\xff\xfe\x00",
    b'[{"a": NaN',
]


@pytest.mark.parametrize("body", NOT_ARRAYS)
def test_array_items_refuse_what_is_not_a_json_array_of_objects(body):
    with pytest.raises(PayloadError):
        json_array_items(body)
