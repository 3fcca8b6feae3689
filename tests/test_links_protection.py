"""Protection of the public endpoints: rate limits, security headers, CSRF tokens, languages."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import make_settings
from flask import Flask
from flask.testing import FlaskClient
from test_links_helpers import FIREFOX, TODAY, add_contact, links, set_clock, signer

from gatekeeper.app import create_app
from gatekeeper.links import csrf, i18n, ratelimit
from gatekeeper.links.headers import CSP
from gatekeeper.links.ratelimit import RateLimiter


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the limiter itself -------------------------------------------------------------------


def test_an_address_may_burst_to_its_limit_then_waits_for_the_bucket_to_refill() -> None:
    ticks = Ticks()
    limiter = RateLimiter(3, ticks)
    assert [limiter.hit("10.0.0.1") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.hit("10.0.0.1") == pytest.approx(20.0)  # one token every 20 s at 3/min
    assert limiter.hit("10.0.0.2") == 0.0  # every address has its own bucket
    ticks.now += 20.0
    assert limiter.hit("10.0.0.1") == 0.0
    assert limiter.hit("10.0.0.1") > 0.0


def test_a_limit_of_zero_turns_the_limiter_off() -> None:
    limiter = RateLimiter(0, Ticks())
    assert all(limiter.hit("10.0.0.1") == 0.0 for _ in range(1000))


def test_every_process_of_the_machine_shares_the_buckets(tmp_path: Path) -> None:
    # Two gunicorn workers: whichever answers, the address has one limit, not one per worker.
    ticks = Ticks()
    table = tmp_path / "spool" / ratelimit.RATE_LIMIT_FILE
    first, second = RateLimiter(4, ticks, table), RateLimiter(4, ticks, table)
    assert [first.hit("10.0.0.1"), second.hit("10.0.0.1"), first.hit("10.0.0.1")] == [0.0] * 3
    assert second.hit("10.0.0.1") == 0.0
    assert first.hit("10.0.0.1") > 0.0 and second.hit("10.0.0.1") > 0.0
    assert first.hit("10.0.0.2") == 0.0
    assert table.stat().st_size == ratelimit.SIZE


def test_a_forked_worker_shares_the_buckets_of_its_parent(tmp_path: Path) -> None:
    limiter = RateLimiter(3, Ticks(), tmp_path / ratelimit.RATE_LIMIT_FILE)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        os.write(write, b"".join(b"1" if limiter.hit("10.0.0.9") else b"0" for _ in range(2)))
        os._exit(0)
    os.close(write)
    assert os.read(read, 2) == b"00"
    os.waitpid(child, 0)
    os.close(read)
    assert limiter.hit("10.0.0.9") == 0.0  # the third of three
    assert limiter.hit("10.0.0.9") > 0.0


def test_a_table_of_another_format_is_replaced_and_a_bad_directory_falls_back(tmp_path: Path) -> None:
    table = tmp_path / ratelimit.RATE_LIMIT_FILE
    table.write_bytes(b"an older release's table")
    limiter = RateLimiter(1, Ticks(), table)
    assert table.stat().st_size == ratelimit.SIZE
    assert limiter.hit("10.0.0.1") == 0.0 and limiter.hit("10.0.0.1") > 0.0
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the spool directory should be")
    alone = RateLimiter(1, Ticks(), blocked / ratelimit.RATE_LIMIT_FILE)  # logged, per process
    assert alone.hit("10.0.0.1") == 0.0 and alone.hit("10.0.0.1") > 0.0


def test_a_flood_of_addresses_never_grows_the_table_and_limits_still_hold() -> None:
    # Fixed-size buckets: 20,000 new addresses take no memory, and each still gets its own
    # limit (addresses sharing a bucket, one chance in SLOTS, would share theirs).
    ticks = Ticks()
    limiter = RateLimiter(100, ticks)
    assert all(limiter.hit(f"2001:db8::{i:x}") == 0.0 for i in range(20_000))
    answers = [limiter.hit("10.0.0.1") for _ in range(101)]
    assert answers[0] == 0.0 and answers[-1] > 0.0


# --- rate limits through HTTP -------------------------------------------------------------


@pytest.fixture
def paul(app: Flask, client: FlaskClient, auth: dict[str, str]) -> int:
    set_clock(app, TODAY)
    return add_contact(client, auth)


@pytest.fixture
def tight(app: Flask) -> Ticks:
    """Three requests a minute per address, on a clock the test moves."""
    ticks = Ticks()
    links(app).limiter = RateLimiter(3, ticks)
    return ticks


def test_the_limit_comes_from_the_settings(app: Flask) -> None:
    assert links(app).limiter.per_minute == app.extensions["gatekeeper.settings"].rate_limit_per_minute


def test_two_workers_of_one_machine_answer_429_at_the_same_limit(db_url: str, tmp_path: Path) -> None:
    # Two app instances on one spool directory: what two gunicorn workers are.
    workers = [create_app(make_settings(db_url, tmp_path, rate_limit_per_minute=3)) for _ in range(2)]
    clients = [w.test_client() for w in workers]
    answers = [clients[i % 2].get("/u/not-a-token").status_code for i in range(4)]
    assert answers == [400, 400, 400, 429]
    assert clients[1].get("/u/not-a-token").status_code == 429
    for w in workers:
        w.extensions["gatekeeper.jobs"].pool.shutdown(wait=True)
        w.extensions["gatekeeper.db"].engine.dispose()


@pytest.mark.parametrize("prefix", ["u", "r", "p", "c", "d"])
def test_every_public_endpoint_answers_429_past_the_limit(
    app: Flask, client: FlaskClient, tight: Ticks, prefix: str
) -> None:
    path = f"/{prefix}/not-a-token"
    assert [client.get(path).status_code for _ in range(3)] == [400, 400, 400]
    res = client.get(path)
    assert res.status_code == 429 and res.headers["Retry-After"] == "21"
    assert "Trop de demandes" in res.get_data(as_text=True)
    other = client.get(path, environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other.status_code == 400
    tight.now += 20.0
    assert client.get(path).status_code == 400


def test_one_click_unsubscribes_are_never_rate_limited(
    app: Flask, client: FlaskClient, auth: dict[str, str], tight: Ticks
) -> None:
    # Mailbox providers post one-clicks for many people from a few addresses.
    set_clock(app, TODAY)
    cid = add_contact(client, auth)
    path = f"/u/{signer(app).unsubscribe(cid, 7)}"
    for _ in range(4):
        client.get("/c/not-a-token")
    assert client.get(path).status_code == 429
    assert client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200


# --- security headers ---------------------------------------------------------------------

STRICT = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
}


def test_every_public_answer_carries_strict_security_headers(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    set_clock(app, TODAY)
    cid = add_contact(client, auth)
    s = signer(app)
    answers = {
        "unsubscribe page": client.get(f"/u/{s.unsubscribe(cid)}"),
        "unsubscribe post": client.post(f"/u/{s.unsubscribe(cid)}", data={"List-Unsubscribe": "One-Click"}),
        "preferences page": client.get(f"/p/{s.preferences(cid)}"),
        "click redirect": client.get(
            f"/c/{s.tracked('click', cid, 7, 'https://x.example/', TODAY)}",
            headers={"User-Agent": FIREFOX},
        ),
        "tampered": client.get("/r/abc.def.ghi"),
        "tampered fast": client.get("/u/abc.def.ghi"),
        "stylesheet": client.get(links(app).css_url),
    }
    for name, res in answers.items():
        # The CSP forbids framing (frame-ancestors, which supersedes X-Frame-Options) and the
        # referrer is never sent, least of all by the redirect to another site.
        for header, value in STRICT.items():
            assert res.headers.get(header) == value, (name, header)
        if name != "stylesheet":
            assert res.headers["Cache-Control"] == "no-store", name
        if name == "click redirect":
            assert res.status_code == 302 and res.headers["X-Robots-Tag"] == "noindex, nofollow"
        else:
            assert res.headers["X-Content-Type-Options"] == "nosniff", name
            assert res.headers["Cross-Origin-Opener-Policy"] == "same-origin", name
        if res.mimetype == "text/html":  # pages say it themselves, as search engines read it
            assert '<meta name="robots" content="noindex, nofollow">' in res.get_data(as_text=True), name
    assert "frame-ancestors 'none'" in CSP and "unsafe-inline" not in CSP
    css = answers["stylesheet"]
    assert css.status_code == 200 and css.mimetype == "text/css"
    css.close()  # a static file is streamed from disk


def test_pages_have_no_inline_style_or_script_and_no_third_party_asset(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    set_clock(app, TODAY)
    cid = add_contact(client, auth)
    html = client.get(f"/p/{signer(app).preferences(cid)}").get_data(as_text=True)
    assert "<script" not in html and "style=" not in html and "<style" not in html
    assert re.findall(r'(?:href|src)="(https?:)?//', html) == []


def test_the_api_keeps_its_own_headers(client: FlaskClient) -> None:
    # Other pages (the printable evidence pack) may need their own policy: ours stays on ours.
    assert "Content-Security-Policy" not in client.get("/api/v1/openapi.json").headers


# --- languages ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "accept", "lang_expected"),
    [
        ("", None, "fr"),
        ("", "en-GB,en;q=0.9", "en"),
        ("", "de-DE,de;q=0.9", "fr"),
        ("", "en;q=0.5,fr;q=0.8", "fr"),
        ("?lang=en", "fr-FR", "en"),
        ("?lang=fr", "en-US", "fr"),
        ("?lang=xx", "en-US", "en"),
    ],
)
def test_pages_speak_french_first_then_english_by_header_or_switch(
    app: Flask, paul: int, query: str, accept: str | None, lang_expected: str
) -> None:
    client, cid, lang = app.test_client(), paul, lang_expected
    headers = {"Accept-Language": accept} if accept else {}
    for path in (f"/u/{signer(app).unsubscribe(cid)}", f"/p/{signer(app).preferences(cid)}"):
        res = client.get(path + query, headers=headers)
        html = res.get_data(as_text=True)
        assert res.headers["Content-Language"] == lang
        assert f'<html lang="{lang}">' in html
        other = "en" if lang == "fr" else "fr"
        assert f'href="?lang={other}"' in html


def test_the_english_pages_say_the_same_things(app: Flask, client: FlaskClient, auth: dict[str, str]) -> None:
    set_clock(app, TODAY)
    cid = add_contact(client, auth)
    html = client.get(f"/p/{signer(app).preferences(cid)}?lang=en").get_data(as_text=True)
    assert "Your contact preferences" in html
    assert "Your data will be deleted on 10 June 2028 unless" in html


def test_both_catalogs_hold_the_same_texts_with_the_same_placeholders() -> None:
    fr, en = i18n.MESSAGES["fr"], i18n.MESSAGES["en"]
    assert fr.keys() == en.keys()
    for key in fr:
        assert set(re.findall(r"{(\w+)}", fr[key])) == set(re.findall(r"{(\w+)}", en[key])), key
    assert i18n.CHANNEL_BY["fr"].keys() == i18n.CHANNEL_BY["en"].keys()


@pytest.mark.parametrize(
    ("moment", "zone", "fr", "en"),
    [
        (datetime(2028, 6, 9, 22, tzinfo=UTC), None, "10 juin 2028", "10 June 2028"),
        (datetime(2028, 6, 9, 22, tzinfo=UTC), "America/Martinique", "9 juin 2028", "9 June 2028"),
        (
            datetime(2029, 2, 1, 10, tzinfo=UTC),
            "Nowhere/Atlantis",
            "1 février 2029",
            "1 February 2029",
        ),
    ],
)
def test_deadlines_are_written_in_words_in_the_persons_time_zone(
    moment: datetime, zone: str | None, fr: str, en: str
) -> None:
    assert i18n.date_in_words(moment, "fr", zone) == fr
    assert i18n.date_in_words(moment, "en", zone) == en


def test_coordinates_are_masked_on_pages() -> None:
    assert i18n.mask_email("paul.martin@example.fr") == "p•••@example.fr"
    assert i18n.mask_phone("+33612345678") == "•• •• •• 78"


# --- CSRF tokens --------------------------------------------------------------------------


def test_a_csrf_token_binds_the_browser_cookie_to_the_link() -> None:
    cookie = csrf.new_cookie_value()
    token = csrf.form_token("secret", cookie, "link-a")
    assert csrf.valid("secret", cookie, "link-a", token)
    assert not csrf.valid("secret", cookie, "link-b", token)
    assert not csrf.valid("secret", csrf.new_cookie_value(), "link-a", token)
    assert not csrf.valid("other-secret", cookie, "link-a", token)
    assert not csrf.valid("secret", None, "link-a", token)
    assert csrf.usable_cookie(cookie) == cookie
    assert csrf.usable_cookie("x;y") is None and csrf.usable_cookie("") is None


def test_the_csrf_cookie_is_strict_and_secure_over_https() -> None:
    name, value = csrf.set_cookie_header("abc", https=True)
    assert name == "Set-Cookie"
    assert value.startswith("__Host-gk_csrf=abc;") and "Secure" in value
    assert "SameSite=Strict" in value and "HttpOnly" in value and "Path=/" in value
    assert "Secure" not in csrf.set_cookie_header("abc", https=False)[1]
