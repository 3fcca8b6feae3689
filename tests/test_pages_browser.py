"""The pages recipients see, driven in a real headless Chromium (Debian's, never a downloaded
build) against the app served by a real server in a thread. Each test asserts what the person
sees and what was stored, and leaves a screenshot in var/screenshots/ for a human to look at.

SQLite only: the same journeys run on both databases through the test client
(test_links_pages.py); here the browser is what is under test.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from test_links_helpers import (
    RECONSENT_DAY,
    TODAY,
    add_contact,
    contact_view,
    erase,
    set_clock,
    signer,
    stored_events,
    suppressions,
)
from werkzeug.serving import make_server

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SHOTS = Path(__file__).resolve().parent.parent / "var" / "screenshots"
PERSON_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def serve(wsgi: Any) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, wsgi, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


@pytest.fixture
def site(app: Flask) -> Iterator[str]:
    yield from serve(app)


def landing_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Where tracked links lead: another site, on another port."""
    body = b"<!doctype html><html lang='fr'><title>Boutique</title><h1>Offre de printemps</h1></html>"
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [body]


@pytest.fixture
def landing() -> Iterator[str]:
    yield from serve(landing_app)


@pytest.fixture
def person(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(
        user_agent=PERSON_UA, locale="fr-FR", viewport={"width": 1024, "height": 800}
    )
    yield context
    context.close()


@dataclass
class Scene:
    """The served app, an API client, and Paul in its register."""

    app: Flask
    client: FlaskClient
    auth: dict[str, str]
    site: str
    paul: int


@pytest.fixture
def scene(app: Flask, client: FlaskClient, auth: dict[str, str], site: str) -> Scene:
    set_clock(app, TODAY)
    return Scene(app, client, auth, site, add_contact(client, auth))


def shoot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def watch_csp(page: Page) -> list[str]:
    """Console errors, where Chromium reports anything the Content-Security-Policy blocked."""
    errors: list[str] = []

    def note(msg: Any) -> None:
        if msg.type == "error" and ("Content Security Policy" in msg.text or "Refused" in msg.text):
            errors.append(msg.text)

    page.on("console", note)
    return errors


def luminance(rgb: str) -> float:
    def channel(v: int) -> float:
        c = v / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (int(x) for x in re.findall(r"\d+", rgb)[:3])
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(page: Page, selector: str, background: str | None = None) -> float:
    """WCAG contrast ratio of an element's text on its (or a given) background colour."""
    fg, bg = page.eval_on_selector(
        selector, "e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor]"
    )
    if background is not None:
        bg = background
    light, dark = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


# --- unsubscribe --------------------------------------------------------------------------


def test_a_person_unsubscribes_with_one_keyboard_press_and_it_is_stored(
    scene: Scene, person: BrowserContext
) -> None:
    page = person.new_page()
    errors = watch_csp(page)
    response = page.goto(f"{scene.site}/u/{signer(scene.app).unsubscribe(scene.paul, 7)}")
    assert response is not None and response.status == 200
    assert page.get_by_role("heading", level=1).inner_text() == "Se désinscrire"
    assert "example.fr" not in page.inner_text("main")  # nothing personal on a forwardable page
    button = page.get_by_role("button", name="Me désinscrire")
    assert contrast(page, "button") >= 4.5 and contrast(page, "h1", "rgb(255, 255, 255)") >= 4.5
    # The stylesheet applied under the CSP (a static file, no inline style): nothing blocked.
    assert page.eval_on_selector("body", "e => getComputedStyle(e).backgroundColor") == "rgb(243, 244, 246)"
    shoot(page, "unsubscribe")
    assert stored_events(scene.app, scene.paul) == []  # the page alone records nothing
    button.focus()
    assert page.eval_on_selector("button", "e => getComputedStyle(e).outlineStyle") == "solid"
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Vous êtes désinscrit(e)").wait_for()
    assert "pris en compte immédiatement" in page.inner_text("main")
    shoot(page, "unsubscribe-done")
    assert errors == []
    (objection,) = stored_events(scene.app, scene.paul, "opposition")
    assert objection["channels"] == ["email"] and objection["user_agent"] == PERSON_UA
    assert len(suppressions(scene.app)) == 2


def test_a_person_goes_from_the_unsubscribe_page_to_the_preference_centre(
    scene: Scene, person: BrowserContext
) -> None:
    page = person.new_page()
    errors = watch_csp(page)
    page.goto(f"{scene.site}/u/{signer(scene.app).unsubscribe(scene.paul, 7)}")
    page.get_by_role("link", name="Gérer mes préférences").click()
    page.get_by_role("heading", level=1, name="Vos préférences de contact").wait_for()
    assert "/p/" in page.url and errors == []
    assert stored_events(scene.app, scene.paul) == []  # following a link records nothing


def test_the_unsubscribe_page_reads_well_on_a_phone(scene: Scene, browser: Browser) -> None:
    context = browser.new_context(
        viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True, locale="fr-FR"
    )
    page = context.new_page()
    page.goto(f"{scene.site}/u/{signer(scene.app).unsubscribe(scene.paul, 7)}")
    assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
    box = page.get_by_role("button", name="Me désinscrire").bounding_box()
    assert box is not None and box["height"] >= 44 and box["width"] >= PHONE["width"] * 0.8
    shoot(page, "unsubscribe-phone")
    context.close()


def test_the_switch_shows_the_page_in_english_and_back(scene: Scene, person: BrowserContext) -> None:
    page = person.new_page()
    page.goto(f"{scene.site}/u/{signer(scene.app).unsubscribe(scene.paul, 7)}")
    page.get_by_role("link", name="Read this page in English").click()
    page.get_by_role("heading", name="Unsubscribe").wait_for()
    assert page.evaluate("document.documentElement.lang") == "en"
    shoot(page, "unsubscribe-en")
    page.get_by_role("button", name="Unsubscribe me").click()
    page.get_by_role("heading", name="You are unsubscribed").wait_for()
    page.get_by_role("link", name="Lire cette page en français").click()
    page.get_by_role("heading", name="Se désinscrire").wait_for()


def test_an_english_browser_gets_english_first(scene: Scene, browser: Browser) -> None:
    context = browser.new_context(locale="en-GB")
    page = context.new_page()
    page.goto(f"{scene.site}/p/{signer(scene.app).preferences(scene.paul)}")
    assert page.get_by_role("heading", level=1).inner_text() == "Your contact preferences"
    context.close()


# --- reconsent ----------------------------------------------------------------------------


def reconsent_url(scene: Scene) -> str:
    set_clock(scene.app, RECONSENT_DAY)
    deadline = datetime(2028, 6, 9, 22, tzinfo=UTC)
    return f"{scene.site}/r/{signer(scene.app).reconsent(scene.paul, deadline)}"


def test_a_person_keeps_in_touch_and_the_clock_restarts(scene: Scene, person: BrowserContext) -> None:
    page = person.new_page()
    page.goto(reconsent_url(scene))
    main = page.inner_text("main")
    assert "Souhaitez-vous garder le contact ?" in main
    assert "seront supprimées le 10 juin 2028" in main and "jusqu'au 20 mai 2031" in main
    assert page.get_by_role("listitem").count() == 5
    assert contrast(page, "button.neutral") >= 4.5
    shoot(page, "reconsent")
    page.get_by_role("button", name="Oui, tenez-moi informé(e)").click()
    page.get_by_role("heading", name="Merci, c'est noté").wait_for()
    assert "20 mai 2031" in page.inner_text("main")
    shoot(page, "reconsent-kept")
    (consent,) = stored_events(scene.app, scene.paul, "consent")
    assert (consent["method"], consent["given"]) == ("reconsent", True)
    assert (
        contact_view(scene.client, scene.auth, scene.paul)["retention"]["deadline"] == "2031-05-20T10:00:00Z"
    )


def test_a_person_says_stop_and_is_objected_everywhere(scene: Scene, person: BrowserContext) -> None:
    page = person.new_page()
    page.goto(reconsent_url(scene))
    page.get_by_role("button", name="Non merci, arrêtez").click()
    page.get_by_role("heading", name="C'est noté").wait_for()
    shoot(page, "reconsent-stopped")
    assert [o["channels"] for o in stored_events(scene.app, scene.paul, "opposition")] == [["all"]]
    assert contact_view(scene.client, scene.auth, scene.paul)["retention"]["state"] == "expired"


def test_after_the_deadline_the_reconsent_link_says_so(scene: Scene, person: BrowserContext) -> None:
    url = reconsent_url(scene)
    set_clock(scene.app, datetime(2028, 6, 10, 9, 0, tzinfo=UTC))
    page = person.new_page()
    response = page.goto(url)
    assert response is not None and response.status == 410
    assert "La date limite du 10 juin 2028 est passée" in page.inner_text("main")
    assert page.get_by_role("button").count() == 0
    shoot(page, "reconsent-late")
    assert stored_events(scene.app, scene.paul) == []


# --- preferences --------------------------------------------------------------------------


def test_a_person_sets_preferences_channel_by_channel(scene: Scene, person: BrowserContext) -> None:
    page = person.new_page()
    page.goto(f"{scene.site}/p/{signer(scene.app).preferences(scene.paul, 7)}")
    assert "Vos données seront supprimées le 10 juin 2028, sauf si" in page.inner_text("main")
    shoot(page, "preferences")
    page.get_by_role("group", name="Par e-mail").get_by_label("Oui, j'accepte").check()
    page.get_by_role("group", name="Par SMS").get_by_label("Non merci").check()
    page.get_by_role("group", name="Par courrier").get_by_label("Non merci").check()
    page.get_by_role("button", name="Enregistrer mes choix").click()
    page.get_by_role("heading", name="Vos choix sont enregistrés").wait_for()
    items = page.get_by_role("listitem").all_inner_texts()
    assert items == ["Par e-mail : accepté", "Par SMS : refusé", "Par courrier : refusé"]
    assert "22 novembre 2029" in page.inner_text("main")  # the consent restarted the clock
    shoot(page, "preferences-saved")
    given = {e["channel"]: e["given"] for e in stored_events(scene.app, scene.paul, "consent")}
    assert given == {"email": True, "sms": False, "postal": False}
    assert (
        contact_view(scene.client, scene.auth, scene.paul)["retention"]["deadline"] == "2029-11-22T10:00:00Z"
    )
    page.get_by_role("link", name="Revenir à mes préférences").click()
    assert page.get_by_role("group", name="Par e-mail").get_by_label("Oui, j'accepte").is_checked()


def test_the_preference_page_reads_well_on_a_phone(scene: Scene, browser: Browser) -> None:
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, locale="fr-FR")
    page = context.new_page()
    page.goto(f"{scene.site}/p/{signer(scene.app).preferences(scene.paul)}")
    assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
    shoot(page, "preferences-phone")
    context.close()


# --- tracked links ------------------------------------------------------------------------


def test_a_click_takes_the_person_to_the_page_and_restarts_the_clock(
    scene: Scene, landing: str, person: BrowserContext, drain: Callable[[], dict[str, int]]
) -> None:
    token = signer(scene.app).tracked(
        "click", scene.paul, 7, f"{landing}/printemps", TODAY - timedelta(hours=1)
    )
    page = person.new_page()
    page.goto(f"{scene.site}/c/{token}?url=https://evil.example/")
    assert page.url == f"{landing}/printemps"
    assert page.get_by_role("heading").inner_text() == "Offre de printemps"
    shoot(page, "click-landing")
    assert drain() == {"clicks": 1}  # as `gatekeeper drain` does a moment later
    (interest,) = stored_events(scene.app, scene.paul, "interest")
    assert interest["counts"] is True and interest["user_agent"] == PERSON_UA
    assert (
        contact_view(scene.client, scene.auth, scene.paul)["retention"]["deadline"] == "2029-11-22T10:00:00Z"
    )


def test_a_headless_browser_is_a_scanner_its_click_is_recorded_but_does_not_count(
    scene: Scene, landing: str, browser: Browser, drain: Callable[[], dict[str, int]]
) -> None:
    context = browser.new_context()  # Chromium's own "HeadlessChrome" user agent
    page = context.new_page()
    token = signer(scene.app).tracked("download", scene.paul, 7, f"{landing}/a.pdf", TODAY)
    page.goto(f"{scene.site}/d/{token}")
    assert page.url == f"{landing}/a.pdf"
    context.close()
    assert drain() == {"clicks": 1}
    (interest,) = stored_events(scene.app, scene.paul, "interest")
    assert (interest["kind"], interest["counts"]) == ("download", False)
    assert (
        contact_view(scene.client, scene.auth, scene.paul)["retention"]["deadline"] == "2028-06-09T22:00:00Z"
    )


# --- links that cannot be used ------------------------------------------------------------


def test_broken_expired_and_erased_links_each_say_what_happened(scene: Scene, person: BrowserContext) -> None:
    page = person.new_page()
    token = signer(scene.app).preferences(scene.paul)
    response = page.goto(f"{scene.site}/p/{token[:-4]}AAAA")
    assert response is not None and response.status == 400
    assert page.get_by_role("heading", level=1).inner_text() == "Lien invalide"
    shoot(page, "link-invalid")

    set_clock(scene.app, TODAY - timedelta(days=5 * 366))
    old = signer(scene.app).unsubscribe(scene.paul)
    set_clock(scene.app, TODAY)
    response = page.goto(f"{scene.site}/u/{old}")
    assert response is not None and response.status == 410
    assert page.get_by_role("heading", level=1).inner_text() == "Lien expiré"
    shoot(page, "link-expired")

    erase(scene.app, scene.paul)
    response = page.goto(f"{scene.site}/p/{token}")
    assert response is not None and response.status == 410
    assert page.get_by_role("heading", level=1).inner_text() == "Vos données ont été effacées"
    shoot(page, "link-erased")
    assert stored_events(scene.app, scene.paul) == []
