"""Signed link tokens: itsdangerous' wire format both ways, one salt per purpose, expiry and
key rotation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer

from gatekeeper.links.tokens import (
    PURPOSES,
    LinkSigner,
    TokenExpiredError,
    TokenInvalidError,
    check_campaign_id,
    signer_secrets,
)

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
SECRET = "current-secret-0123456789"
URL = "https://shop.example/offre?id=42&utm_source=mail"


class FakeClock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def signer(*secrets: str, clock: FakeClock | None = None) -> LinkSigner:
    return LinkSigner(list(secrets or (SECRET,)), "https://gk.example/", clock or FakeClock())


def its(purpose: str, secret: str = SECRET) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=PURPOSES[purpose].salt)


class FrozenSigner(TimestampSigner):
    def get_timestamp(self) -> int:
        return int(NOW.timestamp())


MINTED = {
    "unsubscribe": (lambda s: s.unsubscribe(42, 7), {"a": "u", "c": 42, "m": 7, "ch": "email"}),
    "preferences": (
        lambda s: s.preferences(42, "spring-26"),
        {"a": "p", "c": 42, "m": "spring-26"},
    ),
    "reconsent": (
        lambda s: s.reconsent(42, NOW + timedelta(days=30), "sms"),
        {"a": "r", "c": 42, "e": int((NOW + timedelta(days=30)).timestamp()), "ch": "sms"},
    ),
    "click": (
        lambda s: s.tracked("click", 42, 7, URL, NOW),
        {"a": "c", "c": 42, "m": 7, "s": int(NOW.timestamp()), "u": URL},
    ),
    "download": (
        lambda s: s.tracked("download", 42, 7, "https://x.example/é.pdf", NOW),
        {"a": "d", "c": 42, "m": 7, "s": int(NOW.timestamp()), "u": "https://x.example/é.pdf"},
    ),
}


@pytest.mark.parametrize("purpose", list(MINTED))
def test_every_minted_token_loads_with_plain_itsdangerous(purpose: str) -> None:
    mint, payload = MINTED[purpose]
    token = mint(signer())
    assert its(purpose).loads(token) == payload


@pytest.mark.parametrize("purpose", list(MINTED))
def test_a_token_is_byte_for_byte_what_itsdangerous_would_mint_at_the_same_second(
    purpose: str,
) -> None:
    mint, payload = MINTED[purpose]
    reference = URLSafeTimedSerializer(SECRET, salt=PURPOSES[purpose].salt, signer=FrozenSigner)
    expected = reference.dumps(payload)
    if expected.startswith("."):  # itsdangerous zlib-compresses what shrinks; we never do
        pytest.skip("payload compressible: itsdangerous would compress it")
    assert mint(signer()) == expected


@pytest.mark.parametrize("purpose", list(MINTED))
def test_tokens_minted_by_itsdangerous_load_here_compressed_or_not(purpose: str) -> None:
    _mint, payload = MINTED[purpose]
    padded = payload | {"pad": "x" * 300}  # compressible: itsdangerous writes ".<zlib>"
    minted_now = URLSafeTimedSerializer(SECRET, salt=PURPOSES[purpose].salt, signer=FrozenSigner)
    for data in (payload, padded):
        token = minted_now.dumps(data)
        claims = signer().load(purpose, token)
        assert claims.contact_id == 42
    assert its(purpose).dumps(padded).startswith(".")


def test_claims_say_what_was_minted() -> None:
    s = signer()
    click = s.load("click", s.tracked("click", 42, 7, URL, NOW - timedelta(seconds=30)))
    assert (click.purpose, click.contact_id, click.campaign_id, click.url) == ("click", 42, 7, URL)
    assert click.sent_at == int(NOW.timestamp()) - 30
    unsub = s.load("unsubscribe", s.unsubscribe(42, None, "sms"))
    assert (unsub.campaign_id, unsub.channel, unsub.issued_at) == (
        None,
        "sms",
        int(NOW.timestamp()),
    )


def test_a_token_of_one_purpose_is_refused_by_every_other() -> None:
    s = signer()
    tokens = {purpose: mint(s) for purpose, (mint, _payload) in MINTED.items()}
    for purpose, token in tokens.items():
        for other in PURPOSES:
            if other != purpose:
                with pytest.raises(TokenInvalidError):
                    s.load(other, token)


def test_the_action_tag_is_checked_even_under_the_right_salt() -> None:
    forged = its("unsubscribe").dumps({"a": "p", "c": 42, "m": None})
    with pytest.raises(TokenInvalidError):
        signer().load("unsubscribe", forged)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"),  # signature
        lambda t: "eyJhIjoidSIsImMiOjQzLCJtIjo3LCJjaCI6ImVtYWlsIn0" + t[t.index(".") :],  # contact 43
        lambda t: t.replace(".", "", 1),
        lambda t: t[: len(t) // 2],
        lambda t: t + "<script>",
        lambda t: "",
        lambda t: "x" * 5000,
    ],
    ids=["signature", "payload", "separator", "truncated", "junk", "empty", "huge"],
)
def test_a_tampered_token_is_invalid(mangle: object) -> None:
    token = signer().unsubscribe(42, 7)
    with pytest.raises(TokenInvalidError):
        signer().load("unsubscribe", mangle(token))  # type: ignore[operator]


def test_a_token_signed_with_an_unknown_secret_is_invalid() -> None:
    token = signer("someone-else-s-secret").unsubscribe(42, 7)
    with pytest.raises(TokenInvalidError):
        signer().load("unsubscribe", token)


def test_the_newest_secret_signs_and_every_configured_one_verifies() -> None:
    old_token = signer("old-secret").unsubscribe(42, 7)
    rotated = signer(*signer_secrets("new-secret", " old-secret , older-secret"))
    assert rotated.load("unsubscribe", old_token).contact_id == 42
    fresh = rotated.unsubscribe(42, 7)
    assert its("unsubscribe", "new-secret").loads(fresh)["c"] == 42
    with pytest.raises(BadSignature):
        its("unsubscribe", "old-secret").loads(fresh)
    with pytest.raises(TokenInvalidError):
        signer("new-secret").load("unsubscribe", old_token)


def test_tokens_expire_after_their_purposes_maximum_age() -> None:
    clock = FakeClock()
    s = signer(clock=clock)
    token = s.unsubscribe(42, 7)
    clock.now = NOW + timedelta(seconds=PURPOSES["unsubscribe"].max_age - 1)
    assert s.load("unsubscribe", token).contact_id == 42
    clock.now = NOW + timedelta(seconds=PURPOSES["unsubscribe"].max_age + 1)
    with pytest.raises(TokenExpiredError):
        s.load("unsubscribe", token)


def test_a_reconsent_link_ends_at_the_deadline_it_carries() -> None:
    clock = FakeClock()
    s = signer(clock=clock)
    token = s.reconsent(42, NOW + timedelta(days=30))
    clock.now = NOW + timedelta(days=30) - timedelta(seconds=1)
    assert s.load("reconsent", token).deadline == int((NOW + timedelta(days=30)).timestamp())
    clock.now = NOW + timedelta(days=30)
    with pytest.raises(TokenExpiredError) as caught:
        s.load("reconsent", token)
    assert caught.value.claims is not None and caught.value.claims.contact_id == 42


def test_an_expired_tracked_link_still_tells_where_it_led() -> None:
    clock = FakeClock()
    s = signer(clock=clock)
    token = s.tracked("click", 42, 7, URL, NOW)
    clock.now = NOW + timedelta(days=5 * 366)
    with pytest.raises(TokenExpiredError) as caught:
        s.load("click", token)
    assert caught.value.claims is not None and caught.value.claims.url == URL


def test_a_token_from_the_far_future_is_refused() -> None:
    clock = FakeClock(NOW + timedelta(hours=1))
    token = signer(clock=clock).unsubscribe(42, 7)
    with pytest.raises(TokenExpiredError):
        signer().load("unsubscribe", token)


@pytest.mark.parametrize("value", [True, -1, 1.5, "", "x" * 65, "bad id", "é", {"id": 1}])
def test_campaign_ids_are_integers_or_short_codes_never_free_text(value: object) -> None:
    with pytest.raises(ValueError, match="campaign_id"):
        check_campaign_id(value)


def test_minting_refuses_unknown_channels_and_kinds() -> None:
    with pytest.raises(ValueError, match="channel"):
        signer().unsubscribe(42, 7, 'email","c":1')
    with pytest.raises(ValueError, match="kind"):
        signer().tracked("open", 42, 7, URL, NOW)


def test_payloads_hold_ids_only() -> None:
    token = signer().unsubscribe(42, 7)
    assert set(its("unsubscribe").loads(token)) == {"a", "c", "m", "ch"}


def test_list_unsubscribe_headers_follow_rfc_8058() -> None:
    headers = signer().list_unsubscribe_headers(42, 7, mailto="unsub@acme.example")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https, mailto = headers["List-Unsubscribe"].split(", ")
    assert https.startswith("<https://gk.example/u/") and mailto == "<mailto:unsub@acme.example>"
    token = https[len("<https://gk.example/u/") : -1]
    assert signer().load("unsubscribe", token).contact_id == 42
