"""``POST /api/v1/links``: tracked URLs for a platform's own messages, on both databases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from test_links_helpers import FIREFOX, TODAY, add_contact, set_clock, stored_events

from gatekeeper.api.auth import create_api_key


def mint(client: FlaskClient, auth: dict[str, str], body: dict[str, Any]) -> Any:
    return client.post("/api/v1/links", json=body, headers=auth)


def path_of(tracked_url: str) -> str:
    return tracked_url.removeprefix("http://127.0.0.1:8000")


def test_tracked_links_are_minted_for_contacts_named_any_way(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    set_clock(app, TODAY)
    cid = add_contact(client, auth)
    res = mint(
        client,
        auth,
        {
            "campaign_id": 7,
            "sent_at": "2026-11-22T09:00:00Z",
            "links": [
                {
                    "contact": {"email": "PAUL.martin@example.fr"},
                    "url": "https://shop.example/a",
                    "kind": "click",
                },
                {
                    "contact": {"external_id": "crm-42"},
                    "url": "https://shop.example/b.pdf",
                    "kind": "download",
                },
                {"contact": {"phone": "+33612345678"}, "url": "http://shop.example/été?x=1"},
            ],
        },
    )
    assert res.status_code == 200, res.json
    assert res.json["campaign_id"] == 7 and res.json["sent_at"] == "2026-11-22T09:00:00Z"
    links = res.json["links"]
    assert [(x["index"], x["contact_id"], x["kind"]) for x in links] == [
        (0, cid, "click"),
        (1, cid, "download"),
        (2, cid, "click"),
    ]
    assert links[0]["tracked_url"].startswith("http://127.0.0.1:8000/c/")
    assert links[1]["tracked_url"].startswith("http://127.0.0.1:8000/d/")
    assert links[2]["url"] == "http://shop.example/%C3%A9t%C3%A9?x=1"  # a header-safe URI
    assert "paul" not in links[0]["tracked_url"].lower()


def test_a_minted_link_records_a_click_for_its_campaign_and_redirects(
    app: Flask, client: FlaskClient, auth: dict[str, str], drain: Callable[[], dict[str, int]]
) -> None:
    set_clock(app, TODAY)
    cid = add_contact(client, auth)
    body = {
        "campaign_id": "spring-26",
        "sent_at": "2026-11-22T08:00:00Z",
        "links": [
            {
                "contact": {"external_id": "crm-42"},
                "url": "https://shop.example/été",
                "kind": "click",
            }
        ],
    }
    tracked = mint(client, auth, body).json["links"][0]["tracked_url"]
    res = client.get(path_of(tracked), headers={"User-Agent": FIREFOX})
    assert res.status_code == 302 and res.headers["Location"] == "https://shop.example/%C3%A9t%C3%A9"
    assert drain() == {"clicks": 1}
    (interest,) = stored_events(app, cid, "interest")
    assert interest["campaign_id"] == "spring-26" and interest["counts"] is True


BAD_URLS = {
    "javascript": "javascript:alert(1)",
    "data": "data:text/html,<script>alert(1)</script>",
    "ftp": "ftp://files.example/a",
    "relative": "/account",
    "scheme-relative": "//evil.example/",
    "no host": "https:///path",
    "credentials": "https://user:pass@shop.example/",
    "spaces": "https://shop.example/a b",
    "header injection": "https://shop.example/\r\nSet-Cookie: x=1",
    "too long": "https://shop.example/" + "a" * 2100,
    "not text": 42,
}


@pytest.mark.parametrize("name", list(BAD_URLS))
def test_only_absolute_http_urls_are_signed(client: FlaskClient, auth: dict[str, str], name: str) -> None:
    add_contact(client, auth)
    res = mint(
        client,
        auth,
        {
            "campaign_id": 7,
            "links": [
                {"contact": {"external_id": "crm-42"}, "url": "https://shop.example/ok"},
                {"contact": {"external_id": "crm-42"}, "url": BAD_URLS[name]},
            ],
        },
    )
    assert res.status_code == 422
    assert [(d["index"], d["field"]) for d in res.json["error"]["details"]] == [(1, "url")]


def test_every_bad_item_is_named_by_index_and_nothing_is_returned(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    add_contact(client, auth)
    res = mint(
        client,
        auth,
        {
            "campaign_id": 7,
            "links": [
                {"contact": {"external_id": "crm-42"}, "url": "https://shop.example/ok"},
                {"contact": {"email": "nobody@example.fr"}, "url": "https://shop.example/"},
                {
                    "contact": {"external_id": "crm-42"},
                    "url": "https://shop.example/",
                    "kind": "open",
                },
                {"url": "https://shop.example/"},
            ],
        },
    )
    assert res.status_code == 422
    details = [(d["index"], d["field"]) for d in res.json["error"]["details"]]
    assert sorted(details) == [(1, "contact"), (2, "kind"), (3, "contact")]
    assert "links" not in res.json


@pytest.mark.parametrize("campaign", [None, "", "free text with spaces", -3, True])
def test_the_campaign_id_is_required_and_holds_no_free_text(
    client: FlaskClient, auth: dict[str, str], campaign: Any
) -> None:
    add_contact(client, auth)
    res = mint(
        client,
        auth,
        {
            "campaign_id": campaign,
            "links": [{"contact": {"external_id": "crm-42"}, "url": "https://shop.example/"}],
        },
    )
    assert res.status_code == 422
    assert res.json["error"]["details"][0]["field"] == "campaign_id"


def test_links_need_a_key_with_the_gate_scope(app: Flask, client: FlaskClient) -> None:
    body = {"campaign_id": 7, "links": []}
    assert client.post("/api/v1/links", json=body).status_code == 401
    with app.extensions["gatekeeper.db"].session_scope() as session:
        key = create_api_key(
            session, app.extensions["gatekeeper.context"].hasher, "reader", ("register:read",)
        )
    res = client.post("/api/v1/links", json=body, headers={"Authorization": f"Bearer {key}"})
    assert res.status_code == 403


def test_a_malformed_body_is_a_400(client: FlaskClient, auth: dict[str, str]) -> None:
    assert mint(client, auth, {"campaign_id": 7}).status_code == 400
    assert client.post("/api/v1/links", data="nope", headers=auth).status_code == 400
