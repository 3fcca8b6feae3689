"""Tracked clicks and downloads: one spool line per hit, applied to the database in batches.

Theory of operation
-------------------
A click has no legal urgency, and storing it in its own transaction cost about three times
the request around it (a commit behind a writer lock shared by the web workers, nine WAL pages
of indexes; the lock convoys were the click p99). So the fast path only verifies the token,
decides whether the hit *counts* (RULES.md §4: a HEAD, a scanner's or no user agent, a hit
within the grace period after the send never restarts a clock) and appends one compact line
(``click_record``) to the ``clicks`` spool, then redirects. ``gatekeeper drain`` hands the lines
to ``handler``'s function in batches of thousands, each applied in one transaction:

1. the lines are parsed; a malformed one is logged with its key and skipped, never blocking
   the stream;
2. the contacts named are read once (locked, in id order, on PostgreSQL; SQLite's
   ``BEGIN IMMEDIATE`` already holds the single write lock); a contact that is gone or erased
   gets nothing stored, as before;
3. the interest events go in with one ``executemany``, ``ON CONFLICT (dedupe_key) DO NOTHING``:
   the key is computed from the event's content exactly as before, so a batch handed twice
   (a drainer that crashed before saving its progress) stores nothing twice;
4. each contact's stored clock is folded with ``clock_after_interest`` over its counting hits
   (a maximum: an older click, or the same click again, never moves a clock back) and written
   with one ``executemany``; a contact without a usable stored clock (never written, or a
   refused reconsent, whose instant is not in the clock) is recomputed from every fact by the
   register's ``refresh_after_interest``, as the per-click path did.

The event rows are the ones the per-click transaction wrote: same fields, same instant
(``occurred_at`` and ``created_at`` are the moment of the hit, carried in the line), same key.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from gatekeeper.config import Settings
from gatekeeper.db import Database, checkpoint_wal
from gatekeeper.domain.policy import Policy
from gatekeeper.domain.retention import clock_after_interest
from gatekeeper.links.connection import LinkConnections
from gatekeeper.links.records import CARD_COLUMNS, USER_AGENT_MAX, ContactCard, Raw, from_epoch
from gatekeeper.links.tokens import TRACKED, CampaignId, json_object
from gatekeeper.register.clocks import refresh_after_interest
from gatekeeper.register.context import context_from
from gatekeeper.register.rawsql import Sql, ints
from gatekeeper.register.schema import dedupe_key
from gatekeeper.spool import KeyedLine, parse_each
from gatekeeper.timeparse import isoformat

logger = logging.getLogger(__name__)

STREAM = "clicks"
VERSION = 1  # of the line's shape; a drainer refuses (logs and skips) shapes it does not know
CHUNK = 500  # contacts per IN (...) read
# SQLite: the WAL is copied into the database after this many clicks, not after every batch.
# A checkpoint copies each page once however often it changed since the last one (the index
# pages every click touches): every 5,000 clicks instead of every 600-click batch, the copy
# costs a third as much per click (measured), and the WAL stays around a hundred MB at most.
CHECKPOINT_CLICKS = 5000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# json.dumps(..., separators=(",", ":"), ensure_ascii=False) without an encoder built per call;
# JSON escapes every control character, so a line never holds a newline.
_compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class SpooledClick:
    """One hit of a tracked link, as the fast path saw it."""

    purpose: str  # click | download
    contact_id: int
    campaign_id: CampaignId
    url: str
    sent_at: int | None  # epoch seconds, from the token
    method: str
    user_agent: str | None  # already cut to USER_AGENT_MAX
    at: datetime  # the moment of the hit
    counts: bool  # decided by ``interest_counts`` when it happened


def click_record(
    purpose: str,
    contact_id: int,
    campaign_id: CampaignId,
    url: str,
    sent_at: int | None,
    *,
    method: str,
    user_agent: str | None,
    at: datetime,
    counts: bool,
) -> bytes:
    """The spool line of one hit: compact JSON, the instant in integer microseconds. Written
    by hand (every text through ``_json_text``), a third of ``json.dumps`` of a dict; a test
    proves ``parse_click`` reads back every field."""
    agent = (user_agent or "")[:USER_AGENT_MAX] or None
    return (
        f'{{"v":{VERSION},"k":{_json_text(purpose)},"c":{int(contact_id)},'
        f'"m":{_json_campaign(campaign_id)},"u":{_json_text(url)},'
        f'"s":{"null" if sent_at is None else int(sent_at)},"me":{_json_text(method.upper())},'
        f'"ua":{"null" if agent is None else _json_text(agent)},'
        f'"t":{(at - _EPOCH) // _MICROSECOND},"n":{"true" if counts else "false"}}}'
    ).encode()


@lru_cache(maxsize=4096)
def _json_text(value: str) -> str:
    # Destinations, user agents and methods repeat across a campaign's clicks: escape each once.
    return _compact_json(value)


def _json_campaign(campaign_id: CampaignId) -> str:
    if campaign_id is None:
        return "null"
    return str(int(campaign_id)) if isinstance(campaign_id, int) else _json_text(campaign_id)


def parse_click(data: bytes) -> SpooledClick:
    """The hit a line holds; ValueError when it is not one this version wrote."""
    try:
        line = json_object(data)
        if not isinstance(line, dict) or line.get("v") != VERSION or line.get("k") not in TRACKED:
            raise ValueError("not a click line")
        click = SpooledClick(
            purpose=line["k"],
            contact_id=_int(line["c"]),
            campaign_id=line.get("m"),
            url=_str(line["u"]),
            sent_at=None if line.get("s") is None else _int(line["s"]),
            method=_str(line["me"]),
            user_agent=None if line.get("ua") is None else _str(line["ua"]),
            at=_EPOCH + _int(line["t"]) * _MICROSECOND,
            counts=_bool(line["n"]),
        )
    except (KeyError, TypeError, OverflowError, UnicodeDecodeError) as exc:
        raise ValueError(f"incomplete click line: {exc}") from exc
    if not isinstance(click.campaign_id, (int, str, type(None))) or isinstance(click.campaign_id, bool):
        raise ValueError("a campaign id is an integer or a string")
    return click


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("expected an integer")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected true or false")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def handler(settings: Settings, database: Database) -> Callable[[Sequence[KeyedLine]], None]:
    """The ``clicks`` stream's batch handler (registered in ``gatekeeper.spool.STREAMS``)."""
    policy = context_from(settings).policy
    connections = LinkConnections(database.engine)
    since_checkpoint = [CHECKPOINT_CLICKS]  # the first batch checkpoints: short-lived drainers too

    def handle(records: Sequence[KeyedLine]) -> None:
        clicks = parse_batch(records)
        if not clicks:
            return
        since_checkpoint[0] += len(clicks)
        checkpoint = since_checkpoint[0] >= CHECKPOINT_CLICKS
        apply_in_transaction(connections, policy, clicks, checkpoint=checkpoint)
        if checkpoint:
            since_checkpoint[0] = 0

    return handle


def parse_batch(records: Iterable[KeyedLine]) -> list[SpooledClick]:
    return parse_each(records, parse_click, "a click", logger)


def apply_in_transaction(
    connections: LinkConnections, policy: Policy, clicks: list[SpooledClick], *, checkpoint: bool = True
) -> None:
    raw = connections.borrow()
    try:
        raw.begin()
        try:
            store_clicks(raw, policy, clicks)
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
    except BaseException:
        connections.give_back(raw, healthy=False)
        raise
    if checkpoint and raw.dialect == "sqlite":
        # The kept connections never checkpoint inside a commit; between batches is the
        # moment (``checkpoint_wal``).
        checkpoint_wal(raw.connection)
    connections.give_back(raw)


def store_clicks(raw: Raw, policy: Policy, clicks: list[SpooledClick]) -> int:
    """Insert the events and move the clocks, inside the caller's write transaction; the
    number of hits stored (those of contacts still recordable)."""
    cards = _cards(raw, sorted({c.contact_id for c in clicks}))
    kept = [c for c in clicks if (card := cards.get(c.contact_id)) is not None and card.recordable]
    raw.many(_INSERT_INTEREST, [_event_row(raw, c) for c in kept])
    counting = [c for c in kept if c.counts]
    moves, recompute = _plan_clocks(raw, policy, cards, counting)
    raw.many(_MOVE_CLOCK, moves)
    if recompute:
        sql = Sql(raw.connection, raw.dialect, _driver_error(raw.dialect))
        refresh_after_interest(sql, recompute, policy)
    return len(kept)


def _cards(raw: Raw, ids: list[int]) -> dict[int, ContactCard]:
    # PostgreSQL: the rows stay locked until the commit, so the clocks written are computed
    # from the rows as they are (NO KEY UPDATE, in id order, as the register's refresh does).
    lock = " ORDER BY id FOR NO KEY UPDATE" if raw.dialect == "postgresql" else ""
    cards: dict[int, ContactCard] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = ints(ids[start : start + CHUNK])
        query = f"SELECT {CARD_COLUMNS} FROM contacts WHERE id IN ({chunk}){lock}"  # noqa: S608 - ints only
        for row in raw.all(query):
            card = ContactCard(row)
            cards[card.id] = card
    return cards


def _event_row(raw: Raw, click: SpooledClick) -> tuple[Any, ...]:
    # The same data, in the same order, as the per-click transaction stored: same dedupe key.
    data: dict[str, Any] = {
        "kind": click.purpose,
        "occurred_at": isoformat(click.at),
        "counts": click.counts,
        "detail": click.url,
        "campaign_id": click.campaign_id,
        "method": click.method,
        "user_agent": click.user_agent,
        "sent_at": None if click.sent_at is None else _sent_text(click.sent_at),
    }
    data = {k: v for k, v in data.items() if v is not None}
    at = raw.ts(click.at)
    return (
        click.contact_id,
        at,
        _compact_json(data),
        dedupe_key("contact_id", click.contact_id, "interest", data),
        at,
    )


@lru_cache(maxsize=1024)
def _sent_text(sent_at: int) -> str | None:
    # A campaign's clicks carry the same few send times.
    return isoformat(from_epoch(sent_at))


def _plan_clocks(
    raw: Raw, policy: Policy, cards: dict[int, ContactCard], counting: list[SpooledClick]
) -> tuple[list[tuple[Any, ...]], dict[int, datetime]]:
    """The clock updates (``_MOVE_CLOCK`` rows) and the contacts to recompute, with the latest
    counting hit of each."""
    by_contact: dict[int, list[SpooledClick]] = defaultdict(list)
    for click in counting:
        by_contact[click.contact_id].append(click)
    moves: list[tuple[Any, ...]] = []
    recompute: dict[int, datetime] = {}
    for cid, hits in by_contact.items():
        card = cards[cid]
        stored = card.stored_clock
        if stored is None or card.refused:
            recompute[cid] = max(h.at for h in hits)
            continue
        clock = stored
        for hit in hits:
            clock = clock_after_interest(clock, card.audience, hit.purpose, hit.at, policy)
        if clock is not stored:
            moved = (
                raw.ts(clock.anchor_at),
                clock.anchor_kind,
                raw.ts(clock.deadline),
                raw.ts(clock.reconsent_at),
            )
            moves.append((*moved, cid))
    return moves, recompute


_INSERT_INTEREST = (
    "INSERT INTO events (contact_id, type, occurred_at, data, origin, dedupe_key, created_at)"
    " VALUES (?, 'interest', ?, ?, 'link', ?, ?) ON CONFLICT (dedupe_key) DO NOTHING"
)
_MOVE_CLOCK = (
    "UPDATE contacts SET clock_anchor_at = ?, clock_anchor_kind = ?,"
    " deadline = ?, reconsent_at = ? WHERE id = ?"
)


def _driver_error(dialect: str) -> type[Exception]:
    if dialect == "sqlite":
        return sqlite3.Error
    import psycopg  # noqa: PLC0415 - only ever loaded with PostgreSQL

    return psycopg.Error
