"""The HTTP answer per provider and situation, chosen for each provider's retry rules."""

from __future__ import annotations

import pytest

from webhooks import load_adapters
from webhooks.base import (
    AuthenticationError,
    PayloadError,
    ReplayError,
    UpstreamError,
    WebhookError,
)

OK, FORGED, REPLAYED, MALFORMED, STORAGE_DOWN, CERT_UNREACHABLE = (
    "ok",
    "forged",
    "replayed",
    "malformed",
    "storage down",
    "certificate unreachable",
)
SITUATIONS: dict[str, tuple[WebhookError | None, bool]] = {
    OK: (None, False),
    FORGED: (AuthenticationError("bad signature"), False),
    REPLAYED: (ReplayError("token reused"), False),
    MALFORMED: (PayloadError("not JSON"), False),
    STORAGE_DOWN: (None, True),
    CERT_UNREACHABLE: (UpstreamError("timeout"), False),
}
DEFAULT = {
    OK: 200,
    FORGED: 401,
    REPLAYED: 401,
    MALFORMED: 400,
    STORAGE_DOWN: 503,
    CERT_UNREACHABLE: 503,
}
EXPECTED = {
    "sendgrid": DEFAULT,
    # 406 is Mailgun's "drop it, never retry": right for bytes that will never parse, and for a
    # token already used (the first delivery was stored in the same transaction).
    "mailgun": {**DEFAULT, MALFORMED: 406, REPLAYED: 406},
    "brevo": DEFAULT,
    "mailjet": DEFAULT,
    "postmark": DEFAULT,
    "mandrill": DEFAULT,
    # SNS treats every 2xx-4xx as delivered: only the 5xx answers get retried.
    "ses": DEFAULT,
}
TABLE = [(p, s, code) for p, row in EXPECTED.items() for s, code in row.items()]


@pytest.mark.parametrize(
    ("provider", "situation", "status"), TABLE, ids=[f"{p} {s}" for p, s, _ in TABLE]
)
def test_each_provider_answers_each_situation_as_its_retry_rules_require(
    provider, situation, status
):
    error, transient = SITUATIONS[situation]
    assert load_adapters()[provider].status_for(error, transient=transient) == status


def test_a_transient_failure_wins_over_an_error():
    adapter = load_adapters()["ses"]
    assert adapter.status_for(PayloadError("x"), transient=True) == 503
