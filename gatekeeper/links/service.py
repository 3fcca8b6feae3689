"""Everything the public links share, built once per app: the signer, the limiter, the clock,
the settings the pages need and the page renderer (used by the Flask views and the fast path).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment
from markupsafe import escape

from gatekeeper.config import Settings
from gatekeeper.db import Database
from gatekeeper.links import i18n
from gatekeeper.links.ratelimit import RATE_LIMIT_FILE, RateLimiter
from gatekeeper.links.spooled import STREAM
from gatekeeper.links.tokens import Clock, LinkSigner, signer_secrets, utc_clock
from gatekeeper.links.unsubscribes import STREAM as UNSUBSCRIBES
from gatekeeper.register.context import RegisterContext
from gatekeeper.spool import Spool

STATIC_CSS = "public.css"
_MARK = "\ue000"  # a private-use character: never in our texts, untouched by escaping


class Skeleton:
    """A page rendered once with markers where the per-request values go.

    Jinja spends most of a hot page's time building contexts and walking blocks; the
    unsubscribe page differs between people only by a few values, so it is rendered once
    per language and variant and then filled by joining bytes (values HTML-escaped here).
    """

    def __init__(self, rendered: str, slots: tuple[str, ...]) -> None:
        pieces = rendered.split(_MARK)
        self._encoded = [literal.encode() for literal in pieces[0::2]]
        # Where each marker's value comes from in the tuple ``fill_bytes`` is given.
        self._order = [slots.index(name) for name in pieces[1::2]]

    def fill_bytes(self, values: tuple[str, ...]) -> bytes:
        """The page as UTF-8, ``values`` in the order of the ``slots`` it was built with."""
        encoded = self._encoded
        out = [encoded[0]]
        for i, position in enumerate(self._order, 1):
            out.append(str(escape(values[position])).encode())
            out.append(encoded[i])
        return b"".join(out)


@dataclass
class LinkService:
    signer: LinkSigner
    limiter: RateLimiter
    database: Database
    context: RegisterContext
    jinja: Environment
    sender: str
    https: bool
    csrf_secret: str
    css_url: str
    spool: Spool  # the clicks' journal (``spooled``)
    unsubscribes: Spool  # unsubscribes the database could not take at once (``unsubscribes``)
    _templates: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def clock(self) -> Clock:
        return self.signer.clock

    @clock.setter
    def clock(self, value: Clock) -> None:
        # Tests step time through here; minting, verifying and recording all read it.
        self.signer.clock = value

    def now(self) -> datetime:
        return self.signer.clock()

    def render(self, template: str, lang: str, **values: Any) -> str:
        compiled = self._templates.get(template)
        if compiled is None:  # Flask's loader, compiled once: the fast path has no app context
            compiled = self._templates[template] = self.jinja.get_template(template)
        other = "en" if lang == "fr" else "fr"
        common = {
            "lang": lang,
            "t": i18n.MESSAGES[lang],
            "other_lang": other,
            "css_url": self.css_url,
            "sender": self.sender,
        }
        return str(compiled.render(common | values))

    def skeleton(
        self, template: str, lang: str, fixed: tuple[tuple[str, Any], ...], slots: tuple[str, ...]
    ) -> Skeleton:
        """``template`` rendered with ``fixed`` and a marker for each of ``slots``. A slot's
        value may only be printed by the template, never tested or transformed."""
        markers = {name: f"{_MARK}{name}{_MARK}" for name in slots}
        return Skeleton(self.render(template, lang, **dict(fixed), **markers), slots)

    def date(self, moment: datetime, lang: str, timezone: str | None) -> str:
        return i18n.date_in_words(moment, lang, timezone)


def css_url(static_folder: str | None) -> str:
    """The stylesheet's URL with a content hash, so a new deploy is never served stale CSS."""
    path = Path(static_folder or ".") / STATIC_CSS
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10] if path.exists() else "0"
    return f"/static/{STATIC_CSS}?v={digest}"


def build_service(
    settings: Settings,
    database: Database,
    context: RegisterContext,
    jinja: Environment,
    static_folder: str | None,
) -> LinkService:
    secrets = signer_secrets(settings.secret_key, settings.old_secret_keys)
    return LinkService(
        signer=LinkSigner(secrets, settings.public_base_url, utc_clock),
        limiter=RateLimiter(settings.rate_limit_per_minute, path=Path(settings.spool_dir) / RATE_LIMIT_FILE),
        database=database,
        context=context,
        jinja=jinja,
        sender=settings.sender_entity,
        https=settings.public_base_url.startswith("https://"),
        csrf_secret=settings.secret_key,
        css_url=css_url(static_folder),
        spool=Spool(Path(settings.spool_dir), STREAM, fsync=settings.spool_fsync),
        # Synced to disk whatever spool_fsync says: an objection the person was told is recorded.
        unsubscribes=Spool(Path(settings.spool_dir), UNSUBSCRIBES, fsync=True),
    )
