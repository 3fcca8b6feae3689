"""The person's rights from the preference-centre link (RULES.md §7): a copy of their data sent
to their own address, an objection on every channel, erasure. The signed link is the identity,
as for an unsubscribe; the forms carry the page's CSRF token, and erasure asks for a tick."""

from __future__ import annotations

import logging
from email.message import EmailMessage

from flask import Response, current_app, request

from gatekeeper.config import Settings
from gatekeeper.errors import ValidationError
from gatekeeper.links import i18n
from gatekeeper.links.pages import MESSAGE, Link, bp, csrf_ok, csrf_page, html, public_link, service
from gatekeeper.proof import rights
from gatekeeper.retention.archive import ArchiveStore
from gatekeeper.retention.messages import dkim_from_environ, to_bytes
from gatekeeper.retention.transports import SendError, transport_from_url

log = logging.getLogger(__name__)


def _settings() -> Settings:
    settings: Settings = current_app.extensions["gatekeeper.settings"]
    return settings


def _back(link: Link) -> list[tuple[str, str]]:
    return [(f"../{link.token}?lang={link.lang}", i18n.MESSAGES[link.lang]["p_back"])]


@bp.post("/p/<token>/rights")
@public_link("preferences")
def preferences_rights(link: Link) -> Response:
    if not csrf_ok(link):
        return csrf_page()
    right = request.form.get("right")
    if right == "access":
        return _access(link)
    if right == "object":
        rights.object_to(link.session, service().context, link.card.id, service().now(), via="form")
        link.session.commit()
        return html(
            200, MESSAGE, title_key="rights_objected_title", body_key="rights_objected_body", done=True
        )
    if right == "erase":
        return _erase(link)
    return html(400, MESSAGE, title_key="e_invalid_title", body_key="e_invalid_body")


def _access(link: Link) -> Response:
    settings = _settings()
    transport = transport_from_url(settings.smtp_url)
    dkim = dkim_from_environ()

    def send(message: EmailMessage) -> None:
        # SMTP line endings (CRLF), and the same DKIM signature as every message we send.
        transport.send(message, to_bytes(message, dkim))

    try:
        rights.send_access_export(
            link.session,
            service().context,
            link.card.id,
            service().now(),
            sender=settings.mail_from,
            send=send,
        )
    except ValidationError:
        return html(
            200,
            MESSAGE,
            title_key="rights_no_email_title",
            body_key="rights_no_email_body",
            links=_back(link),
        )
    except SendError as exc:
        log.warning("access copy for contact %s not sent: %s", link.card.id, exc)
        link.session.rollback()
        return html(
            503,
            MESSAGE,
            title_key="rights_unavailable_title",
            body_key="rights_unavailable_body",
            links=_back(link),
        )
    link.session.commit()  # the journal entry of the access export
    return html(
        200,
        MESSAGE,
        title_key="rights_access_title",
        body_key="rights_access_body",
        done=True,
        links=_back(link),
    )


def _erase(link: Link) -> Response:
    if request.form.get("confirm") != "yes":
        return html(
            400, MESSAGE, title_key="rights_confirm_title", body_key="rights_confirm_body", links=_back(link)
        )
    archive = ArchiveStore(_settings().archive_database_url)
    try:
        rights.erase(link.session, service().context, link.card.id, service().now(), archive=archive)
        link.session.commit()
    finally:
        archive.engine.dispose()
    return html(200, MESSAGE, title_key="rights_erased_title", body_key="rights_erased_body", done=True)
