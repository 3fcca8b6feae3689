"""Brevo, Mailjet and Postmark sign nothing: basic auth or a token, compared in constant time."""

from __future__ import annotations

import base64

import pytest

from webhooks import brevo, mailjet, postmark
from webhooks.base import AuthenticationError, InboundRequest

ADAPTERS = [brevo.adapter, mailjet.adapter, postmark.adapter]
BASIC = [{"username": "gatekeeper", "password": "s3cret"}]
TOKEN = [{"token": "tok-123"}]


def request_with(headers: dict[str, str]) -> InboundRequest:
    return InboundRequest("POST", "https://gk.example.com/webhooks/x", headers, b"{}")


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_matching_basic_auth_verifies(adapter, now, guard):
    adapter.verify(request_with(basic("gatekeeper", "s3cret")), BASIC, now=now, guard=guard)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_a_matching_bearer_token_verifies(adapter, now, guard):
    adapter.verify(request_with({"Authorization": "Bearer tok-123"}), TOKEN, now=now, guard=guard)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_a_token_in_a_named_custom_header_verifies(adapter, now, guard):
    credentials = [{"token": "tok-123", "header": "X-Webhook-Token"}]
    adapter.verify(request_with({"x-webhook-token": "tok-123"}), credentials, now=now, guard=guard)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_any_configured_account_may_verify(adapter, now, guard):
    credentials = [{"username": "other", "password": "x"}, *BASIC]
    adapter.verify(request_with(basic("gatekeeper", "s3cret")), credentials, now=now, guard=guard)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("gatekeeper", "wrong"),
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Bearer tok-1234"},
        {"Authorization": "tok-123"},
    ],
    ids=["missing", "wrong password", "garbage", "wrong token", "token without scheme"],
)
def test_wrong_or_missing_credentials_are_refused(adapter, headers, now, guard):
    with pytest.raises(AuthenticationError):
        adapter.verify(request_with(headers), [*BASIC, *TOKEN], now=now, guard=guard)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda a: a.name)
def test_no_configured_credentials_refuses_everything(adapter, now, guard):
    with pytest.raises(AuthenticationError):
        adapter.verify(request_with(basic("gatekeeper", "s3cret")), [], now=now, guard=guard)
