"""Security headers of the pages recipients see (and of the redirects and the static CSS).

The pages carry no script and no inline style (the CSS is ``/static/public.css``), so the policy
can be ``'self'`` with nothing unsafe. ``Referrer-Policy: no-referrer`` matters most on the 302
of a tracked link: the destination must never receive our URL, whose token acts for the person.
Pages hold personal choices, so nothing is cached or indexed.
"""

from __future__ import annotations

CSP = (
    "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

BASE = (
    ("Content-Security-Policy", CSP),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()"),
)
PRIVATE = (
    ("Cache-Control", "no-store"),
    ("X-Robots-Tag", "noindex, nofollow"),
)
HSTS = ("Strict-Transport-Security", "max-age=31536000")


def security_headers(*, https: bool, private: bool = True) -> list[tuple[str, str]]:
    """The header list for a public response; ``private`` for anything reached by a token."""
    headers = list(BASE)
    if private:
        headers.extend(PRIVATE)
    if https:
        headers.append(HSTS)
    return headers
