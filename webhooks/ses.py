"""Amazon SES events delivered by Amazon SNS over HTTPS.

The body is an SNS JSON envelope (sent as ``text/plain``). Verification follows AWS's recipe:
the ``TopicArn`` must be one we configured (``topic_arn`` credentials); ``SigningCertURL`` must
be HTTPS on an ``sns.<region>.amazonaws.com[.cn]`` host, checked before anything is fetched;
the RSA signature (``SignatureVersion`` 1 = SHA1, 2 = SHA256, PKCS#1 v1.5) covers ``name\\n
value\\n`` pairs of the fields below, in byte order. The certificate is trusted because it came
over verified TLS from an allow-listed AWS host (no separate chain check).
SNS counts any 200-4xx answer as delivered: only a 5xx earns a retry.
The ``Message`` is SES's JSON: ``eventType`` (event publishing) or ``notificationType``
(identity feedback notifications); one normalised event per affected recipient.
Raw message delivery (no envelope) is not supported: it carries no signature.
Sources: docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html,
docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from webhooks.base import (
    AuthenticationError,
    BaseAdapter,
    InboundRequest,
    Kind,
    NormalizedEvent,
    ParseResult,
    PayloadError,
    ReplayGuard,
    UpstreamError,
    dedupe_key,
    ids_from,
    load_json,
    obj,
    parse_timestamp,
    require_credentials,
    same,
    text,
)

CertificateFetcher = Callable[[str], bytes]

SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
SIGNED_FIELDS["UnsubscribeConfirmation"] = SIGNED_FIELDS["SubscriptionConfirmation"]
HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
FETCH_TIMEOUT_SECONDS = 5
_CERTIFICATES: dict[str, bytes] = {}


def is_sns_url(url: str) -> bool:
    parts = urlsplit(url)
    return (
        parts.scheme == "https"
        and parts.username is None
        and parts.port in (None, 443)
        and bool(SNS_HOST.match(parts.hostname or ""))
    )


def fetch_certificate(url: str) -> bytes:
    """Default fetcher: HTTPS only, no redirects, cached in-process by URL."""
    if not is_sns_url(url):
        raise AuthenticationError(f"refusing to fetch certificate from {url!r}")
    if url not in _CERTIFICATES:
        try:
            response = requests.get(url, timeout=FETCH_TIMEOUT_SECONDS, allow_redirects=False)
            response.raise_for_status()
        except requests.RequestException as exc:
            raise UpstreamError(f"SNS certificate unavailable: {exc}") from exc
        _CERTIFICATES[url] = response.content
    return _CERTIFICATES[url]


def string_to_sign(envelope: Mapping[str, Any]) -> bytes:
    fields = SIGNED_FIELDS.get(text(envelope, "Type") or "")
    if fields is None:
        raise AuthenticationError("unknown SNS message type")
    lines = [f"{name}\n{envelope[name]}\n" for name in fields if isinstance(envelope.get(name), str)]
    return "".join(lines).encode()


def _envelope(request: InboundRequest) -> Mapping[str, Any]:
    data = load_json(request.body)
    if not isinstance(data, dict):
        raise PayloadError("SNS body must be a JSON object")
    return data


class SesAdapter(BaseAdapter):
    name = "ses"

    def __init__(self, fetch: CertificateFetcher = fetch_certificate) -> None:
        self._fetch = fetch

    def verify(
        self,
        request: InboundRequest,
        credentials: Sequence[Mapping[str, str]],
        *,
        now: datetime,
        guard: ReplayGuard,
    ) -> None:
        require_credentials(credentials)
        envelope = _envelope(request)
        topic = text(envelope, "TopicArn") or ""
        if not any(same(cred.get("topic_arn", ""), topic) for cred in credentials if topic):
            raise AuthenticationError("SNS topic is not one we subscribed to")
        algorithm = HASHES.get(text(envelope, "SignatureVersion") or "")
        cert_url = text(envelope, "SigningCertURL") or ""
        if algorithm is None or not is_sns_url(cert_url):
            raise AuthenticationError("SNS signature version or certificate URL not acceptable")
        try:
            signature = base64.b64decode(text(envelope, "Signature") or "", validate=True)
            public_key = x509.load_pem_x509_certificate(self._fetch(cert_url)).public_key()
        except (binascii.Error, ValueError) as exc:
            raise AuthenticationError("SNS signature or certificate unreadable") from exc
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise AuthenticationError("SNS certificate does not hold an RSA key")
        try:
            public_key.verify(signature, string_to_sign(envelope), padding.PKCS1v15(), algorithm())
        except InvalidSignature as exc:
            raise AuthenticationError("SNS signature does not verify") from exc

    def parse(self, request: InboundRequest) -> ParseResult:
        envelope = _envelope(request)
        kind = text(envelope, "Type")
        if kind == "SubscriptionConfirmation":
            url = text(envelope, "SubscribeURL") or ""
            if not is_sns_url(url):
                raise PayloadError("SubscribeURL is not an SNS URL")
            return ParseResult(subscribe_url=url)
        if kind != "Notification":
            return ParseResult()
        try:
            message = json.loads(text(envelope, "Message") or "")
        except ValueError:
            return ParseResult()  # SES's plain-text setup notice, not an event
        if not isinstance(message, dict):
            return ParseResult()
        message_id = text(envelope, "MessageId")
        if not message_id:
            raise PayloadError("SNS notification has no MessageId")
        return ParseResult(events=_events(message_id, message))


def _recipients(name: str, message: Mapping[str, Any]) -> list[str]:
    detail = {
        "Bounce": ("bounce", "bouncedRecipients"),
        "Complaint": ("complaint", "complainedRecipients"),
    }.get(name)
    if detail:
        found = obj(message, detail[0]).get(detail[1])
        return [
            r["emailAddress"]
            for r in found or []
            if isinstance(r, dict) and isinstance(r.get("emailAddress"), str)
        ]
    found = obj(message, "delivery").get("recipients") if name == "Delivery" else None
    found = found or obj(message, "mail").get("destination")
    return [r for r in found or [] if isinstance(r, str)]


def _kind(name: str, message: Mapping[str, Any]) -> Kind:
    if name == "Bounce":
        permanent = text(obj(message, "bounce"), "bounceType") == "Permanent"
        return "hard_bounce" if permanent else "soft_bounce"
    if name == "Subscription":  # list management; a re-subscription is not an unsubscribe
        preferences = obj(obj(message, "subscription"), "newTopicPreferences")
        statuses = preferences.get("topicSubscriptionStatus") or []
        opted_out = preferences.get("unsubscribeAll") is True or any(
            isinstance(s, dict) and s.get("subscriptionStatus") == "OptOut" for s in statuses
        )
        return "unsubscribe" if opted_out else "other"
    simple: dict[str, Kind] = {
        "Complaint": "complaint",
        "Delivery": "delivered",
        "Open": "open",
        "Click": "click",
    }
    return simple.get(name, "other")


def _events(sns_message_id: str, message: Mapping[str, Any]) -> list[NormalizedEvent]:
    name = text(message, "eventType") or text(message, "notificationType") or ""
    detail = obj(message, name[:1].lower() + name[1:])  # "Bounce" -> "bounce", "Click" -> "click"
    mail = obj(message, "mail")
    occurred_at = parse_timestamp(detail.get("timestamp") or mail.get("timestamp"))
    kind = _kind(name, message)
    contact_id, campaign_id = ids_from(obj(mail, "tags"))
    return [
        NormalizedEvent(
            provider="ses",
            kind=kind,
            provider_event=name,
            dedupe_key=dedupe_key("ses", sns_message_id, recipient, kind),
            occurred_at=occurred_at,
            email=recipient,
            contact_id=contact_id,
            campaign_id=campaign_id,
            url=text(detail, "link"),
            user_agent=text(detail, "userAgent"),
            raw=message,
        )
        for recipient in _recipients(name, message)
    ]


adapter = SesAdapter()
