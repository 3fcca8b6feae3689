"""How a message leaves: SMTP (any relay) or a provider's HTTP send API (Brevo, Mailjet).

Chosen by ``GATEKEEPER_SMTP_URL``:

* ``smtp://user:pass@host:587?starttls=1`` or ``smtps://user:pass@host:465`` (any relay; the
  local sink is ``smtp://127.0.0.1:8025``);
* ``brevo://API_KEY@api.brevo.com`` (POST /v3/smtp/email, header ``api-key``);
* ``mailjet://API_KEY:SECRET@api.mailjet.com`` (POST /v3.1/send, basic auth).

Every transport raises ``TemporarySendError`` (retry later: 4xx SMTP replies, connection
errors, HTTP 429 and 5xx) or ``PermanentSendError`` (5xx SMTP replies, other HTTP 4xx).
HTTP APIs get the rendered headers (List-Unsubscribe…) and sign with the provider's DKIM key.
"""

from __future__ import annotations

import email.utils
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import requests

from gatekeeper.errors import ConfigError, GatekeeperError

TIMEOUT_SECONDS = 30
# Headers an HTTP API sets itself: passing them again is refused or duplicated.
_API_OWN_HEADERS = {
    "from",
    "to",
    "subject",
    "date",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "dkim-signature",
    "message-id",
}


class SendError(GatekeeperError):
    pass


class TemporarySendError(SendError):
    pass


class PermanentSendError(SendError):
    pass


class Transport(Protocol):
    def send(self, message: EmailMessage, raw: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class SmtpTransport:
    host: str
    port: int
    tls: bool = False  # implicit TLS (smtps)
    starttls: bool = False
    username: str | None = None
    password: str | None = None

    def send(self, message: EmailMessage, raw: bytes) -> None:
        sender = email.utils.parseaddr(str(message["From"]))[1]
        recipients = [a for _, a in email.utils.getaddresses([str(message["To"])])]
        try:
            with self._connect() as smtp:
                smtp.sendmail(sender, recipients, raw)
        except smtplib.SMTPResponseException as exc:
            raise _by_code(exc.smtp_code, str(exc.smtp_error)) from exc
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise _by_code(max(codes, default=550), "recipient refused") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise TemporarySendError(f"SMTP: {exc}") from exc

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        if self.tls:
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                self.host, self.port, timeout=TIMEOUT_SECONDS, context=context
            )
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=TIMEOUT_SECONDS)
            if self.starttls:
                smtp.starttls(context=context)
        if self.username:
            smtp.login(self.username, self.password or "")
        return smtp


def _by_code(code: int, text: str) -> SendError:
    kind = TemporarySendError if 400 <= code < 500 else PermanentSendError
    return kind(f"SMTP {code}: {text[:200]}")


def _by_status(response: requests.Response, provider: str) -> None:
    if response.status_code < 300:
        return
    text = f"{provider} HTTP {response.status_code}: {response.text[:200]}"
    if response.status_code == 429 or response.status_code >= 500:
        raise TemporarySendError(text)
    raise PermanentSendError(text)


def _parts(message: EmailMessage) -> tuple[str, str | None]:
    text_part = message.get_body(("plain",))
    html_part = message.get_body(("html",))
    text = text_part.get_content() if text_part is not None else ""
    html = html_part.get_content() if html_part is not None else None
    return str(text), None if html is None else str(html)


def _extra_headers(message: EmailMessage) -> dict[str, str]:
    return {k: str(v) for k, v in message.items() if k.lower() not in _API_OWN_HEADERS}


def _post(session: requests.Session, url: str, provider: str, **kwargs: Any) -> None:
    try:
        response = session.post(url, timeout=TIMEOUT_SECONDS, **kwargs)
    except requests.RequestException as exc:
        raise TemporarySendError(f"{provider}: {exc}") from exc
    _by_status(response, provider)


@dataclass
class BrevoTransport:
    api_key: str
    base_url: str = "https://api.brevo.com"
    http: requests.Session | None = None

    def send(self, message: EmailMessage, raw: bytes) -> None:
        del raw  # the API builds the MIME message itself
        name, address = email.utils.parseaddr(str(message["From"]))
        text, html = _parts(message)
        body: dict[str, Any] = {
            "sender": {"name": name, "email": address},
            "to": [{"email": a} for _, a in email.utils.getaddresses([str(message["To"])])],
            "subject": str(message["Subject"]),
            "textContent": text,
            "headers": _extra_headers(message),
        }
        if html:
            body["htmlContent"] = html
        _post(
            self.http or requests.Session(),
            f"{self.base_url}/v3/smtp/email",
            "Brevo",
            json=body,
            headers={"api-key": self.api_key, "accept": "application/json"},
        )


@dataclass
class MailjetTransport:
    api_key: str
    secret: str
    base_url: str = "https://api.mailjet.com"
    http: requests.Session | None = None

    def send(self, message: EmailMessage, raw: bytes) -> None:
        del raw
        name, address = email.utils.parseaddr(str(message["From"]))
        text, html = _parts(message)
        item: dict[str, Any] = {
            "From": {"Email": address, "Name": name},
            "To": [{"Email": a} for _, a in email.utils.getaddresses([str(message["To"])])],
            "Subject": str(message["Subject"]),
            "TextPart": text,
            "Headers": _extra_headers(message),
        }
        if html:
            item["HTMLPart"] = html
        _post(
            self.http or requests.Session(),
            f"{self.base_url}/v3.1/send",
            "Mailjet",
            json={"Messages": [item]},
            auth=(self.api_key, self.secret),
        )


def transport_from_url(url: str, http: requests.Session | None = None) -> Transport:
    parts = urlsplit(url)
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    query = parse_qs(parts.query)
    match parts.scheme:
        case "smtp" | "smtps":
            tls = parts.scheme == "smtps"
            starttls = query.get("starttls", ["0"])[0].lower() in ("1", "true", "yes")
            return SmtpTransport(
                parts.hostname or "127.0.0.1",
                parts.port or (465 if tls else 25),
                tls,
                starttls,
                user,
                password,
            )
        case "brevo":
            if not user:
                raise ConfigError("brevo://API_KEY@api.brevo.com: the API key is missing")
            return BrevoTransport(user, f"https://{parts.hostname or 'api.brevo.com'}", http)
        case "mailjet":
            if not (user and password):
                raise ConfigError("mailjet://API_KEY:SECRET@api.mailjet.com: key or secret missing")
            return MailjetTransport(user, password, f"https://{parts.hostname or 'api.mailjet.com'}", http)
    raise ConfigError(f"unknown mail transport {parts.scheme!r}: smtp, smtps, brevo or mailjet")
