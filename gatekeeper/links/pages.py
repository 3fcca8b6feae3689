"""The public pages with a form (API.md "Public links"): ``POST /u``, ``/r`` and ``/p``.

The token in the URL is the only identity. A GET never records anything (scanners prefetch);
each POST records its consent or objection with proof and commits before answering, so an
objection is in the gate at once. ``GET /u`` and the tracked links are served by ``fastpath``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import wraps
from typing import Any

from flask import Blueprint, Response, current_app, request
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from gatekeeper.db import RETRY_AFTER_SECONDS, request_session, unavailable
from gatekeeper.domain.retention import add_years
from gatekeeper.links import csrf, i18n
from gatekeeper.links.records import (
    PREFERENCE_CHANNELS,
    ContactCard,
    Proof,
    Raw,
    channel_states,
    consent_record,
    latest_reconsent,
    load_card,
    objection_record,
    record,
    session_raw,
)
from gatekeeper.links.service import LinkService
from gatekeeper.links.tokens import PURPOSES, LinkClaims, TokenExpiredError, TokenInvalidError
from gatekeeper.links.unsubscribes import record_unsubscribe, unsubscribe_line
from gatekeeper.spool import SpoolError

bp = Blueprint("public", __name__)
log = logging.getLogger(__name__)
MESSAGE = "public/message.html"
UNSUBSCRIBE_WAIT_MS = 5_000  # how long an unsubscribe POST waits for the database's writer
ANSWERS = ("keep", "stop")


def service() -> LinkService:
    links: LinkService = current_app.extensions["gatekeeper.links"]
    return links


def page_lang() -> str:
    return i18n.negotiate(request.args.get("lang"), request.headers.get("Accept-Language"))


def html(status: int, template: str, headers: list[tuple[str, str]] | None = None, **values: Any) -> Response:
    lang = page_lang()
    body = service().render(template, lang, **values)
    response = Response(body, status=status, mimetype="text/html")
    response.headers["Content-Language"] = lang
    response.headers["Vary"] = "Accept-Language, Cookie"
    for name, value in headers or []:
        response.headers.add(name, value)
    return response


def one_click() -> bool:
    """RFC 8058: the body is ``List-Unsubscribe=One-Click``, urlencoded or multipart."""
    return request.method == "POST" and request.form.get("List-Unsubscribe") == "One-Click"


@bp.before_request
def _rate_limit() -> Response | None:
    # Mailbox providers send one-click POSTs for many people from a few addresses, and an
    # unsubscribe must never be dropped: those are exempt (the signed token still gates them).
    if one_click():
        return None
    retry = service().limiter.hit(request.remote_addr or "-")
    if not retry:
        return None
    return html(
        429,
        MESSAGE,
        [("Retry-After", str(int(retry) + 1))],
        title_key="e_rate_title",
        body_key="e_rate_body",
    )


@bp.errorhandler(OperationalError)
def _busy(exc: OperationalError) -> Response:
    """The database could not take the write in time: SQLite's single writer held past the
    busy timeout (a long import holds it to the end, to stay all-or-nothing), a PostgreSQL lock
    or connection lost. Nothing was recorded (the request's session is rolled back); the person
    gets a page that says so and to use the same link again, not a server error. Except an
    unsubscribe: it is journaled and takes effect as if recorded (``unsubscribes``)."""
    if not unavailable(exc):
        raise exc  # a mistake of ours, not a busy database: a server error, logged
    journaled = _journal_unsubscribe()
    if journaled is not None:
        return journaled
    log.warning("public link %s: database unavailable: %s", request.path[:3], exc.orig)
    return html(
        503,
        MESSAGE,
        [("Retry-After", str(RETRY_AFTER_SECONDS))],
        title_key="e_busy_title",
        body_key="e_busy_body",
    )


@dataclass
class Link:
    """A verified token, its person, and the request's database handles."""

    token: str
    claims: LinkClaims
    card: ContactCard
    session: Session
    raw: Raw
    lang: str

    def reload(self) -> ContactCard:
        card = load_card(session_raw(self.session), self.card.id)
        return card if card is not None else self.card


View = Callable[[Link], Response]


def public_link(purpose: str) -> Callable[[View], Callable[[str], Response]]:
    """Verify the token and find its person, or answer with the page that says why not."""

    def decorate(view: View) -> Callable[[str], Response]:
        @wraps(view)
        def wrapper(token: str) -> Response:
            try:
                claims = service().signer.load(purpose, token)
            except TokenInvalidError:
                return html(400, MESSAGE, title_key="e_invalid_title", body_key="e_invalid_body")
            except TokenExpiredError as exc:
                if exc.claims is not None and exc.claims.deadline is not None:
                    return late_page(exc.claims.deadline, None)
                return html(410, MESSAGE, title_key="e_expired_title", body_key="e_expired_body")
            # An unsubscribe POST waits a few seconds at most for a busy database, then is
            # journaled (``_journal_unsubscribe``): a mailbox provider's one-click POST may not
            # wait the general busy timeout (gunicorn kills a worker after 30 s anyway).
            hurried = purpose == "unsubscribe" and request.method == "POST"
            session = request_session(wait_ms=UNSUBSCRIBE_WAIT_MS if hurried else None)
            raw = session_raw(session)
            card = load_card(raw, claims.contact_id)
            if card is None or not card.recordable:
                # One-click: the sender asked for an unsubscribe that an erasure already made.
                return html(
                    200 if purpose == "unsubscribe" and one_click() else 410,
                    MESSAGE,
                    title_key="e_erased_title",
                    body_key="e_erased_body",
                )
            return view(Link(token, claims, card, session, raw, page_lang()))

        return wrapper

    return decorate


def late_page(deadline: int | None, card: ContactCard | None) -> Response:
    lang = page_lang()
    moment = card.deadline if card and card.deadline else datetime.fromtimestamp(deadline or 0, UTC)
    text = i18n.MESSAGES[lang]["r_late_body"].format(
        date=i18n.date_in_words(moment, lang, card.timezone if card else None)
    )
    return html(410, MESSAGE, title_key="r_late_title", paragraphs=[text])


def proof(claims: LinkClaims, lang: str, form: str) -> Proof:
    s = service()
    return Proof(
        occurred_at=s.now(),
        ip=request.remote_addr,
        user_agent=request.headers.get("User-Agent"),
        url=f"{s.signer.base_url}/{PURPOSES[claims.purpose].tag}/",
        form_id=f"gatekeeper.{form}",
        text_version=f"{form}.{i18n.TEXT_VERSION}.{lang}",
        sender=s.sender,
        campaign_id=claims.campaign_id,
    )


def csrf_field(link: Link) -> tuple[str, tuple[str, str]]:
    s = service()
    name = csrf.cookie_name(s.https)
    cookie = csrf.usable_cookie(request.cookies.get(name)) or csrf.new_cookie_value()
    return csrf.form_token(s.csrf_secret, cookie, link.token), csrf.set_cookie_header(cookie, s.https)


def csrf_ok(link: Link) -> bool:
    s = service()
    cookie = request.cookies.get(csrf.cookie_name(s.https))
    return csrf.valid(s.csrf_secret, cookie, link.token, request.form.get(csrf.FIELD))


def csrf_page() -> Response:
    lang = page_lang()
    return html(
        400,
        MESSAGE,
        title_key="e_csrf_title",
        body_key="e_csrf_body",
        links=[(f"?lang={lang}", i18n.MESSAGES[lang]["e_reload"])],
    )


@bp.post("/u/<token>")
@public_link("unsubscribe")
def unsubscribe(link: Link) -> Response:
    # Our own button posts the RFC 8058 body too (see unsubscribe.html): one path, no CSRF
    # token, since a forgery could do no more than any mailbox provider's one-click.
    if not one_click():
        return html(400, MESSAGE, title_key="e_form_title", body_key="e_form_body")
    evidence = proof(link.claims, link.lang, _unsubscribe_form())
    one = not _from_page()
    recorded = record_unsubscribe(
        link.session, service().context, link.card, link.claims.channel, evidence, one_click=one
    )
    if recorded:
        link.session.commit()
    return unsubscribed_page(link.claims, link.lang, already=not recorded)


def _from_page() -> bool:
    return request.form.get("source") == "page"


def _unsubscribe_form() -> str:
    return "unsubscribe_page" if _from_page() else "one_click"


def unsubscribed_page(claims: LinkClaims, lang: str, *, already: bool) -> Response:
    t = i18n.MESSAGES[lang]
    body = t["u_done_body"].format(sender=service().sender, channel_by=i18n.CHANNEL_BY[lang][claims.channel])
    prefs = service().signer.preferences(claims.contact_id, claims.campaign_id)
    return html(
        200,
        MESSAGE,
        title_key="u_done_title",
        done=True,
        paragraphs=[t["u_already"]] if already else [body, t["u_mistake"]],
        links=[(f"/p/{prefs}?lang={lang}", t["u_prefs_link"])],
    )


def _journal_unsubscribe() -> Response | None:
    """An unsubscribe POST the database could not take: journaled (synced to disk) for the
    drainer, and answered as recorded (``unsubscribes``); None when this request is not one, or
    the journal refused it too."""
    token = (request.view_args or {}).get("token")
    if request.endpoint != "public.unsubscribe" or not token or not one_click():
        return None
    try:
        claims = service().signer.load("unsubscribe", token)
    except (TokenInvalidError, TokenExpiredError):
        return None
    lang = page_lang()
    evidence = proof(claims, lang, _unsubscribe_form())
    line = unsubscribe_line(claims.contact_id, claims.channel, evidence, one_click=not _from_page())
    try:
        service().unsubscribes.append(line)
    except SpoolError:
        log.exception("unsubscribe of contact %s could not be journaled either", claims.contact_id)
        return None
    log.warning("unsubscribe of contact %s journaled: the database was unavailable", claims.contact_id)
    return unsubscribed_page(claims, lang, already=False)


@bp.route("/u/<token>/preferences", methods=["GET", "HEAD"])
@public_link("unsubscribe")
def preferences_from_unsubscribe(link: Link) -> Response:
    """The unsubscribe page's link to the preference centre: the same person and campaign,
    with a preferences token minted now. A relative Location on our own host, never the
    query's: nothing here can send anyone elsewhere."""
    prefs = service().signer.preferences(link.card.id, link.claims.campaign_id)
    return Response(status=303, headers={"Location": f"/p/{prefs}?lang={link.lang}"})


def reconsent_deadline_passed(link: Link) -> bool:
    deadline = link.card.deadline
    return deadline is not None and service().now() >= deadline


def prospect_years(card: ContactCard) -> int:
    policy = service().context.policy
    if card.audience == "b2b" and not policy.b2b_same_clock:
        return policy.b2b_retention_years
    return policy.prospect_retention_years


@bp.route("/r/<token>", methods=["GET", "HEAD"])
@public_link("reconsent")
def reconsent_form(link: Link) -> Response:
    if reconsent_deadline_passed(link):
        return late_page(link.claims.deadline, link.card)
    token, cookie = csrf_field(link)
    card, lang, s = link.card, link.lang, service()
    deadline = card.deadline or token_deadline(link)
    keep_until = add_years(s.now(), prospect_years(card))
    return html(
        200,
        "public/reconsent.html",
        [cookie],
        csrf_token=token,
        held=held_items(card, lang),
        deadline=s.date(deadline, lang, card.timezone),
        new_deadline=s.date(keep_until, lang, card.timezone),
    )


def token_deadline(link: Link) -> datetime:
    return datetime.fromtimestamp(link.claims.deadline or 0, UTC)


def held_items(card: ContactCard, lang: str) -> list[str]:
    t = i18n.MESSAGES[lang]
    items = []
    if card.email:
        items.append(t["r_item_email"].format(value=i18n.mask_email(card.email)))
    if card.phone:
        items.append(t["r_item_phone"].format(value=i18n.mask_phone(card.phone)))
    if card.has_name:
        items.append(t["r_item_name"])
    if card.has_postal:
        items.append(t["r_item_postal"])
    items.append(t["r_item_history"])
    return items


@bp.post("/r/<token>")
@public_link("reconsent")
def reconsent_answer(link: Link) -> Response:
    if reconsent_deadline_passed(link):
        return late_page(link.claims.deadline, link.card)
    if not csrf_ok(link):
        return csrf_page()
    answer = request.form.get("answer")
    if answer not in ANSWERS:
        return html(400, MESSAGE, title_key="e_form_title", body_key="e_form_body")
    keep, channel = answer == "keep", link.claims.channel
    if latest_reconsent(link.raw, link.card.id, link.claims.issued_at) != keep:
        evidence = proof(link.claims, link.lang, "reconsent")
        records = [consent_record(link.card, channel, keep, "reconsent", evidence)]
        if not keep:  # RULES.md §4: a refusal is also an objection, kept as a suppression
            records.append(objection_record(link.card, ["all"], "link", evidence))
        record(link.session, service().context, records)
        link.session.commit()
    return reconsent_done(link, keep)


def reconsent_done(link: Link, keep: bool) -> Response:
    t, lang = i18n.MESSAGES[link.lang], link.lang
    if not keep:
        return html(200, MESSAGE, title_key="r_stopped_title", body_key="r_stopped_body", done=True)
    card = link.reload()
    until = service().date(card.deadline, lang, card.timezone) if card.deadline else ""
    return html(
        200,
        MESSAGE,
        title_key="r_kept_title",
        done=True,
        paragraphs=[t["r_kept_body"].format(date=until)],
    )


def deadline_text(card: ContactCard, lang: str) -> str:
    t, policy = i18n.MESSAGES[lang], service().context.policy
    if card.refused or (card.deadline is not None and service().now() >= card.deadline):
        return t["p_expired"]
    if card.deadline is None:
        return t["p_running"].format(years=policy.client_retention_years)
    years = policy.client_retention_years if card.clock == "client" else prospect_years(card)
    return t["p_deadline"].format(date=service().date(card.deadline, lang, card.timezone), years=years)


@bp.route("/p/<token>", methods=["GET", "HEAD"])
@public_link("preferences")
def preferences_form(link: Link) -> Response:
    token, cookie = csrf_field(link)
    states = channel_states(link.raw, link.card.id, service().sender)
    choices = [(ch, states[ch].answer) for ch in PREFERENCE_CHANNELS]
    return html(
        200,
        "public/preferences.html",
        [cookie],
        csrf_token=token,
        choices=choices,
        deadline_text=deadline_text(link.card, link.lang),
        token=link.token,  # the rights forms post to <token>/rights, relative to /p/
    )


@bp.post("/p/<token>")
@public_link("preferences")
def preferences_save(link: Link) -> Response:
    if not csrf_ok(link):
        return csrf_page()
    states = channel_states(link.raw, link.card.id, service().sender)
    evidence, records, changed = proof(link.claims, link.lang, "preferences"), [], []
    for channel in PREFERENCE_CHANNELS:
        wanted = request.form.get(channel)
        if wanted not in ("yes", "no") or _unchanged(
            states[channel].answer, states[channel].objected, wanted
        ):
            continue
        records.append(consent_record(link.card, channel, wanted == "yes", "checkbox", evidence))
        if wanted == "no":
            records.append(objection_record(link.card, [channel], "form", evidence))
        changed.append((channel, wanted))
    if records:
        record(link.session, service().context, records)
        link.session.commit()
    return preferences_saved(link, changed)


def _unchanged(answer: str | None, objected: bool, wanted: str) -> bool:
    # "no" is only settled once an objection is in force: a bare refusal makes no suppression.
    return answer == "yes" and not objected if wanted == "yes" else objected


def preferences_saved(link: Link, changed: list[tuple[str, str]]) -> Response:
    t, lang = i18n.MESSAGES[link.lang], link.lang
    items = [
        t["p_saved_yes" if wanted == "yes" else "p_saved_no"].format(channel=t[f"p_{ch}"])
        for ch, wanted in changed
    ]
    return html(
        200,
        MESSAGE,
        title_key="p_saved_title",
        done=True,
        items=items,
        paragraphs=[] if changed else [t["p_saved_none"]],
        deadline_text=deadline_text(link.reload(), lang),
        links=[(f"?lang={lang}", t["p_back"])],
    )
