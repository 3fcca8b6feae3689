"""The hot public endpoints as a thin WSGI layer in front of Flask.

``GET /u/{token}`` (every webmail that opens the List-Unsubscribe URL, every person reading the
page) and ``GET|HEAD /c|d/{token}`` (every click of every recipient, plus the link scanners that
fetch them all seconds after delivery) are served here without Flask's request machinery, which
alone costs about a third of a trivial 302 under gunicorn (measured by bench/links.py). The
unsubscribe page verifies a token and fills a pre-rendered page, without reading the database:
it shows nothing personal (links are forwarded, and scanners fetch every one of them), and the
POST finds the person. A tracked link verifies its token, journals the click (``spooled``:
``gatekeeper drain`` stores it) and redirects. Everything with a form body (the POSTs,
reconsent, preferences) goes on to the Flask blueprint in ``pages``. Both use the same signer,
limiter, records, templates and headers.

Everything that is the same for many answers is computed once per worker: the header lists,
the pages' skeletons, the language of each ``Accept-Language`` value, the header-safe form of
each destination, whether a user agent's hit counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs

from werkzeug.urls import iri_to_uri

from gatekeeper.domain.policy import Policy
from gatekeeper.domain.retention import interest_counts
from gatekeeper.links import i18n
from gatekeeper.links.headers import redirect_headers, security_headers
from gatekeeper.links.service import LinkService, Skeleton
from gatekeeper.links.spooled import click_record
from gatekeeper.links.tokens import LinkClaims, TokenExpiredError, TokenInvalidError

logger = logging.getLogger(__name__)
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
STATUS = {
    200: "200 OK",
    302: "302 Found",
    400: "400 Bad Request",
    410: "410 Gone",
    429: "429 Too Many Requests",
}
_ROUTES = {"/u/": "unsubscribe", "/c/": "click", "/d/": "download"}
COUNTS_MEMO = 4096  # (kind, user agent, method, late) answers kept per worker


class FastLinks:
    def __init__(self, app: WsgiApp, service: LinkService) -> None:
        self.app = app
        self.service = service
        # Answers differ between people by a few values: everything else is computed once.
        # No Vary: nothing may store these answers (no-store), and Vary only speaks to caches.
        security = security_headers(https=service.https)
        self.page_headers = {
            lang: [("Content-Type", "text/html; charset=utf-8"), ("Content-Language", lang), *security]
            for lang in i18n.LANGS
        }
        self.redirect_headers = [("Content-Length", "0"), *redirect_headers(https=service.https)]
        self.skeletons: dict[tuple[str, str], Skeleton] = {}
        self._counts: dict[tuple[str, str | None, str, bool], bool] = {}
        self._counts_policy: Policy | None = None

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        purpose = _ROUTES.get(path[:3])
        method = environ.get("REQUEST_METHOD", "GET")
        if purpose is None or method not in ("GET", "HEAD") or "/" in path[3:] or len(path) < 4:
            return self.app(environ, start_response)
        return _Request(self, environ, start_response, purpose, method).respond(path[3:])

    def unsubscribe_skeleton(self, lang: str, channel: str) -> Skeleton:
        key = (lang, channel)
        skeleton = self.skeletons.get(key)
        if skeleton is None:  # at most 2 languages x 6 channels
            fixed = (("channel_by", i18n.CHANNEL_BY[lang][channel]),)
            skeleton = self.service.skeleton("public/unsubscribe.html", lang, fixed, ("prefs_path",))
            self.skeletons[key] = skeleton
        return skeleton

    def counts(self, kind: str, user_agent: str | None, since_send: float | None, method: str) -> bool:
        """``interest_counts`` (RULES.md §4), remembered per user agent: a campaign's clicks
        come from a few hundred browsers and scanners, and matching an agent against every
        scanner name is a tenth of the click. The time since the send only matters as "within
        the grace period or not", so that yes/no is the key, not the seconds."""
        policy = self.service.context.policy
        if policy is not self._counts_policy:  # a policy file reloaded: forget its answers
            self._counts.clear()
            self._counts_policy = policy
        late = since_send is None or since_send >= policy.click_grace_seconds
        key = (kind, user_agent, method, late)
        found = self._counts.get(key)
        if found is None:
            found = interest_counts(kind, user_agent, since_send, method, policy=policy)
            if len(self._counts) >= COUNTS_MEMO:
                self._counts.clear()
            self._counts[key] = found
        return found


def _query_lang(query: str) -> str | None:
    return parse_qs(query).get("lang", [None])[0] if query else None


class _Request:
    __slots__ = ("environ", "fast", "method", "purpose", "s", "start_response")

    def __init__(
        self,
        fast: FastLinks,
        environ: dict[str, Any],
        start_response: StartResponse,
        purpose: str,
        method: str,
    ) -> None:
        self.fast, self.s, self.environ, self.start_response = fast, fast.service, environ, start_response
        self.purpose, self.method = purpose, method

    @property
    def lang(self) -> str:
        # Only pages need it (not the redirects); negotiate remembers each header's answer.
        environ = self.environ
        asked = _query_lang(environ.get("QUERY_STRING", ""))
        return i18n.negotiate(asked, environ.get("HTTP_ACCEPT_LANGUAGE"))

    def respond(self, token: str) -> Iterable[bytes]:
        retry = self.s.limiter.hit(self.environ.get("REMOTE_ADDR") or "-")
        if retry:
            return self.page(
                429,
                "public/message.html",
                [("Retry-After", str(int(retry) + 1))],
                title_key="e_rate_title",
                body_key="e_rate_body",
            )
        try:
            claims = self.s.signer.load(self.purpose, token)
        except TokenInvalidError:
            return self.page(
                400, "public/message.html", title_key="e_invalid_title", body_key="e_invalid_body"
            )
        except TokenExpiredError as exc:
            dest = exc.claims.url if exc.claims is not None else None
            return self.page(
                410,
                "public/message.html",
                title_key="e_expired_title",
                body_key="e_expired_body",
                destination=dest,
            )
        if claims.purpose != "unsubscribe":
            return self.track(claims)
        return self.unsubscribe_page(token, claims)

    def track(self, claims: LinkClaims) -> Iterable[bytes]:
        location = _location(str(claims.url))
        if location is None:
            return self.page(
                400, "public/message.html", title_key="e_invalid_title", body_key="e_invalid_body"
            )
        self.record(claims)
        self.start_response(STATUS[302], [("Location", location), *self.fast.redirect_headers])
        return [b""]

    def record(self, claims: LinkClaims) -> None:
        """One line appended to the clicks spool; ``gatekeeper drain`` stores it with the
        others of its batch (``spooled``), and stores nothing for a person erased meanwhile.
        The person reaches the page they clicked either way."""
        now = self.s.now()
        user_agent = self.environ.get("HTTP_USER_AGENT")
        sent_at = claims.sent_at
        since_send = None if sent_at is None else now.timestamp() - sent_at
        counts = self.fast.counts(claims.purpose, user_agent, since_send, self.method)
        try:
            line = click_record(
                claims.purpose,
                claims.contact_id,
                claims.campaign_id,
                str(claims.url),
                sent_at,
                method=self.method,
                user_agent=user_agent,
                at=now,
                counts=counts,
            )
            self.s.spool.append(line)
        except Exception:
            # A full or unwritable disk: the click is lost, which only leaves that clock a
            # little early (the cautious side). Logged for the operator.
            logger.exception("tracked click of contact %s not recorded", claims.contact_id)

    def unsubscribe_page(self, token: str, claims: LinkClaims) -> Iterable[bytes]:
        # The preference centre's own token is minted only when someone follows the link
        # (``pages.preferences_from_unsubscribe``): minting it here cost a sixth of every view.
        lang = self.lang
        skeleton = self.fast.unsubscribe_skeleton(lang, claims.channel)
        return self.send(200, skeleton.fill_bytes((f"/u/{token}/preferences",)), lang)

    def page(
        self, status: int, template: str, extra: list[tuple[str, str]] | None = None, **values: Any
    ) -> Iterable[bytes]:
        lang = self.lang
        body = self.s.render(template, lang, **values).encode()
        return self.send(status, body, lang, extra)

    def send(
        self, status: int, body: bytes, lang: str, extra: list[tuple[str, str]] | None = None
    ) -> Iterable[bytes]:
        headers = [("Content-Length", str(len(body))), *self.fast.page_headers[lang]]
        if extra:
            headers.extend(extra)
        self.start_response(STATUS[status], headers)
        return [b""] if self.method == "HEAD" else [body]


@lru_cache(maxsize=1024)
def _location(url: str) -> str | None:
    """A header-safe URI: links minted by the API are already; others are encoded here.
    A campaign's clicks share a handful of URLs: each is checked once per worker."""
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        return None
    return url if url.isascii() else iri_to_uri(url)
