"""The person's rights from their preference-centre link: a copy sent to their own address
(through a real local SMTP server), an objection on every channel, erasure (both databases)."""

from __future__ import annotations

import email
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_settings
from flask import Flask
from flask.testing import FlaskClient
from test_links_helpers import TODAY, add_contact, set_clock, signer

from gatekeeper.app import create_app
from gatekeeper.mailsink import start_sink

EMAIL_CHECK = {
    "channel": "email",
    "purpose": "commercial",
    "sender": "ACME SAS",
    "send_at": "2026-11-24T11:00:00+01:00",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mailbox(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    port = free_port()
    controller = start_sink(tmp_path / "mail", port=port)
    yield tmp_path / "mail", port
    controller.stop()


@pytest.fixture
def site(db_url: str, tmp_path: Path, mailbox: tuple[Path, int]) -> Iterator[Flask]:
    app = create_app(make_settings(db_url, tmp_path, smtp_url=f"smtp://127.0.0.1:{mailbox[1]}"))
    yield app
    app.extensions["gatekeeper.jobs"].pool.shutdown(wait=True)
    app.extensions["gatekeeper.db"].engine.dispose()


@pytest.fixture
def person(site: Flask) -> tuple[FlaskClient, dict[str, str], str]:
    from gatekeeper.api.auth import SCOPES, create_api_key

    with site.extensions["gatekeeper.db"].session_scope() as session:
        key = create_api_key(session, site.extensions["gatekeeper.context"].hasher, "t", SCOPES)
    client, auth = site.test_client(), {"Authorization": f"Bearer {key}"}
    set_clock(site, TODAY)
    cid = add_contact(client, auth)
    path = "/p/" + signer(site).preferences(cid)
    return client, auth, path


def post_right(client: FlaskClient, path: str, **fields: str) -> Any:
    page = client.get(path).get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token and "Vos droits sur vos données" in page
    return client.post(f"{path}/rights", data={"csrf_token": token.group(1), **fields})


def blocked_by(client: FlaskClient, auth: dict[str, str]) -> str:
    res = client.post(
        "/api/v1/checks",
        headers=auth,
        json={"campaign": EMAIL_CHECK, "recipients": ["paul.martin@example.fr"], "as_of": "2026-11-24"},
    )
    return str(res.json["verdicts"][0]["reasons"][0])


def test_the_access_copy_goes_to_the_persons_own_address_only(
    person: tuple[FlaskClient, dict[str, str], str], mailbox: tuple[Path, int]
) -> None:
    client, _auth, path = person
    res = post_right(client, path, right="access", to="attacker@example.com")
    assert res.status_code == 200
    assert "Copie envoyée" in res.get_data(as_text=True)
    (sent,) = list(mailbox[0].glob("*.eml"))
    message = email.message_from_bytes(sent.read_bytes())
    assert message["To"] == "paul.martin@example.fr"
    attachments = [p.get_filename() for p in message.walk() if p.get_filename()]
    assert attachments and attachments[0].endswith(".zip")


def test_an_objection_from_the_page_blocks_every_channel_at_once(
    person: tuple[FlaskClient, dict[str, str], str],
) -> None:
    client, auth, path = person
    res = post_right(client, path, right="object")
    assert res.status_code == 200 and "est noté" in res.get_data(as_text=True)
    assert blocked_by(client, auth) == "suppressed.unsubscribe"


def test_erasure_needs_the_tick_then_erases_and_keeps_the_address_blocked(
    person: tuple[FlaskClient, dict[str, str], str],
) -> None:
    client, auth, path = person
    refused = post_right(client, path, right="erase")
    assert refused.status_code == 400
    assert client.get("/api/v1/contacts/1", headers=auth).json["email"] == "paul.martin@example.fr"
    done = post_right(client, path, right="erase", confirm="yes")
    assert done.status_code == 200 and "effacées" in done.get_data(as_text=True)
    view = client.get("/api/v1/contacts/1", headers=auth).json
    assert view["email"] is None and view["retention"]["state"] == "anonymised"
    assert blocked_by(client, auth) == "suppressed.erasure"
    assert client.get(path).status_code == 410  # the link now says the data is gone


def test_a_rights_form_without_its_csrf_token_is_refused(
    person: tuple[FlaskClient, dict[str, str], str],
) -> None:
    client, auth, path = person
    res = client.post(f"{path}/rights", data={"right": "object"})
    assert res.status_code in (400, 403)
    assert blocked_by(client, auth) != "suppressed.unsubscribe"
