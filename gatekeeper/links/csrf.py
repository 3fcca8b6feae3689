"""CSRF protection of the reconsent and preference forms.

Double submit, bound to the browser and to the link: the GET sets a random ``SameSite=Strict``
cookie, and the form carries ``HMAC(secret, cookie | link token)``. A page on another site can
neither read the cookie nor make the browser send it with a cross-site POST, so it cannot build
a matching field. An ``Origin`` check would not do: with ``Referrer-Policy: no-referrer`` a
browser sends ``Origin: null`` on our own form posts.

The unsubscribe form needs none: the RFC 8058 one-click POST (``List-Unsubscribe=One-Click``)
arrives from mailbox providers with no cookie at all and must be accepted as it is, so a forged
post could do no more than that; our own button simply posts the same body.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

COOKIE = "gk_csrf"
SECURE_COOKIE = "__Host-gk_csrf"  # over HTTPS: the prefix forbids a sub-domain from setting it
FIELD = "csrf_token"
_COOKIE_BYTES = 24


def cookie_name(https: bool) -> str:
    return SECURE_COOKIE if https else COOKIE


def new_cookie_value() -> str:
    return secrets.token_urlsafe(_COOKIE_BYTES)


def usable_cookie(value: str | None) -> str | None:
    """An existing cookie of the right shape is reused, so two open tabs both keep working."""
    if value and 16 <= len(value) <= 64 and value.replace("-", "").replace("_", "").isalnum():
        return value
    return None


def form_token(secret: str, cookie: str, link_token: str) -> str:
    message = f"csrf|{cookie}|{link_token}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def valid(secret: str, cookie: str | None, link_token: str, offered: str | None) -> bool:
    if not cookie or not offered:
        return False
    return hmac.compare_digest(form_token(secret, cookie, link_token), offered)


def set_cookie_header(value: str, https: bool) -> tuple[str, str]:
    attributes = "Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if https else "")
    return "Set-Cookie", f"{cookie_name(https)}={value}; {attributes}"
