"""Shared helpers of the retention tests (no tests here): an app wired to a real local SMTP
sink, contacts near their deadline, and reads of what was stored and received."""

from __future__ import annotations

import email
import email.policy
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import inspect, text

from gatekeeper.api.auth import SCOPES, create_api_key
from gatekeeper.app import create_app
from gatekeeper.domain.retention import add_years
from gatekeeper.links import links_of
from gatekeeper.retention.tasks import TaskEnv, build_env

BASE_URL = "https://gk.example"
ZEPHYRINE = {
    "external_id": "crm-zq-9137",
    "email": "zephyrine.quillardet@exemple-unique.fr",
    "phone": "+33687654321",
    "first_name": "Zéphyrine",
    "last_name": "Quillardet",
    "audience": "b2c",
    "collected_by": "ACME SAS",
    "source": {"type": "direct", "name": "checkout", "proof_ref": "form-v3"},
    "postal_address": {
        "line1": "17 impasse des Mésanges",
        "postcode": "69007",
        "city": "Lyon",
        "country": "FR",
    },
    "purpose": "marketing",
    "attributes": {"birth_year": 1984, "category": "retail", "notes": "aime le café serré"},
}
# What must not survive anonymisation, anywhere in the register.
ZEPHYRINE_TRACES = (
    "zephyrine",
    "quillardet",
    "+33687654321",
    "0687654321",
    "crm-zq-9137",
    "mésanges",
    "203.0.113.77",
    "traceagent/4.2",
    "café serré",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def close_app(app: Flask) -> None:
    app.extensions["gatekeeper.jobs"].pool.shutdown(wait=True)
    app.extensions["gatekeeper.db"].engine.dispose()
    env = app.extensions.get("gatekeeper.retention")
    if env is not None and env.archive is not None:
        env.archive.dispose()


def api_headers(app: Flask) -> dict[str, str]:
    with app.extensions["gatekeeper.db"].session_scope() as session:
        key = create_api_key(session, app.extensions["gatekeeper.context"].hasher, "tests", SCOPES)
    return {"Authorization": f"Bearer {key}"}


def make_app(settings: Any) -> Iterator[Flask]:
    application = create_app(settings)
    application.config["TESTING"] = True
    yield application
    close_app(application)


def collected_for(deadline_in: timedelta, now: datetime) -> str:
    """A collection date whose 3-year deadline falls ``deadline_in`` from now."""
    return add_years(now + deadline_in, -3).isoformat()


def add_person(client: FlaskClient, auth: dict[str, str], person: dict[str, Any]) -> int:
    res = client.post("/api/v1/contacts", json={"contacts": [person]}, headers=auth)
    assert res.status_code == 200, res.json
    return int(res.json["contacts"][0]["id"])


def run(
    client: FlaskClient, auth: dict[str, str], name: str, as_of: datetime, **extra: Any
) -> dict[str, Any]:
    res = client.post(f"/api/v1/tasks/{name}/run", json={"as_of": as_of.isoformat(), **extra}, headers=auth)
    assert res.status_code == 200, res.json
    body: dict[str, Any] = res.json
    return body


def received(directory: Path) -> list[EmailMessage]:
    messages = []
    for path in sorted(directory.glob("*.eml")):
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        messages.append(parsed)
    return messages


def body_text(message: EmailMessage, subtype: str = "plain") -> str:
    part = message.get_body((subtype,))
    assert part is not None
    return str(part.get_content())


def every_value(app: Flask) -> Iterator[tuple[str, str, str]]:
    """(table, column, value as lower-case text) for every cell of every table."""
    engine = app.extensions["gatekeeper.db"].engine
    with engine.connect() as conn:
        for table in inspect(engine).get_table_names():
            result = conn.execute(text(f'SELECT * FROM "{table}"'))
            columns = list(result.keys())
            for row in result:
                for column, value in zip(columns, row, strict=True):
                    if value is not None:
                        yield table, column, str(value).lower()


def contact_row(app: Flask, cid: int) -> dict[str, Any]:
    with app.extensions["gatekeeper.db"].engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM contacts WHERE id = :id"), {"id": cid}).mappings().one()
    return dict(row)


def utc(moment: str) -> datetime:
    return datetime.fromisoformat(moment).astimezone(UTC)


def pauls(count: int) -> list[dict[str, Any]]:
    return [
        {
            "external_id": f"crm-{i}",
            "email": f"paul{i}@example.fr",
            "first_name": "Paul",
            "audience": "b2c",
            "collected_by": "ACME SAS",
            "purpose": "marketing",
            "source": {"type": "direct", "name": "checkout"},
        }
        for i in range(count)
    ]


class Mailbox:
    """The outgoing-mail edge, doubled: fails as told, then accepts."""

    def __init__(self) -> None:
        self.failures: list[Exception] = []
        self.sent: list[EmailMessage] = []

    def send(self, message: EmailMessage, raw: bytes) -> None:
        del raw
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(message)


# Shared fixtures of the retention tests (imported by the test modules that use them).
@pytest.fixture
def mailbox() -> Mailbox:
    """The outgoing-mail double: the process edge, nothing of ours is mocked."""
    return Mailbox()


@pytest.fixture
def env(app: Flask, mailbox: Mailbox) -> Iterator[TaskEnv]:
    built = build_env(
        app.extensions["gatekeeper.settings"], transport=mailbox, signer=links_of(app), send_rate=0
    )
    yield built
    assert built.archive is not None
    built.archive.dispose()
