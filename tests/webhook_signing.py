"""Each provider's way of signing a webhook request, played by the tests with keys made here.

SendGrid: ECDSA P-256 over timestamp + body; Mailgun: HMAC-SHA256 of timestamp + token;
Mandrill: HMAC-SHA1 over the configured URL and the form fields; SES: SNS's RSA signature
with a self-signed certificate that the tests serve in place of AWS (outgoing HTTP is a
process edge); Brevo, Mailjet, Postmark: a bearer token or basic auth.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from webhooks.mandrill import SIGNATURE_HEADER as MANDRILL_HEADER
from webhooks.mandrill import signature_for
from webhooks.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER
from webhooks.ses import HASHES, string_to_sign

PUBLIC_BASE_URL = "https://gk.example.com"
SNS_TOPIC = "arn:aws:sns:eu-west-3:123456789012:gatekeeper-ses-events"
MAILGUN_KEY = "key-mailgun-signing-0123456789"
MANDRILL_KEY = "mandrill-webhook-key-0123"
BREVO_TOKEN = "brevo-token-0123456789"
BASIC = {"username": "gatekeeper", "password": "s3cret-0123"}
PROVIDERS = ("sendgrid", "mailgun", "brevo", "mailjet", "postmark", "mandrill", "ses")

Signed = tuple[bytes, dict[str, str]]


def public_key_as_configured(key: ec.EllipticCurvePrivateKey) -> str:
    """What SendGrid's settings page shows: base64 DER, no PEM armour."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def self_signed_certificate(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    start = datetime.now(UTC) - timedelta(days=1)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def basic_auth(username: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


@dataclass
class Signer:
    """Plays every provider: signs captured payloads as the provider would (or forges them)."""

    sendgrid_key: ec.EllipticCurvePrivateKey
    sns_key: rsa.RSAPrivateKey
    sns_certificate: bytes
    # A URL of our own per signer: the SES adapter caches certificates by URL for the process.
    sns_certificate_url: str = field(
        default_factory=lambda: "https://sns.eu-west-3.amazonaws.com/"
        f"SimpleNotificationService-{secrets.token_hex(16)}.pem"
    )

    def credentials(self) -> dict[str, list[dict[str, str]]]:
        """GATEKEEPER_WEBHOOKS for these keys, with a decoy account first where it matters."""
        return {
            "sendgrid": [{"public_key": public_key_as_configured(self.sendgrid_key)}],
            "mailgun": [{"signing_key": "key-other-account"}, {"signing_key": MAILGUN_KEY}],
            "brevo": [{"token": BREVO_TOKEN}],
            "mailjet": [BASIC],
            "postmark": [BASIC],
            "mandrill": [{"webhook_key": MANDRILL_KEY}],
            "ses": [{"topic_arn": SNS_TOPIC}],
        }

    def sign(self, provider: str, payload: Any, *, forged: bool = False) -> Signed:
        """Body and headers of the provider's request; ``forged`` gets one secret wrong."""
        return getattr(self, f"_{provider}")(copy.deepcopy(payload), forged)

    def _sendgrid(self, payload: Any, forged: bool) -> Signed:
        body = json.dumps(payload).encode()
        timestamp = str(int(time.time()))
        key = ec.generate_private_key(ec.SECP256R1()) if forged else self.sendgrid_key
        signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return body, {SIGNATURE_HEADER: base64.b64encode(signature).decode(),
                      TIMESTAMP_HEADER: timestamp, "Content-Type": "application/json"}

    def _mailgun(self, payload: Any, forged: bool) -> Signed:
        # Each delivery attempt gets its own token, as Mailgun's retries are new requests.
        timestamp, token = str(int(time.time())), secrets.token_hex(25)
        key = "key-wrong" if forged else MAILGUN_KEY
        digest = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
        payload["signature"] = {"timestamp": timestamp, "token": token, "signature": digest}
        return json.dumps(payload).encode(), {"Content-Type": "application/json"}

    def _brevo(self, payload: Any, forged: bool) -> Signed:
        token = "wrong" if forged else BREVO_TOKEN
        return json.dumps(payload).encode(), {"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"}

    def _mailjet(self, payload: Any, forged: bool) -> Signed:
        password = "wrong" if forged else BASIC["password"]
        headers = basic_auth(BASIC["username"], password) | {"Content-Type": "application/json"}
        return json.dumps(payload).encode(), headers

    _postmark = _mailjet

    def _mandrill(self, payload: Any, forged: bool) -> Signed:
        fields = [("mandrill_events", json.dumps(payload))]
        key = "wrong" if forged else MANDRILL_KEY
        signature = signature_for(f"{PUBLIC_BASE_URL}/webhooks/mandrill", fields, key)
        return urlencode(fields).encode(), {
            MANDRILL_HEADER: signature, "Content-Type": "application/x-www-form-urlencoded"}

    def _ses(self, envelope: Any, forged: bool) -> Signed:
        envelope["SigningCertURL"] = self.sns_certificate_url
        envelope["SignatureVersion"] = "2"
        signature = self.sns_key.sign(string_to_sign(envelope), padding.PKCS1v15(), HASHES["2"]())
        envelope["Signature"] = base64.b64encode(signature).decode()
        if forged:  # the message changed after SNS signed it
            envelope["Message"] = envelope["Message"].replace("example.com", "example.org")
        return json.dumps(envelope).encode(), {
            "Content-Type": "text/plain; charset=UTF-8", "x-amz-sns-message-type": envelope["Type"]}


def make_signer() -> Signer:
    sns_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sendgrid_key = ec.generate_private_key(ec.SECP256R1())
    return Signer(sendgrid_key, sns_key, self_signed_certificate(sns_key))
