"""Security headers of the pages recipients see, of the tracked links' redirects and of the CSS.

The pages carry no script and no inline style (the CSS is ``/static/public.css``), so the policy
can be ``'self'`` with nothing unsafe, and ``frame-ancestors 'none'`` forbids framing them.
``Referrer-Policy: no-referrer`` matters most on the 302 of a tracked link: the destination must
never receive our URL, whose token acts for the person. Anything reached by a token holds
personal choices, so nothing is stored by a cache (``no-store``) or indexed.

Every header costs the server its checks on each answer (gunicorn validates each one with two
regular expressions: about a microsecond, a few per cent of a hot link's rate), so each answer
carries what protects it and nothing that repeats another header or the page itself:

- ``X-Frame-Options`` is not sent: CSP's ``frame-ancestors`` supersedes it (CSP Level 2, and
  every current browser ignores X-Frame-Options when a frame-ancestors directive is present).
- ``Permissions-Policy`` is not sent: a page that may run no script (``script-src 'none'``)
  can request no camera, microphone or position, and ``interest-cohort`` (FLoC) is withdrawn.
- ``X-Robots-Tag`` goes on the redirect only: every page says ``noindex, nofollow`` in its own
  ``<meta name="robots">`` (templates/public/base.html), which search engines treat alike.
- A redirect has no body to sniff, isolate or embed: no ``X-Content-Type-Options`` or
  ``Cross-Origin-*-Policy`` on it; it keeps the CSP, so every public answer forbids framing.
"""

from __future__ import annotations

CSP = (
    "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

BASE = (
    ("Content-Security-Policy", CSP),
    ("Referrer-Policy", "no-referrer"),
)
DOCUMENT = (
    ("X-Content-Type-Options", "nosniff"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
PRIVATE = (("Cache-Control", "no-store"),)
NOT_INDEXED = (("X-Robots-Tag", "noindex, nofollow"),)
HSTS = ("Strict-Transport-Security", "max-age=31536000")


def security_headers(*, https: bool, private: bool = True) -> list[tuple[str, str]]:
    """The header list of a public page or file; ``private`` for anything reached by a token."""
    headers = [*BASE, *DOCUMENT]
    if private:
        headers.extend(PRIVATE)
    if https:
        headers.append(HSTS)
    return headers


def redirect_headers(*, https: bool) -> list[tuple[str, str]]:
    """The header list of a tracked link's 302 (besides its Location and Content-Length)."""
    headers = [*BASE, *PRIVATE, *NOT_INDEXED]
    if https:
        headers.append(HSTS)
    return headers
