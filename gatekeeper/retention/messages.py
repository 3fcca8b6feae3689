"""The messages we write ourselves: rendered from templates/email/<kind>/{subject.txt,
body.txt, body.html} (French first, then English), with the sender's identity, the RFC 2369 /
RFC 8058 unsubscribe headers, and a DKIM signature covering them when a key is configured.

DKIM settings come from the environment (a private key is a secret, never a file in the
repository): ``GATEKEEPER_DKIM_DOMAIN``, ``GATEKEEPER_DKIM_SELECTOR`` and either
``GATEKEEPER_DKIM_PRIVATE_KEY`` (PEM) or ``GATEKEEPER_DKIM_PRIVATE_KEY_FILE``.
"""

from __future__ import annotations

import email.utils
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

import dkim
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from gatekeeper.config import PROJECT_ROOT
from gatekeeper.errors import ConfigError

TEMPLATES = PROJECT_ROOT / "templates" / "email"
# Mailbox providers require h= to cover both unsubscribe headers (RFC 8058 §4).
SIGNED_HEADERS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"mime-version",
    b"content-type",
)


@dataclass(frozen=True, slots=True)
class DkimKey:
    domain: str
    selector: str
    private_key: bytes

    def sign(self, raw: bytes) -> bytes:
        signature: bytes = dkim.sign(
            raw,
            self.selector.encode(),
            self.domain.encode(),
            self.private_key,
            include_headers=list(SIGNED_HEADERS),
        )
        return signature + raw


def dkim_from_environ(environ: Mapping[str, str] | None = None) -> DkimKey | None:
    env = os.environ if environ is None else environ
    domain, selector = env.get("GATEKEEPER_DKIM_DOMAIN"), env.get("GATEKEEPER_DKIM_SELECTOR")
    key = env.get("GATEKEEPER_DKIM_PRIVATE_KEY", "").encode()
    if not key and env.get("GATEKEEPER_DKIM_PRIVATE_KEY_FILE"):
        key = Path(env["GATEKEEPER_DKIM_PRIVATE_KEY_FILE"]).read_bytes()
    if not (domain or selector or key):
        return None
    if not (domain and selector and key):
        raise ConfigError("DKIM needs GATEKEEPER_DKIM_DOMAIN, _SELECTOR and _PRIVATE_KEY(_FILE)")
    return DkimKey(domain, selector, key)


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str


class Renderer:
    def __init__(self, directory: Path = TEMPLATES) -> None:
        self.env = Environment(
            loader=FileSystemLoader(str(directory)),
            undefined=StrictUndefined,
            autoescape=select_autoescape(["html"]),
            keep_trailing_newline=True,
        )

    def render(self, kind: str, values: Mapping[str, Any]) -> Rendered:
        subject = self.env.get_template(f"{kind}/subject.txt").render(values)
        return Rendered(
            " ".join(subject.split()),  # a header is one line
            self.env.get_template(f"{kind}/body.txt").render(values),
            self.env.get_template(f"{kind}/body.html").render(values),
        )


@dataclass(frozen=True, slots=True)
class Envelope:
    """Who writes to whom, and the unsubscribe headers (from LinkSigner)."""

    mail_from: str
    to: str
    list_headers: Mapping[str, str]


def build_message(envelope: Envelope, content: Rendered, now: datetime) -> EmailMessage:
    message = EmailMessage(policy=SMTP)
    message["From"] = envelope.mail_from  # the sender's identity, always (LCEN art. 22)
    message["To"] = envelope.to
    message["Subject"] = content.subject
    message["Date"] = email.utils.format_datetime(now)
    domain = email.utils.parseaddr(envelope.mail_from)[1].rpartition("@")[2] or "localhost"
    message["Message-ID"] = email.utils.make_msgid(domain=domain)
    for name, value in envelope.list_headers.items():
        message[name] = value
    message.set_content(content.text)
    message.add_alternative(content.html, subtype="html")
    return message


def to_bytes(message: EmailMessage, key: DkimKey | None) -> bytes:
    raw = message.as_bytes(policy=SMTP)
    return key.sign(raw) if key is not None else raw
