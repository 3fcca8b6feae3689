"""The outbox and its sender: retries with backoff, permanent failures, cancellations, the
rate limit; the transports (SMTP on a real local server, Brevo and Mailjet over a doubled
HTTP edge); DKIM covering the unsubscribe headers."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import pytest
import requests
from aiosmtpd.controller import Controller
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from test_retention_helpers import Mailbox, add_person, collected_for, free_port, pauls

from gatekeeper.models import utcnow
from gatekeeper.retention import outbox
from gatekeeper.retention.messages import DkimKey, Envelope, Rendered, build_message, to_bytes
from gatekeeper.retention.tasks import TaskEnv, run_task
from gatekeeper.retention.transports import (
    BrevoTransport,
    MailjetTransport,
    PermanentSendError,
    SmtpTransport,
    TemporarySendError,
    transport_from_url,
)

NOW = utcnow()



def queued(app: Flask, client: FlaskClient, auth: dict[str, str], env: TaskEnv, n: int) -> None:
    collected = collected_for(timedelta(days=15), NOW)
    for person in pauls(n):
        add_person(client, auth, person | {"collected_at": collected})
    run_task(app.extensions["gatekeeper.db"], env, "plan_reconsent", NOW)


def outbox_rows(app: Flask) -> list[tuple[str, int, str | None]]:
    with app.extensions["gatekeeper.db"].engine.connect() as conn:
        rows = conn.execute(text("SELECT state, attempts, last_error FROM outbox ORDER BY id"))
        return [(s, a, e) for s, a, e in rows]


def send(app: Flask, env: TaskEnv, after: timedelta = timedelta(0)) -> dict[str, Any]:
    result: dict[str, Any] = run_task(app.extensions["gatekeeper.db"], env, "send_outbox",
                                      NOW + after)
    return result["done"]


def test_a_temporary_failure_is_retried_after_a_backoff_then_sent(
    app: Flask, client: FlaskClient, auth: dict[str, str], env: TaskEnv, mailbox: Mailbox
) -> None:
    queued(app, client, auth, env, 1)
    mailbox.failures = [TemporarySendError("SMTP 451: try later")]
    assert send(app, env) == {"retry": 1}
    assert outbox_rows(app) == [("queued", 1, "SMTP 451: try later")]
    assert send(app, env, timedelta(seconds=30)) == {}  # not before the backoff
    assert send(app, env, timedelta(minutes=2)) == {"sent": 1}
    assert outbox_rows(app) == [("sent", 2, None)] and len(mailbox.sent) == 1


def test_a_permanent_failure_is_not_retried(
    app: Flask, client: FlaskClient, auth: dict[str, str], env: TaskEnv, mailbox: Mailbox
) -> None:
    queued(app, client, auth, env, 1)
    mailbox.failures = [PermanentSendError("SMTP 550: no such user")]
    assert send(app, env) == {"failed": 1}
    assert send(app, env, timedelta(days=1)) == {}
    assert outbox_rows(app) == [("failed", 1, "SMTP 550: no such user")]


def test_temporary_failures_give_up_after_the_last_attempt(
    app: Flask, client: FlaskClient, auth: dict[str, str], env: TaskEnv, mailbox: Mailbox
) -> None:
    queued(app, client, auth, env, 1)
    mailbox.failures = [TemporarySendError("busy")] * outbox.MAX_ATTEMPTS
    for attempt in range(outbox.MAX_ATTEMPTS):
        send(app, env, timedelta(hours=6 * attempt + 1))
    assert outbox_rows(app) == [("failed", outbox.MAX_ATTEMPTS, "busy")] and mailbox.sent == []


def test_a_message_to_someone_who_objected_meanwhile_is_cancelled(
    app: Flask, client: FlaskClient, auth: dict[str, str], env: TaskEnv, mailbox: Mailbox
) -> None:
    queued(app, client, auth, env, 2)
    entry = {"email": "paul0@example.fr", "reason": "unsubscribe", "channels": "all",
             "occurred_at": NOW.isoformat()}
    assert client.post("/api/v1/suppressions", json={"entries": [entry]}, headers=auth).status_code == 200
    assert send(app, env) == {"cancelled": 1, "sent": 1}
    assert [str(m["To"]) for m in mailbox.sent] == ["paul1@example.fr"]


@pytest.mark.parametrize(("attempts", "delay"), [
    (1, timedelta(minutes=1)), (2, timedelta(minutes=2)), (5, timedelta(minutes=16)),
    (20, timedelta(hours=6)),
])
def test_the_backoff_doubles_and_is_capped(attempts: int, delay: timedelta) -> None:
    assert outbox.backoff(attempts) == delay


def test_the_rate_limit_spaces_the_sends() -> None:
    slept: list[float] = []
    clock = [100.0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    limiter = outbox.SendRateLimiter(4, sleep=sleep, clock=lambda: clock[0])
    for _ in range(5):
        limiter.wait()
    assert slept == [0.25] * 4


# --- transports ----------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "expected"), [
    ("smtp://127.0.0.1:8025", SmtpTransport("127.0.0.1", 8025)),
    ("smtp://me%40acme:s3cr%3At@relay.example:587?starttls=1",
     SmtpTransport("relay.example", 587, False, True, "me@acme", "s3cr:t")),
    ("smtps://u:p@relay.example", SmtpTransport("relay.example", 465, True, False, "u", "p")),
])
def test_an_smtp_url_names_the_relay_its_tls_and_its_login(url: str, expected: SmtpTransport) -> None:
    assert transport_from_url(url) == expected


def test_http_transports_are_named_by_url_with_their_keys() -> None:
    brevo = transport_from_url("brevo://xkeysib-123@api.brevo.com")
    mailjet = transport_from_url("mailjet://pub:priv@api.mailjet.com")
    assert isinstance(brevo, BrevoTransport) and brevo.api_key == "xkeysib-123"
    assert isinstance(mailjet, MailjetTransport) and (mailjet.api_key, mailjet.secret) == ("pub", "priv")


def a_message() -> EmailMessage:
    envelope = Envelope("ACME SAS <newsletter@acme.example>", "paul@example.fr",
                        {"List-Unsubscribe": "<https://gk.example/u/t>, <mailto:n@acme.example>",
                         "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})
    return build_message(envelope, Rendered("Sujet / Subject", "Bonjour", "<p>Bonjour</p>"), NOW)


class Handler:
    def __init__(self, reply: str) -> None:
        self.reply = reply

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          options: Any) -> str:
        return self.reply


@pytest.mark.parametrize(("reply", "error"), [
    ("451 4.3.0 try again later", TemporarySendError), ("550 5.1.1 no such user", PermanentSendError),
])
def test_an_smtp_refusal_is_temporary_or_permanent_by_its_code(reply: str, error: type) -> None:
    port = free_port()
    controller = Controller(Handler(reply), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        with pytest.raises(error):
            message = a_message()
            SmtpTransport("127.0.0.1", port).send(message, message.as_bytes())
    finally:
        controller.stop()


def test_an_unreachable_relay_is_a_temporary_failure() -> None:
    message = a_message()
    with pytest.raises(TemporarySendError):
        SmtpTransport("127.0.0.1", free_port()).send(message, message.as_bytes())


class Recorder(requests.adapters.BaseAdapter):
    """The outgoing-HTTP edge, doubled: records each request, answers with a canned status."""

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status, self.requests = status, []  # type: ignore[var-annotated]

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.requests.append(request)
        response = requests.Response()
        response.status_code, response._content = self.status, b'{"messageId": "x"}'
        response.request = request
        return response

    def close(self) -> None:
        pass


def http(status: int) -> tuple[requests.Session, Recorder]:
    session, recorder = requests.Session(), Recorder(status)
    session.mount("https://", recorder)
    return session, recorder


def test_brevo_gets_the_message_and_its_unsubscribe_headers_with_the_api_key() -> None:
    session, recorder = http(201)
    message = a_message()
    BrevoTransport("xkeysib-1", http=session).send(message, b"")
    (sent,) = recorder.requests
    body = json.loads(sent.body or b"")
    assert sent.url == "https://api.brevo.com/v3/smtp/email" and sent.headers["api-key"] == "xkeysib-1"
    assert body["sender"] == {"name": "ACME SAS", "email": "newsletter@acme.example"}
    assert body["to"] == [{"email": "paul@example.fr"}] and "Bonjour" in body["htmlContent"]
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_mailjet_gets_the_message_with_basic_auth() -> None:
    session, recorder = http(200)
    MailjetTransport("pub", "priv", http=session).send(a_message(), b"")
    (sent,) = recorder.requests
    (item,) = json.loads(sent.body or b"")["Messages"]
    assert sent.url == "https://api.mailjet.com/v3.1/send"
    assert sent.headers["Authorization"] == "Basic " + base64.b64encode(b"pub:priv").decode()
    assert item["To"] == [{"Email": "paul@example.fr"}] and "List-Unsubscribe" in item["Headers"]


@pytest.mark.parametrize(("status", "error"), [
    (429, TemporarySendError), (503, TemporarySendError), (400, PermanentSendError),
    (401, PermanentSendError),
])
def test_an_http_api_refusal_is_temporary_or_permanent_by_its_status(status: int, error: type) -> None:
    session, _ = http(status)
    with pytest.raises(error):
        BrevoTransport("k", http=session).send(a_message(), b"")


def test_the_dkim_signature_covers_both_unsubscribe_headers_and_verifies(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    raw = to_bytes(a_message(), DkimKey("acme.example", "gk2026", pem))
    signature = raw.split(b"\r\n\r\n", 1)[0].decode()
    signed = signature.split("h=", 1)[1].split(";", 1)[0].replace("\r\n", "").replace(" ", "")
    assert {"list-unsubscribe", "list-unsubscribe-post", "from"} <= set(signed.lower().split(":"))
    assert dkim.verify(raw, dnsfunc=lambda name, timeout=5: record)
