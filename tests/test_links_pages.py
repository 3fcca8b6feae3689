"""The public pages through HTTP (Flask test client): what the person gets and what is stored,
on SQLite and PostgreSQL. Browser-driven versions of the same journeys: test_pages_browser.py."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from test_links_helpers import (
    FIREFOX,
    RECONSENT_DAY,
    TODAY,
    add_contact,
    contact_view,
    email_hash,
    erase,
    links,
    set_clock,
    signer,
    stored_events,
    suppressions,
)
from werkzeug.test import TestResponse

from gatekeeper.register import clocks
from gatekeeper.spool import Spool

ONE_CLICK = {"List-Unsubscribe": "One-Click"}
Drain = Callable[[], dict[str, int]]


@pytest.fixture
def paul(app: Flask, client: FlaskClient, auth: dict[str, str]) -> int:
    set_clock(app, TODAY)
    return add_contact(client, auth)


def page(res: TestResponse) -> str:
    return res.get_data(as_text=True)


def csrf_of(res: TestResponse) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page(res))
    assert found, page(res)
    return found.group(1)


def form_post(client: FlaskClient, path: str, **fields: str) -> TestResponse:
    """GET the page (which sets the CSRF cookie), then POST its form with these fields."""
    token = csrf_of(client.get(path))
    return client.post(path, data={"csrf_token": token, **fields})


# --- unsubscribe --------------------------------------------------------------------------


def test_the_unsubscribe_page_shows_one_button_and_a_get_records_nothing(
    app: Flask, client: FlaskClient, paul: int
) -> None:
    res = client.get(f"/u/{signer(app).unsubscribe(paul, 7)}")
    assert res.status_code == 200
    html = page(res)
    assert html.count("<button") == 1 and "Me désinscrire" in html
    # Nothing personal: the link is often forwarded, and link scanners fetch it.
    assert "example.fr" not in html and "Martin" not in html and "•••" not in html
    assert stored_events(app, paul, "opposition") == [] and suppressions(app) == []


def test_the_unsubscribe_page_links_to_the_preference_centre_of_the_same_person_and_campaign(
    app: Flask, client: FlaskClient, paul: int
) -> None:
    token = signer(app).unsubscribe(paul, 7)
    html = page(client.get(f"/u/{token}?lang=en"))
    link = re.search(r'<a href="([^"]+)">Manage my preferences</a>', html)
    assert link is not None and link.group(1) == f"/u/{token}/preferences?lang=en"
    res = client.get(link.group(1))
    assert res.status_code == 303
    location = res.headers["Location"]
    assert location.startswith("/p/") and location.endswith("?lang=en")
    claims = signer(app).load("preferences", location[3:].split("?")[0])
    assert (claims.contact_id, claims.campaign_id) == (paul, 7)
    preferences = client.get(location)
    assert preferences.status_code == 200 and "Your contact preferences" in page(preferences)
    assert stored_events(app, paul, "opposition") == [] and suppressions(app) == []


def test_the_preference_link_of_a_bad_or_erased_unsubscribe_token_leads_nowhere(
    app: Flask, client: FlaskClient, paul: int
) -> None:
    token = signer(app).unsubscribe(paul, 7)
    tampered = client.get(f"/u/{token[:-4]}AAAA/preferences")
    assert tampered.status_code == 400 and "Location" not in tampered.headers
    other = client.get(f"/u/{signer(app).preferences(paul, 7)}/preferences")  # not an unsubscribe token
    assert other.status_code == 400
    erase(app, paul)
    gone = client.get(f"/u/{token}/preferences")
    assert gone.status_code == 410 and "Location" not in gone.headers


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_a_one_click_post_unsubscribes_at_once_and_keeps_the_proof(
    app: Flask, client: FlaskClient, auth: dict[str, str], paul: int, encoding: str
) -> None:
    bare = app.test_client(use_cookies=False)  # mailbox providers send no cookie
    kwargs: dict[str, Any] = {"content_type": "multipart/form-data"} if encoding == "multipart" else {}
    res = bare.post(
        f"/u/{signer(app).unsubscribe(paul, 7)}",
        data=ONE_CLICK,
        headers={"User-Agent": "Gmail one-click"},
        **kwargs,
    )
    assert res.status_code == 200 and "Location" not in res.headers
    assert "Vous êtes désinscrit(e)" in page(res)
    (objection,) = stored_events(app, paul, "opposition")
    assert objection["channels"] == ["email"] and objection["via"] == "link"
    assert objection["one_click"] is True and objection["campaign_id"] == 7
    assert objection["ip"] == "127.0.0.1" and objection["user_agent"] == "Gmail one-click"
    assert objection["occurred_at"] == "2026-11-22T10:00:00Z" and objection["origin"] == "link"
    assert (email_hash(app), "unsubscribe", "email") in suppressions(app)
    listed = {
        (s["coordinate"], s["reason"], s["channels"])
        for s in contact_view(client, auth, paul)["suppressions"]
    }
    assert listed == {("email", "unsubscribe", "email"), ("phone", "unsubscribe", "email")}


def test_the_page_button_posts_the_one_click_body_and_is_told_apart_in_the_proof(
    app: Flask, client: FlaskClient, paul: int
) -> None:
    path = f"/u/{signer(app).unsubscribe(paul, 7)}"
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]+)">', page(client.get(path))))
    assert fields == {"List-Unsubscribe": "One-Click", "source": "page"}
    assert client.post(path, data=fields).status_code == 200
    (objection,) = stored_events(app, paul, "opposition")
    assert objection["form_id"] == "gatekeeper.unsubscribe_page" and objection["one_click"] is False


def test_unsubscribing_twice_records_one_objection(app: Flask, client: FlaskClient, paul: int) -> None:
    path = f"/u/{signer(app).unsubscribe(paul, 7)}"
    client.post(path, data=ONE_CLICK)
    again = client.post(path, data=ONE_CLICK)
    assert again.status_code == 200 and "déjà désinscrit" in page(again)
    assert len(stored_events(app, paul, "opposition")) == 1
    assert len(suppressions(app)) == 2  # the e-mail and the phone, once each


def test_a_post_without_the_one_click_body_changes_nothing(
    app: Flask, client: FlaskClient, paul: int
) -> None:
    res = client.post(f"/u/{signer(app).unsubscribe(paul, 7)}", data={"unsubscribe": "yes"})
    assert res.status_code == 400
    assert stored_events(app, paul, "opposition") == []


def test_an_sms_unsubscribe_objects_to_sms_only(app: Flask, client: FlaskClient, paul: int) -> None:
    client.post(f"/u/{signer(app).unsubscribe(paul, 7, 'sms')}", data=ONE_CLICK)
    (objection,) = stored_events(app, paul, "opposition")
    assert objection["channels"] == ["sms"]


# --- tampered, expired, erased --------------------------------------------------------------

TOKENS = {
    "u": lambda app, cid: signer(app).unsubscribe(cid, 7),
    "r": lambda app, cid: signer(app).reconsent(cid, datetime(2028, 6, 9, 22, tzinfo=UTC)),
    "p": lambda app, cid: signer(app).preferences(cid, 7),
    "c": lambda app, cid: signer(app).tracked("click", cid, 7, "https://shop.example/", TODAY),
    "d": lambda app, cid: signer(app).tracked("download", cid, 7, "https://shop.example/a.pdf", TODAY),
}
REQUESTS = [
    ("u", "GET"),
    ("u", "POST"),
    ("r", "GET"),
    ("r", "POST"),
    ("p", "GET"),
    ("p", "POST"),
    ("c", "GET"),
    ("c", "HEAD"),
    ("d", "GET"),
]


def send(client: FlaskClient, method: str, path: str) -> TestResponse:
    data = ONE_CLICK | {"answer": "keep", "email": "yes"} if method == "POST" else None
    return client.open(path, method=method, data=data, headers={"User-Agent": FIREFOX})


@pytest.mark.parametrize(("prefix", "method"), REQUESTS)
def test_a_tampered_link_gets_a_400_page_and_records_nothing(
    app: Flask, client: FlaskClient, paul: int, prefix: str, method: str
) -> None:
    token = TOKENS[prefix](app, paul)
    tampered = token[:-3] + ("abc" if not token.endswith("abc") else "xyz")
    res = send(client, method, f"/{prefix}/{tampered}")
    assert res.status_code == 400 and "Location" not in res.headers
    if method != "HEAD":
        assert "Lien invalide" in page(res) and "Rien n&#39;a été enregistré" in page(res)
    assert stored_events(app, paul) == [] and suppressions(app) == []


@pytest.mark.parametrize(("prefix", "method"), REQUESTS)
def test_an_expired_link_gets_a_410_page_and_records_nothing(
    app: Flask, client: FlaskClient, paul: int, prefix: str, method: str
) -> None:
    set_clock(app, TODAY - timedelta(days=5 * 366))
    token = TOKENS[prefix](app, paul)
    set_clock(app, TODAY)
    res = send(client, method, f"/{prefix}/{token}")
    assert res.status_code == 410 and "Location" not in res.headers
    assert stored_events(app, paul) == [] and suppressions(app) == []


def test_an_expired_tracked_link_still_offers_where_it_led(
    app: Flask, client: FlaskClient, paul: int
) -> None:
    set_clock(app, TODAY - timedelta(days=5 * 366))
    token = signer(app).tracked("click", paul, 7, "https://shop.example/old", TODAY)
    set_clock(app, TODAY)
    res = client.get(f"/c/{token}")
    assert res.status_code == 410 and 'href="https://shop.example/old"' in page(res)


@pytest.mark.parametrize(("prefix", "method"), [r for r in REQUESTS if r[0] in "urp"])
def test_an_erased_person_gets_a_clear_page_and_nothing_is_recorded(
    app: Flask, client: FlaskClient, paul: int, prefix: str, method: str
) -> None:
    token = TOKENS[prefix](app, paul)
    erase(app, paul)
    res = send(client, method, f"/{prefix}/{token}")
    if (prefix, method) == ("u", "GET"):
        # The unsubscribe page reads nothing (it would tell whoever holds a forwarded link
        # that the person's data were erased): its button's POST says so to the person.
        assert res.status_code == 200 and "Me désinscrire" in page(res)
        res = send(client, "POST", f"/{prefix}/{token}")
    # A one-click POST gets 200: what the sender asked for is already true.
    assert res.status_code == (200 if prefix == "u" else 410)
    assert "Vos données ont été effacées" in page(res)
    assert stored_events(app, paul) == [] and suppressions(app) == []


@pytest.mark.parametrize("prefix", ["c", "d"])
def test_a_click_of_an_erased_person_still_redirects_but_records_nothing(
    app: Flask, client: FlaskClient, paul: int, prefix: str, drain: Drain
) -> None:
    token = TOKENS[prefix](app, paul)
    erase(app, paul)
    res = client.get(f"/{prefix}/{token}", headers={"User-Agent": FIREFOX})
    assert res.status_code == 302 and res.headers["Location"].startswith("https://shop.example/")
    assert drain() == {"clicks": 1}  # handed to the drainer, which stores nothing for them
    assert stored_events(app, paul) == []


# --- reconsent ----------------------------------------------------------------------------


def reconsent_path(app: Flask, cid: int) -> str:
    set_clock(app, RECONSENT_DAY)
    return f"/r/{signer(app).reconsent(cid, datetime(2028, 6, 9, 22, tzinfo=UTC))}"


def test_the_reconsent_page_explains_what_is_kept_and_until_when(
    app: Flask, client: FlaskClient, paul: int
) -> None:
    res = client.get(reconsent_path(app, paul))
    assert res.status_code == 200
    html = page(res)
    for held in (
        "p•••@example.fr",
        "•• •• •• 78",
        "vos nom et prénom",
        "votre adresse postale",
        "historique de nos échanges",
    ):
        assert held in html
    assert "seront supprimées le 10 juin 2028" in html
    assert "nous les garderons jusqu&#39;au 20 mai 2031" in html
    assert 'value="keep"' in html and 'value="stop"' in html
    assert stored_events(app, paul) == []


def test_keep_records_a_reconsent_with_proof_and_restarts_the_clock(
    app: Flask, client: FlaskClient, auth: dict[str, str], paul: int
) -> None:
    res = form_post(client, reconsent_path(app, paul), answer="keep")
    assert res.status_code == 200 and "20 mai 2031" in page(res)
    (consent,) = stored_events(app, paul, "consent")
    assert (consent["channel"], consent["given"], consent["method"]) == ("email", True, "reconsent")
    assert consent["prechecked"] is False and consent["sender"] == "ACME SAS"
    assert consent["ip"] == "127.0.0.1" and consent["text_version"].startswith("reconsent.")
    retention = contact_view(client, auth, paul)["retention"]
    assert retention["deadline"] == "2031-05-20T10:00:00Z" and retention["state"] == "active"


def test_an_ex_client_who_keeps_becomes_a_prospect(
    app: Flask, client: FlaskClient, auth: dict[str, str], paul: int
) -> None:
    client.post(
        "/api/v1/events",
        headers=auth,
        json={
            "events": [
                {
                    "contact": {"external_id": "crm-42"},
                    "type": "purchase",
                    "occurred_at": "2025-07-01",
                    "product_category": "coffee",
                    "seller": "ACME SAS",
                }
            ]
        },
    )
    assert contact_view(client, auth, paul)["retention"]["clock"] == "client"
    form_post(client, reconsent_path(app, paul), answer="keep")
    retention = contact_view(client, auth, paul)["retention"]
    assert retention["clock"] == "prospect" and retention["deadline"] == "2031-05-20T10:00:00Z"


def test_stop_records_a_refusal_and_an_objection_on_every_channel(
    app: Flask, client: FlaskClient, auth: dict[str, str], paul: int
) -> None:
    res = form_post(client, reconsent_path(app, paul), answer="stop")
    assert res.status_code == 200 and "Nous ne vous contacterons plus" in page(res)
    (consent,) = stored_events(app, paul, "consent")
    assert (consent["given"], consent["method"]) == (False, "reconsent")
    (objection,) = stored_events(app, paul, "opposition")
    assert objection["channels"] == ["all"]
    assert (email_hash(app), "unsubscribe", "all") in suppressions(app)
    assert contact_view(client, auth, paul)["retention"]["state"] == "expired"


def test_answering_twice_records_once(app: Flask, client: FlaskClient, paul: int) -> None:
    path = reconsent_path(app, paul)
    form_post(client, path, answer="keep")
    form_post(client, path, answer="keep")
    assert len(stored_events(app, paul, "consent")) == 1


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_after_the_deadline_the_reconsent_link_says_so_and_records_nothing(
    app: Flask, client: FlaskClient, paul: int, method: str
) -> None:
    path = reconsent_path(app, paul)
    token = csrf_of(client.get(path))
    set_clock(app, datetime(2028, 6, 10, 8, 0, tzinfo=UTC))
    res = client.open(path, method=method, data={"csrf_token": token, "answer": "keep"})
    assert res.status_code == 410
    assert "La date limite du 10 juin 2028 est passée" in page(res)
    assert stored_events(app, paul) == []


@pytest.mark.parametrize("answer", ["", "maybe"])
def test_a_reconsent_post_without_a_known_answer_records_nothing(
    app: Flask, client: FlaskClient, paul: int, answer: str
) -> None:
    res = form_post(client, reconsent_path(app, paul), answer=answer)
    assert res.status_code == 400 and stored_events(app, paul) == []


# --- CSRF ---------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["r", "p"])
def test_forms_refuse_a_post_without_the_csrf_pair(
    app: Flask, client: FlaskClient, paul: int, prefix: str
) -> None:
    path = reconsent_path(app, paul) if prefix == "r" else f"/p/{signer(app).preferences(paul)}"
    fields = {"answer": "stop", "email": "no"}
    token = csrf_of(client.get(path))
    stranger = app.test_client()  # a forged cross-site post: no cookie of ours
    assert stranger.post(path, data=fields | {"csrf_token": token}).status_code == 400
    assert client.post(path, data=fields).status_code == 400  # cookie but no field
    assert client.post(path, data=fields | {"csrf_token": "0" * 64}).status_code == 400
    res = client.post(path, data=fields | {"csrf_token": token})
    assert res.status_code == 200, page(res)


def test_a_csrf_refusal_explains_itself_and_records_nothing(app: Flask, paul: int) -> None:
    res = app.test_client().post(f"/p/{signer(app).preferences(paul)}", data={"email": "no"})
    assert res.status_code == 400 and "Le formulaire a expiré" in page(res)
    assert stored_events(app, paul) == []


# --- preferences --------------------------------------------------------------------------


def test_the_preference_centre_shows_each_channel_and_the_deadline_in_words(
    app: Flask, client: FlaskClient, paul: int
) -> None:
    html = page(client.get(f"/p/{signer(app).preferences(paul, 7)}"))
    for legend in ("Par e-mail", "Par SMS", "Par téléphone", "Par courrier"):
        assert f"<legend>{legend}</legend>" in html
    assert " checked" not in html  # nothing ever said: nothing pre-ticked (RULES.md §6)
    assert "Vos données seront supprimées le 10 juin 2028, sauf si" in html


def test_saving_preferences_records_consents_and_objections_with_proof(
    app: Flask, client: FlaskClient, auth: dict[str, str], paul: int
) -> None:
    path = f"/p/{signer(app).preferences(paul, 7)}"
    res = form_post(client, path, email="yes", sms="no", postal="no")
    assert res.status_code == 200 and "Vos choix sont enregistrés" in page(res)
    consents = {e["channel"]: e for e in stored_events(app, paul, "consent")}
    assert {ch: c["given"] for ch, c in consents.items()} == {
        "email": True,
        "sms": False,
        "postal": False,
    }
    email = consents["email"]
    assert (email["method"], email["prechecked"], email["bundled_with_terms"]) == (
        "checkbox",
        False,
        False,
    )
    assert email["form_id"] == "gatekeeper.preferences" and email["user_agent"]
    assert email["text_version"].endswith(".fr") and email["campaign_id"] == 7
    assert sorted(o["channels"][0] for o in stored_events(app, paul, "opposition")) == [
        "postal",
        "sms",
    ]
    phone_hash = app.extensions["gatekeeper.context"].hasher.coordinate("phone", "+33612345678")
    assert (phone_hash, "unsubscribe", "sms") in suppressions(app)
    # A new explicit consent is a contact from the person: the clock restarts (RULES.md §4).
    assert contact_view(client, auth, paul)["retention"]["deadline"] == "2029-11-22T10:00:00Z"
    assert "22 novembre 2029" in page(res)


def test_past_the_deadline_the_preference_centre_says_the_data_is_about_to_go(
    app: Flask, client: FlaskClient, paul: int
) -> None:
    path = f"/p/{signer(app).preferences(paul, 7)}"
    set_clock(app, datetime(2028, 6, 12, 10, 0, tzinfo=UTC))
    assert "elles seront supprimées sous peu" in page(client.get(path))
    res = form_post(client, path, email="yes")  # an explicit consent brings the person back
    assert "Vos données seront supprimées le 12 juin 2031" in page(res)


def test_saved_choices_show_again_and_saving_them_again_records_nothing(
    app: Flask, client: FlaskClient, paul: int
) -> None:
    path = f"/p/{signer(app).preferences(paul, 7)}"
    form_post(client, path, email="yes", sms="no")
    html = page(client.get(path))
    assert re.search(r'id="email-yes" name="email" value="yes" checked', html)
    assert re.search(r'id="sms-no" name="sms" value="no" checked', html)
    before = len(stored_events(app, paul))
    res = form_post(client, path, email="yes", sms="no")
    assert "c&#39;étaient déjà vos choix" in page(res)
    assert len(stored_events(app, paul)) == before


def test_a_consent_after_an_unsubscribe_is_recorded_and_a_new_unsubscribe_objects_again(
    app: Flask, client: FlaskClient, paul: int
) -> None:
    unsubscribe = f"/u/{signer(app).unsubscribe(paul, 7)}"
    client.post(unsubscribe, data=ONE_CLICK)
    set_clock(app, TODAY + timedelta(days=1))
    form_post(client, f"/p/{signer(app).preferences(paul)}", email="yes")
    set_clock(app, TODAY + timedelta(days=2))
    res = client.post(unsubscribe, data=ONE_CLICK)
    assert "déjà" not in page(res)
    assert len(stored_events(app, paul, "opposition")) == 2


# --- tracked links ------------------------------------------------------------------------

SHOP = "https://shop.example/offre?id=42"


def click_path(app: Flask, cid: int, kind: str = "click", sent: datetime | None = None) -> str:
    token = signer(app).tracked(kind, cid, 7, SHOP, sent or TODAY - timedelta(hours=1))
    return f"/{kind[0]}/{token}"


@pytest.mark.parametrize("kind", ["click", "download"])
def test_a_click_records_interest_restarts_the_clock_and_redirects(
    app: Flask, client: FlaskClient, auth: dict[str, str], paul: int, kind: str, drain: Drain
) -> None:
    res = client.get(click_path(app, paul, kind), headers={"User-Agent": FIREFOX})
    assert res.status_code == 302 and res.headers["Location"] == SHOP
    assert stored_events(app, paul, "interest") == []  # journaled: stored by the drainer
    assert drain() == {"clicks": 1}
    (interest,) = stored_events(app, paul, "interest")
    assert (interest["kind"], interest["counts"], interest["campaign_id"]) == (kind, True, 7)
    assert interest["detail"] == SHOP and interest["sent_at"] == "2026-11-22T09:00:00Z"
    assert "ip" not in interest  # a click needs no proof-grade identification
    retention = contact_view(client, auth, paul)["retention"]
    assert retention["deadline"] == "2029-11-22T10:00:00Z"
    assert retention["started_by"]["kind"] == f"interest.{kind}"


SCANNERS = {
    "head request": ("HEAD", FIREFOX, timedelta(hours=1)),
    "scanner agent": ("GET", "Mozilla/5.0 (compatible; Mimecast URL protect)", timedelta(hours=1)),
    "no agent": ("GET", "", timedelta(hours=1)),
    "too soon after the send": ("GET", FIREFOX, timedelta(seconds=3)),
}


@pytest.mark.parametrize("case", list(SCANNERS))
def test_a_scanner_click_is_recorded_but_never_restarts_the_clock(
    app: Flask, client: FlaskClient, auth: dict[str, str], paul: int, case: str, drain: Drain
) -> None:
    method, agent, since = SCANNERS[case]
    path = click_path(app, paul, sent=TODAY - since)
    res = client.open(path, method=method, headers={"User-Agent": agent})
    assert res.status_code == 302 and res.headers["Location"] == SHOP
    drain()
    (interest,) = stored_events(app, paul, "interest")
    assert interest["counts"] is False and interest["method"] == method
    assert contact_view(client, auth, paul)["retention"]["deadline"] == "2028-06-09T22:00:00Z"


def test_the_redirect_goes_only_to_the_signed_url_never_the_query_string(
    app: Flask, client: FlaskClient, paul: int
) -> None:
    path = click_path(app, paul) + "?url=https://evil.example/&next=//evil.example&redirect=x"
    res = client.get(path, headers={"User-Agent": FIREFOX})
    assert res.headers["Location"] == SHOP
    res = client.get("/c/?url=https://evil.example/")
    assert res.status_code == 404


def test_a_click_leaves_the_contact_row_exactly_as_the_register_refresh_would(
    app: Flask, client: FlaskClient, auth: dict[str, str], paul: int, drain: Drain
) -> None:
    client.post(
        "/api/v1/events",
        headers=auth,
        json={
            "events": [
                {
                    "contact": {"external_id": "crm-42"},
                    "type": "purchase",
                    "occurred_at": "2025-09-01",
                    "product_category": "coffee",
                    "seller": "ACME SAS",
                },
                {
                    "contact": {"external_id": "crm-42"},
                    "type": "consent",
                    "channel": "email",
                    "given": True,
                    "occurred_at": "2025-06-10",
                    "method": "checkbox",
                    "sender": "ACME SAS",
                },
            ]
        },
    )
    client.get(click_path(app, paul), headers={"User-Agent": FIREFOX})
    drain()
    database = app.extensions["gatekeeper.db"]
    select = text("SELECT * FROM contacts WHERE id = :c")
    with database.engine.connect() as conn:
        after_click = conn.execute(select, {"c": paul}).one()
    with database.session_scope() as session:
        clocks.refresh(session, [paul], app.extensions["gatekeeper.context"].policy)
    with database.engine.connect() as conn:
        assert conn.execute(select, {"c": paul}).one() == after_click
    assert contact_view(client, auth, paul)["retention"]["deadline"] == "2029-11-22T10:00:00Z"


def test_a_url_minted_outside_the_api_is_made_header_safe_or_refused(
    app: Flask, client: FlaskClient, paul: int
) -> None:
    token = signer(app).tracked("click", paul, 7, "https://shop.example/été", TODAY)
    assert client.get(f"/c/{token}").headers["Location"] == "https://shop.example/%C3%A9t%C3%A9"
    token = signer(app).tracked("click", paul, 7, "https://shop.example/\r\nSet-Cookie: a=b", TODAY)
    res = client.get(f"/c/{token}")
    assert res.status_code == 400 and "Set-Cookie" not in res.headers


def test_a_click_the_database_cannot_take_yet_stays_journaled_until_a_drain_succeeds(
    app: Flask, client: FlaskClient, paul: int, drain: Drain
) -> None:
    engine = app.extensions["gatekeeper.db"].engine
    res = client.get(click_path(app, paul), headers={"User-Agent": FIREFOX})
    head = client.head(click_path(app, paul), headers={"User-Agent": FIREFOX})
    assert res.status_code == head.status_code == 302 and res.headers["Location"] == SHOP
    with engine.begin() as conn:  # a real failure: the events table is gone for a moment
        conn.execute(text("ALTER TABLE events RENAME TO events_away"))
    try:
        with pytest.raises(Exception):  # noqa: B017 - each driver names it differently
            drain()
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE events_away RENAME TO events"))
    assert stored_events(app, paul) == []
    # The failed batch was rolled back, not left open on the kept connection, and is handed
    # again whole: both hits are stored once, the HEAD as a scanner's.
    assert drain() == {"clicks": 2}
    assert sorted(e["counts"] for e in stored_events(app, paul, "interest")) == [False, True]


def test_a_click_that_cannot_be_journaled_still_takes_the_person_to_the_page(
    app: Flask, client: FlaskClient, paul: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")  # the spool cannot create its directory under a file: a real OSError
    links(app).spool = Spool(blocked, "clicks")
    res = client.get(click_path(app, paul), headers={"User-Agent": FIREFOX})
    assert res.status_code == 302 and res.headers["Location"] == SHOP
    assert "not recorded" in caplog.text
