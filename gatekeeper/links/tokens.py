"""Signed public links (API.md "Public links"): one salt and one maximum age per purpose.

Theory of operation
-------------------
A token is exactly itsdangerous' ``URLSafeTimedSerializer`` wire format::

    base64url(compact JSON payload) "." base64url(epoch seconds) "." base64url(HMAC-SHA1)

with the HMAC key derived "django-concat" style, ``sha1(salt + b"signer" + secret)``. Any token
minted here loads with plain ``URLSafeTimedSerializer(secret, salt=...).loads`` and any token
itsdangerous mints (compressed payloads included) loads here; tests prove both directions.

Why not call itsdangerous itself: ``dumps`` derives the key and tries zlib on every call, a third
of its time (PERFORMANCE.md). A campaign mints a token per recipient and link, so the key is
derived once per purpose and the payload, a handful of ids, is never compressed: the same format
at ~5x the rate. Verification lives here too so that "now" comes from an injected clock.

Payloads hold ids only, never an e-mail or a name (RULES.md §6 minimisation); the tracked-link URL
is not personal data. The action tag ``a`` is checked on load as well as the salt (warehouse's
habit), so a token can never be replayed for another purpose. Key rotation: the newest secret
signs, every configured secret verifies.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple

from gatekeeper.errors import GatekeeperError

Clock = Callable[[], datetime]
CampaignId = int | str | None

# A recipient may open a message years after it was sent; every link we put in it must keep
# working for as long as we may hold their data (3-year clocks, RULES.md §4), plus a margin.
LONG_LIVED_SECONDS = 4 * 366 * 24 * 3600
# Tokens come from our own clock; tolerate a small skew between the minting and serving hosts.
CLOCK_SKEW_SECONDS = 300
MAX_TOKEN_LENGTH = 4096
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$|^\.[A-Za-z0-9_\-.]+$")
CHANNELS = ("email", "sms", "automated_call", "fax", "phone", "postal")
_CAMPAIGN_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


@dataclass(frozen=True, slots=True)
class Purpose:
    name: str
    tag: str  # the payload's action and the URL prefix: /u/, /r/, /p/, /c/, /d/
    salt: bytes
    max_age: int  # seconds; the reconsent link also ends at the deadline it carries


PURPOSES = {
    p.name: p
    for p in (
        Purpose("unsubscribe", "u", b"gatekeeper.link.unsubscribe", LONG_LIVED_SECONDS),
        Purpose("preferences", "p", b"gatekeeper.link.preferences", LONG_LIVED_SECONDS),
        # Valid until the contact's deadline (in the payload); the cap only bounds old mail.
        Purpose("reconsent", "r", b"gatekeeper.link.reconsent", LONG_LIVED_SECONDS),
        Purpose("click", "c", b"gatekeeper.link.click", LONG_LIVED_SECONDS),
        Purpose("download", "d", b"gatekeeper.link.download", LONG_LIVED_SECONDS),
    )
}
TRACKED = ("click", "download")


class TokenError(GatekeeperError):
    """A public link that cannot be used; pages show it, the API never sees it."""


class TokenInvalidError(TokenError):
    status = 400
    code = "token_invalid"


class TokenExpiredError(TokenError):
    status = 410
    code = "token_expired"

    def __init__(self, message: str, claims: LinkClaims | None = None) -> None:
        super().__init__(message)
        self.claims = claims  # authentic but too old: a page may still show what it was for


class LinkClaims(NamedTuple):
    """What a verified token says. ``deadline`` only for reconsent, ``url`` and ``sent_at``
    only for tracked links. A named tuple (immutable): built on every hot link, it costs a
    fifth of a frozen dataclass."""

    purpose: str
    contact_id: int
    campaign_id: CampaignId
    issued_at: int
    channel: str = "email"
    deadline: int | None = None
    sent_at: int | None = None
    url: str | None = None


_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> bytes:
    # base64.urlsafe_b64encode without its two Python-level wrappers (a hot path).
    return binascii.b2a_base64(data, newline=False).translate(_TO_URLSAFE).rstrip(b"=")


_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _unb64(data: bytes) -> bytes:
    # The token's alphabet is checked before; binascii skips base64's wrappers (a hot path).
    return binascii.a2b_base64(data.translate(_FROM_URLSAFE) + b"=" * (-len(data) % 4))


def _int_bytes(value: int) -> bytes:
    return value.to_bytes(8, "big").lstrip(b"\x00")


@lru_cache(maxsize=4)
def _stamp(now: int) -> bytes:
    # A campaign mints thousands of tokens within the same second.
    return b"." + _b64(_int_bytes(now))


@lru_cache(maxsize=4096)
def _json_str(value: str) -> str:
    # Campaign ids and URLs repeat across a campaign's tokens: escape each once.
    return json.dumps(value, ensure_ascii=False)


def _json_campaign(campaign_id: CampaignId) -> str:
    if campaign_id is None:
        return "null"
    if isinstance(campaign_id, bool):
        raise ValueError("a campaign id is an integer or a short string")
    return str(int(campaign_id)) if isinstance(campaign_id, int) else _json_str(campaign_id)


def check_campaign_id(value: Any) -> CampaignId:
    """Campaign ids are ours (integers) or a platform's own short code; nothing personal."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    if isinstance(value, str) and _CAMPAIGN_ID.match(value):
        return value
    raise ValueError("campaign_id must be a non-negative integer or 1-64 of A-Z a-z 0-9 _ . : -")


class _Keys:
    """One purpose's derived keys: index 0 (the newest secret) signs, all verify."""

    def __init__(self, purpose: Purpose, secrets: Sequence[bytes]) -> None:
        self.purpose = purpose
        keys = [hashlib.sha1(purpose.salt + b"signer" + s).digest() for s in secrets]  # noqa: S324 - itsdangerous' format
        # HMAC (RFC 2104) as its two keyed SHA-1 states, copied per token: the key schedule is
        # computed once, and copying hashlib objects costs half of copying hmac.HMAC ones.
        self.pads = [_pads(k) for k in keys]

    def sign(self, payload: bytes, now: int) -> str:
        body = _b64(payload) + _stamp(now)
        return (body + b"." + _b64(_mac(self.pads[0], body))).decode("ascii")

    def authentic(self, value: bytes, offered: bytes) -> bool:
        return any(hmac.compare_digest(_mac(pads, value), offered) for pads in self.pads)

    def verify(self, token: str) -> tuple[bytes, int]:
        """(payload JSON, issued-at) of an authentic token, else TokenInvalidError."""
        if len(token) > MAX_TOKEN_LENGTH or not _TOKEN_CHARS.match(token):
            raise TokenInvalidError("malformed token")
        value, _, signature = token.encode("ascii").rpartition(b".")
        try:
            offered = _unb64(signature)
        except (binascii.Error, ValueError) as exc:
            raise TokenInvalidError("malformed signature") from exc
        if not self.authentic(value, offered):
            raise TokenInvalidError("bad signature")
        payload, _, stamp = value.rpartition(b".")
        try:
            issued = int.from_bytes(_unb64(stamp), "big")
            return _decode_payload(payload), issued
        except (binascii.Error, ValueError, zlib.error) as exc:
            raise TokenInvalidError("undecodable payload") from exc


_Pads = tuple["hashlib._Hash", "hashlib._Hash"]


def _pads(key: bytes) -> _Pads:
    block = key.ljust(64, b"\0")  # SHA-1's block; a derived key is 20 bytes
    inner = hashlib.sha1(bytes(b ^ 0x36 for b in block))  # noqa: S324 - itsdangerous' format
    outer = hashlib.sha1(bytes(b ^ 0x5C for b in block))  # noqa: S324 - itsdangerous' format
    return inner, outer


def _mac(pads: _Pads, value: bytes) -> bytes:
    """HMAC-SHA1 of ``value`` (equal to ``hmac.digest(key, value, "sha1")``, tested)."""
    inner, outer = pads[0].copy(), pads[1].copy()
    inner.update(value)
    outer.update(inner.digest())
    return outer.digest()


def _decode_payload(payload: bytes) -> bytes:
    if not payload.startswith(b"."):
        return _unb64(payload)
    # itsdangerous compresses payloads that shrink; bound the output (a signed bomb is still ours,
    # but a bound costs nothing).
    inflater = zlib.decompressobj()
    data = inflater.decompress(_unb64(payload[1:]), MAX_TOKEN_LENGTH * 4)
    if inflater.unconsumed_tail:
        raise ValueError("payload too large")
    return data


# The C scanner json.loads calls, without its wrappers (typeshed does not declare the attribute).
_scan_json: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def json_object(raw: bytes) -> Any:
    """``json.loads(raw)`` of one compact JSON value, a third of its time; ValueError (and
    UnicodeDecodeError) as json.loads raises them."""
    text = raw.decode()
    try:
        data, end = _scan_json(text, 0)
    except StopIteration:
        data, end = None, -1
    if end == len(text):
        return data
    # Anything but one compact JSON value (surrounding spaces, a second value) is left to
    # json.loads, which accepts or refuses it exactly as before.
    return json.loads(text)


def _claims(purpose: Purpose, raw: bytes, issued: int) -> LinkClaims:
    try:
        data = json_object(raw)
    except ValueError as exc:
        raise TokenInvalidError("payload is not JSON") from exc
    if not isinstance(data, dict) or data.get("a") != purpose.tag:
        raise TokenInvalidError(f"not a {purpose.name} token")
    get = data.get
    try:
        url = get("u")
        claims = LinkClaims(
            purpose.name,
            _int(data["c"]),
            check_campaign_id(get("m")),
            issued,
            str(get("ch", "email")),
            _opt_int(get("e")),
            _opt_int(get("s")),
            None if url is None else str(url),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenInvalidError(f"incomplete {purpose.name} token") from exc
    if claims.channel not in CHANNELS or (purpose.name in TRACKED and not claims.url):
        raise TokenInvalidError(f"incomplete {purpose.name} token")
    return claims


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer")
    return value


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _epoch(moment: datetime | int) -> int:
    return moment if isinstance(moment, int) else int(moment.timestamp())


class LinkSigner:
    """Mints and verifies the public links' tokens and builds their absolute URLs."""

    def __init__(self, secrets: Sequence[str], base_url: str, clock: Clock) -> None:
        if not secrets or not secrets[0]:
            raise ValueError("a signing secret is required")
        raw = [s.encode() for s in secrets if s]
        self._keys = {name: _Keys(p, raw) for name, p in PURPOSES.items()}
        self.base_url = base_url.rstrip("/")
        self.clock = clock

    def _now(self) -> int:
        return int(self.clock().timestamp())

    def _mint(self, purpose: str, payload: str) -> str:
        return self._keys[purpose].sign(payload.encode(), self._now())

    def unsubscribe(self, contact_id: int, campaign_id: CampaignId = None, channel: str = "email") -> str:
        _check_channel(channel)
        ids = f'"c":{int(contact_id)},"m":{_json_campaign(campaign_id)}'
        return self._mint("unsubscribe", f'{{"a":"u",{ids},"ch":"{channel}"}}')

    def preferences(self, contact_id: int, campaign_id: CampaignId = None) -> str:
        ids = f'"c":{int(contact_id)},"m":{_json_campaign(campaign_id)}'
        return self._mint("preferences", f'{{"a":"p",{ids}}}')

    def reconsent(self, contact_id: int, deadline: datetime | int, channel: str = "email") -> str:
        _check_channel(channel)
        ids = f'"c":{int(contact_id)},"e":{_epoch(deadline)}'
        return self._mint("reconsent", f'{{"a":"r",{ids},"ch":"{channel}"}}')

    def tracked(
        self, kind: str, contact_id: int, campaign_id: CampaignId, url: str, sent_at: datetime | int
    ) -> str:
        if kind not in TRACKED:
            raise ValueError(f"kind must be one of {', '.join(TRACKED)}")
        ids = f'"c":{int(contact_id)},"m":{_json_campaign(campaign_id)},"s":{_epoch(sent_at)}'
        return self._mint(kind, f'{{"a":"{PURPOSES[kind].tag}",{ids},"u":{_json_str(url)}}}')

    def url(self, purpose: str, token: str) -> str:
        return f"{self.base_url}/{PURPOSES[purpose].tag}/{token}"

    def load(self, purpose: str, token: str) -> LinkClaims:
        """The claims of an authentic, unexpired token for this purpose."""
        keys = self._keys[purpose]
        raw, issued = keys.verify(token)
        claims = _claims(keys.purpose, raw, issued)
        now = self._now()
        age = now - issued
        expired = age > keys.purpose.max_age or age < -CLOCK_SKEW_SECONDS
        if claims.deadline is not None and now >= claims.deadline:
            expired = True
        if expired:
            raise TokenExpiredError(f"this {purpose} link has expired", claims)
        return claims

    def list_unsubscribe_headers(
        self, contact_id: int, campaign_id: CampaignId = None, mailto: str | None = None
    ) -> dict[str, str]:
        """RFC 2369 / RFC 8058 headers for a message (the DKIM signature must cover both)."""
        targets = [f"<{self.url('unsubscribe', self.unsubscribe(contact_id, campaign_id))}>"]
        if mailto:
            targets.append(f"<mailto:{mailto}>")
        return {
            "List-Unsubscribe": ", ".join(targets),
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }


def _check_channel(channel: str) -> None:
    # Channels are written into the JSON unescaped: only the known names may pass.
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")


def signer_secrets(secret_key: str, old_secret_keys: str) -> list[str]:
    """Newest first: the current secret signs; older ones still verify links already sent."""
    return [secret_key, *(s.strip() for s in old_secret_keys.split(",") if s.strip())]


def utc_clock() -> datetime:
    return datetime.now(UTC)
