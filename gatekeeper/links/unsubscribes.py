"""Unsubscribes that a busy database could not take at once, and how they still take effect.

Theory of operation
-------------------
An unsubscribe POST (``/u/{token}``, one-click or the page's button) records its objection and
commits before answering. When the database cannot take that write in time (SQLite's single
writer held past the busy timeout by a long all-or-nothing import; a PostgreSQL lock timeout or
a lost connection), answering 503 would lose it: a mailbox provider's RFC 8058 one-click POST
is not known to be retried, and the person has already been told, in effect, that it worked.
So the POST appends the request to the ``unsubscribes`` spool instead (one line, synced to
disk: the objection has legal urgency) and answers as if it were recorded.

- The line holds what the POST would have stored: the contact and channel from the token, and
  the proof (the moment of the request, IP, user agent, URL, form, text version, sender,
  campaign). Nothing personal beyond what the proof itself keeps.
- ``gatekeeper drain`` applies the lines within a pass, through ``record_unsubscribe``, the
  same function the POST uses: nothing for a contact erased meanwhile, nothing new for one
  that has already objected on that channel, and a line handed twice (a drainer that crashed
  before saving its progress) stores nothing twice (the objection's key is its content).
- Effective at once in the gate: every decision first calls ``settle``, which applies the
  waiting lines itself (or waits for the drainer doing so) before the decision reads the
  register. While they cannot be applied (the database still busy), the decision is refused
  with ``UnavailableError`` rather than made without them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from gatekeeper.config import Settings
from gatekeeper.db import Database, unavailable
from gatekeeper.errors import UnavailableError
from gatekeeper.links.records import (
    ContactCard,
    Proof,
    channel_states,
    load_card,
    objection_record,
    record,
    session_raw,
)
from gatekeeper.links.tokens import CHANNELS
from gatekeeper.register.context import RegisterContext, context_from
from gatekeeper.spool import KeyedLine, drain, parse_each, pending
from gatekeeper.timeparse import isoformat, parse_instant

logger = logging.getLogger(__name__)

STREAM = "unsubscribes"
VERSION = 1  # of the line's shape; a drainer refuses (logs and skips) shapes it does not know
# How long a decision waits for the drainer that holds the stream to finish applying it.
SETTLE_WAIT_SECONDS = 10.0
_POLL_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class SpooledUnsubscribe:
    contact_id: int
    channel: str
    one_click: bool  # a mailbox provider's POST (False: the page's own button)
    proof: Proof


def record_unsubscribe(
    session: Session,
    ctx: RegisterContext,
    card: ContactCard,
    channel: str,
    evidence: Proof,
    *,
    one_click: bool,
) -> bool:
    """Record the person's objection to ``channel`` (a suppression in the same transaction);
    False when one is already in force there, and nothing is recorded."""
    if channel_states(session_raw(session), card.id, evidence.sender)[channel].objected:
        return False
    record(session, ctx, [objection_record(card, [channel], "link", evidence, one_click=one_click)])
    return True


def unsubscribe_line(contact_id: int, channel: str, evidence: Proof, *, one_click: bool) -> bytes:
    """The spool line of one unsubscribe (compact JSON: never a newline)."""
    proof = {
        "occurred_at": isoformat(evidence.occurred_at),
        "ip": evidence.ip,
        "user_agent": evidence.user_agent,
        "url": evidence.url,
        "form_id": evidence.form_id,
        "text_version": evidence.text_version,
        "sender": evidence.sender,
        "campaign_id": evidence.campaign_id,
    }
    line = {"v": VERSION, "c": contact_id, "ch": channel, "oc": one_click, "p": proof}
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode()


def parse_unsubscribe(data: bytes) -> SpooledUnsubscribe:
    """The unsubscribe a line holds; ValueError when it is not one this version wrote."""
    try:
        line = json.loads(data)
        if not isinstance(line, dict) or line.get("v") != VERSION:
            raise ValueError("not an unsubscribe line")
        p = line["p"]
        evidence = Proof(
            occurred_at=_instant(p["occurred_at"]),
            ip=_opt_str(p.get("ip")),
            user_agent=_opt_str(p.get("user_agent")),
            url=_str(p["url"]),
            form_id=_str(p["form_id"]),
            text_version=_str(p["text_version"]),
            sender=_str(p["sender"]),
            campaign_id=_campaign(p.get("campaign_id")),
        )
        contact_id, channel, one_click = line["c"], line["ch"], line["oc"]
    except (KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"incomplete unsubscribe line: {exc}") from exc
    if isinstance(contact_id, bool) or not isinstance(contact_id, int) or channel not in CHANNELS:
        raise ValueError("an unsubscribe line names a contact id and a known channel")
    if not isinstance(one_click, bool):
        raise ValueError("an unsubscribe line says whether it was a one-click POST")
    return SpooledUnsubscribe(contact_id, channel, one_click, evidence)


def _instant(value: Any) -> datetime:
    return parse_instant(_str(value))


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _campaign(value: Any) -> int | str | None:
    if value is None or (isinstance(value, (int, str)) and not isinstance(value, bool)):
        return value
    raise TypeError("a campaign id is an integer or a string")


def apply_batch(session: Session, ctx: RegisterContext, items: Sequence[SpooledUnsubscribe]) -> int:
    """Record each unsubscribe in ``session`` (the caller commits); how many were new."""
    recorded = 0
    for item in items:
        card = load_card(session_raw(session), item.contact_id)
        if card is None or not card.recordable:
            continue  # erased or anonymised meanwhile: the erasure already suppressed them
        recorded += record_unsubscribe(session, ctx, card, item.channel, item.proof, one_click=item.one_click)
    return recorded


def handler(
    settings: Settings, database: Database, *, wait_ms: int | None = None
) -> Callable[[Sequence[KeyedLine]], None]:
    """The ``unsubscribes`` stream's batch handler (registered in ``gatekeeper.spool.STREAMS``);
    ``wait_ms``: how long its transaction waits for another writer (default: the engine's)."""
    ctx = context_from(settings)

    def handle(records: Sequence[KeyedLine]) -> None:
        items = parse_each(records, parse_unsubscribe, "an unsubscribe", logger)
        if items:
            with database.session_scope(wait_ms=wait_ms) as session:
                recorded = apply_batch(session, ctx, items)
            logger.info(
                "recorded %d of %d unsubscribes journaled while the database was busy", recorded, len(items)
            )

    return handle


def settle(settings: Settings, database: Database, *, wait: float | None = None) -> int:
    """Apply the journaled unsubscribes before a decision reads the register; how many lines
    were handled here. UnavailableError when some are still waiting: the database cannot take
    them yet, or the drainer applying them did not finish within ``wait`` seconds (default
    ``SETTLE_WAIT_SECONDS``)."""
    root = Path(settings.spool_dir)
    if pending(root, STREAM) == 0:  # the usual case: a stat of one directory
        return 0
    patience = SETTLE_WAIT_SECONDS if wait is None else wait
    # Each try waits for the database no longer than the whole: a request stays answerable.
    handle = handler(settings, database, wait_ms=max(1, int(patience * 1000)))
    deadline = time.monotonic() + patience
    handled = 0
    while True:
        try:
            handled += drain(root, STREAM, handle)  # 0 at once while the drainer holds it
        except OperationalError as exc:
            if not unavailable(exc):
                raise
            if time.monotonic() >= deadline:  # each try already waited the busy timeout
                raise _waiting() from exc
        else:
            if pending(root, STREAM) == 0:
                return handled
            if time.monotonic() >= deadline:
                raise _waiting()
        time.sleep(_POLL_SECONDS)


def _waiting() -> UnavailableError:
    return UnavailableError(
        "unsubscribes received while the database was busy are not recorded yet, and a decision"
        " made now would not see them; retry in a minute"
    )
