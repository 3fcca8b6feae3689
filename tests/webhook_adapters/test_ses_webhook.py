"""SES through SNS: RSA-signed envelopes, certificate from an allow-listed AWS host only."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from webhooks.base import AuthenticationError, InboundRequest, PayloadError, UpstreamError
from webhooks.ses import HASHES, SesAdapter, is_sns_url, string_to_sign

URL = "https://gk.example.com/webhooks/ses"
TOPIC = "arn:aws:sns:eu-west-3:123456789012:gatekeeper-ses-events"
CREDENTIALS = [{"topic_arn": TOPIC}]


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def certificate_pem(signing_key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    start = datetime(2024, 1, 1, tzinfo=UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(signing_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=365))
        .sign(signing_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


class RecordingFetcher:
    """Outgoing HTTP is a process edge: this double serves our self-signed certificate."""

    def __init__(self, pem: bytes) -> None:
        self.pem = pem
        self.urls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        return self.pem


@dataclass
class Sns:
    """SNS as the tests play it: our signing key, the certificate fetcher, the adapter."""

    key: rsa.RSAPrivateKey
    fetcher: RecordingFetcher
    adapter: SesAdapter

    def sign(self, envelope: dict, version: str = "1", key: rsa.RSAPrivateKey | None = None):
        envelope["SignatureVersion"] = version
        signer = key or self.key
        signature = signer.sign(string_to_sign(envelope), padding.PKCS1v15(), HASHES[version]())
        envelope["Signature"] = base64.b64encode(signature).decode()
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "x-amz-sns-message-type": envelope["Type"],
        }
        return InboundRequest("POST", URL, headers, json.dumps(envelope).encode())


@pytest.fixture
def sns(signing_key: rsa.RSAPrivateKey, certificate_pem: bytes) -> Sns:
    fetcher = RecordingFetcher(certificate_pem)
    return Sns(signing_key, fetcher, SesAdapter(fetch=fetcher))


CASES = [
    (
        "click",
        "click",
        "Click",
        datetime(2024, 5, 6, 12, 21, 0, 570000, tzinfo=UTC),
        "https://shop.example.com/offer",
    ),
    ("open", "open", "Open", datetime(2024, 5, 6, 12, 20, tzinfo=UTC), None),
    (
        "unsubscribe",
        "unsubscribe",
        "Subscription",
        datetime(2024, 5, 6, 12, 22, 0, 340000, tzinfo=UTC),
        None,
    ),
    ("soft_bounce", "soft_bounce", "Bounce", datetime(2024, 5, 6, 12, 15, 10, tzinfo=UTC), None),
    ("complaint", "complaint", "Complaint", datetime(2024, 5, 6, 12, 30, tzinfo=UTC), None),
    (
        "delivered",
        "delivered",
        "Delivery",
        datetime(2024, 5, 6, 12, 0, 50, 184000, tzinfo=UTC),
        None,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_documented_event_parses_into_our_normalised_event(sns, payload, case):
    name, kind, provider_event, occurred_at, url = case
    envelope = payload("ses", name)
    (event,) = sns.adapter.parse(sns.sign(envelope)).events
    assert event.kind == kind
    assert event.provider_event == provider_event
    assert event.email == "recipient@example.com"
    assert event.occurred_at == occurred_at
    assert event.dedupe_key == f"ses:{envelope['MessageId']}|recipient@example.com|{kind}"
    assert event.url == url
    assert event.raw["mail"]["messageId"].startswith("0102018f4d7e6c1a")
    if provider_event != "Delivery":  # identity feedback notifications carry no tags
        assert (event.contact_id, event.campaign_id) == (42, 7)


def test_a_bounce_gives_one_event_per_bounced_recipient(sns, payload):
    envelope = payload("ses", "hard_bounce")
    events = sns.adapter.parse(sns.sign(envelope)).events
    assert [(e.kind, e.email) for e in events] == [
        ("hard_bounce", "recipient@example.com"),
        ("hard_bounce", "other@example.com"),
    ]
    assert len({e.dedupe_key for e in events}) == 2
    assert events[0].occurred_at == datetime(2024, 5, 6, 12, 15, 0, 669000, tzinfo=UTC)


def test_parsing_twice_gives_the_same_dedupe_keys(sns, payload):
    request = sns.sign(payload("ses", "hard_bounce"))
    assert [e.dedupe_key for e in sns.adapter.parse(request).events] == [
        e.dedupe_key for e in sns.adapter.parse(request).events
    ]


def test_a_resubscription_is_not_an_unsubscribe(sns, payload):
    envelope = payload("ses", "unsubscribe")
    message = json.loads(envelope["Message"])
    message["subscription"]["newTopicPreferences"] = {
        "unsubscribeAll": False,
        "topicSubscriptionStatus": [{"topicName": "newsletter", "subscriptionStatus": "OptIn"}],
    }
    envelope["Message"] = json.dumps(message)
    assert sns.adapter.parse(sns.sign(envelope)).events[0].kind == "other"


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_valid_signature_verifies_in_both_versions(sns, payload, version, now, guard):
    request = sns.sign(payload("ses", "open"), version)  # "open" has a Subject
    sns.adapter.verify(request, CREDENTIALS, now=now, guard=guard)
    assert sns.fetcher.urls == [payload("ses", "open")["SigningCertURL"]]


def test_a_subscription_confirmation_verifies_and_yields_its_subscribe_url(
    sns, payload, now, guard
):
    envelope = payload("ses", "subscription_confirmation")
    request = sns.sign(envelope)
    sns.adapter.verify(request, CREDENTIALS, now=now, guard=guard)
    result = sns.adapter.parse(request)
    assert result.events == []
    assert result.subscribe_url == envelope["SubscribeURL"]


def test_a_subscribe_url_off_aws_is_refused(sns, payload):
    envelope = payload("ses", "subscription_confirmation")
    envelope["SubscribeURL"] = "https://attacker.example.com/?Action=ConfirmSubscription"
    with pytest.raises(PayloadError):
        sns.adapter.parse(sns.sign(envelope))


def test_a_tampered_message_is_refused(sns, payload, now, guard):
    envelope = payload("ses", "click")
    request = sns.sign(envelope)
    tampered = json.loads(request.body)
    tampered["Message"] = tampered["Message"].replace("recipient@", "victim@")
    forged = InboundRequest("POST", URL, request.headers, json.dumps(tampered).encode())
    with pytest.raises(AuthenticationError):
        sns.adapter.verify(forged, CREDENTIALS, now=now, guard=guard)


def test_a_signature_from_another_key_is_refused(sns, payload, now, guard):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(AuthenticationError):
        sns.adapter.verify(
            sns.sign(payload("ses", "click"), key=other), CREDENTIALS, now=now, guard=guard
        )


def test_a_topic_we_did_not_configure_is_refused_without_fetching(sns, payload, now, guard):
    request = sns.sign(payload("ses", "click"))
    for credentials in ([{"topic_arn": TOPIC + "-other"}], []):
        with pytest.raises(AuthenticationError):
            sns.adapter.verify(request, credentials, now=now, guard=guard)
    assert sns.fetcher.urls == []


@pytest.mark.parametrize(
    "cert_url",
    [
        "https://sns.eu-west-3.amazonaws.com.attacker.example/cert.pem",
        "http://sns.eu-west-3.amazonaws.com/cert.pem",
        "https://attacker.example/sns.eu-west-3.amazonaws.com/cert.pem",
        "https://user@sns.eu-west-3.amazonaws.com/cert.pem",
        "https://sns.eu-west-3.amazonaws.com:8443/cert.pem",
        "https://s3.amazonaws.com/cert.pem",
    ],
)
def test_a_certificate_host_off_the_allow_list_is_refused_without_fetching(
    sns, payload, cert_url, now, guard
):
    envelope = payload("ses", "click")
    envelope["SigningCertURL"] = cert_url
    with pytest.raises(AuthenticationError):
        sns.adapter.verify(sns.sign(envelope), CREDENTIALS, now=now, guard=guard)
    assert sns.fetcher.urls == []


@pytest.mark.parametrize(
    "url",
    ["https://sns.us-east-1.amazonaws.com/x.pem", "https://sns.cn-north-1.amazonaws.com.cn/x.pem"],
)
def test_regional_and_china_sns_hosts_are_allowed(url):
    assert is_sns_url(url)


def test_an_unknown_signature_version_is_refused(sns, payload, now, guard):
    request = sns.sign(payload("ses", "click"))
    envelope = json.loads(request.body)
    envelope["SignatureVersion"] = "3"
    with pytest.raises(AuthenticationError):
        sns.adapter.verify(
            InboundRequest("POST", URL, {}, json.dumps(envelope).encode()),
            CREDENTIALS,
            now=now,
            guard=guard,
        )


def test_an_unreachable_certificate_is_an_upstream_error(sns, payload, now, guard):
    def unreachable(url: str) -> bytes:
        raise UpstreamError("timeout")

    fetch: Callable[[str], bytes] = unreachable
    with pytest.raises(UpstreamError):
        SesAdapter(fetch=fetch).verify(
            sns.sign(payload("ses", "click")), CREDENTIALS, now=now, guard=guard
        )


def test_the_plain_text_setup_notice_carries_no_events(sns, payload):
    envelope = payload("ses", "click")
    envelope["Message"] = "Successfully validated SNS topic for Amazon SES event publishing."
    assert sns.adapter.parse(sns.sign(envelope)).events == []


@pytest.mark.parametrize("body", [b"{not json", b"[]"])
def test_a_malformed_body_is_a_payload_error(sns, body):
    with pytest.raises(PayloadError):
        sns.adapter.parse(InboundRequest("POST", URL, {}, body))
