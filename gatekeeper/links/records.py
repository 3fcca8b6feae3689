"""What the public links read and record, all SQL in one place.

Consents and objections (unsubscribe, reconsent, preferences) go through the register's own
``append_events``: the same validation-free fact store, the same keyed-hash suppressions (so an
objection blocks the gate as soon as the view commits) and the same clock refresh.

``Raw`` runs DB-API statements with the dialect's placeholders: the pages' reads and the
clicks' drainer (``spooled``), which stores each batch of clicks in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy.orm import Session

from gatekeeper.domain.retention import RetentionClock
from gatekeeper.links.tokens import CHANNELS
from gatekeeper.register.context import RegisterContext
from gatekeeper.register.events import EventRecord, append_events
from gatekeeper.sqlbulk import read_json, read_ts, ts_value
from gatekeeper.timeparse import isoformat

PREFERENCE_CHANNELS = ("email", "sms", "phone", "postal")
USER_AGENT_MAX = 300  # enough to recognise a scanner; never a fingerprint


class Raw:
    """A DB-API connection with the dialect's placeholder style (SQL is written with ``?``).

    Both drivers' connections run a statement themselves (``execute`` makes the cursor)."""

    __slots__ = ("connection", "dialect")

    def __init__(self, connection: Any, dialect: str) -> None:
        self.connection = connection
        self.dialect = dialect

    def _cursor(self, sql: str, params: Sequence[Any]) -> Any:
        return self.connection.execute(_placeholders(sql, self.dialect), tuple(params))

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cursor = self._cursor(sql, params)
        row = cursor.fetchone()
        cursor.close()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        cursor = self._cursor(sql, params)
        rows = cursor.fetchall()
        cursor.close()
        return list(rows)

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cursor(sql, params).close()

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement over many parameter rows (a batch of clicks)."""
        if rows:
            cursor = self.connection.cursor()
            try:
                cursor.executemany(_placeholders(sql, self.dialect), rows)
            finally:
                cursor.close()

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a write; the number of rows it changed."""
        cursor = self._cursor(sql, params)
        changed = int(cursor.rowcount)
        cursor.close()
        return changed

    def begin(self) -> None:
        """Open a write transaction on an autocommit connection (``LinkConnections``). SQLite
        takes its write lock at once, so a transaction never fails half-way on a busy file."""
        self.connection.execute("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")

    def commit(self) -> None:
        self.connection.execute("COMMIT")

    def rollback(self) -> None:
        self.connection.execute("ROLLBACK")

    def ts(self, value: datetime | None) -> Any:
        if value is None or self.dialect != "sqlite":
            return ts_value(self.dialect, value)
        # ts_value's exact text ("%Y-%m-%d %H:%M:%S.%f", naive UTC), without strftime's cost;
        # a UTC instant (all of ours) is cut from its own ISO form, without two copies.
        if value.tzinfo is UTC:
            return value.isoformat(" ", "microseconds")[:26]
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


@lru_cache(maxsize=64)
def _placeholders(sql: str, dialect: str) -> str:
    return sql.replace("?", "%s") if dialect == "postgresql" else sql


def session_raw(session: Session) -> Raw:
    """The request's own connection, so raw reads see (and join) the view's transaction."""
    connection = session.connection()
    return Raw(connection.connection.driver_connection, connection.dialect.name)


CARD_COLUMNS = (
    "id, external_id, email, phone, first_name, last_name, postal_address, timezone, clock,"
    " deadline, anonymised_at, audience, collected_at, collected_by, source_type, purpose,"
    " profession_tags, refused_at, clock_anchor_at, clock_anchor_kind, reconsent_at"
)
_CARD_SQL = f"SELECT {CARD_COLUMNS} FROM contacts WHERE id = ?"  # noqa: S608 - constant


class ContactCard:
    """What a page may know about the person behind a token. Columns are converted when read:
    the hot pages look at two or three of them."""

    __slots__ = ("_row",)

    def __init__(self, row: Sequence[Any]) -> None:
        self._row = row

    @property
    def id(self) -> int:
        return int(self._row[0])

    @property
    def external_id(self) -> str | None:
        return self._row[1]  # type: ignore[no-any-return]

    @property
    def email(self) -> str | None:
        return self._row[2]  # type: ignore[no-any-return]

    @property
    def phone(self) -> str | None:
        return self._row[3]  # type: ignore[no-any-return]

    @property
    def has_name(self) -> bool:
        return bool(self._row[4] or self._row[5])

    @property
    def has_postal(self) -> bool:
        return bool(read_json(self._row[6]))

    @property
    def timezone(self) -> str | None:
        return self._row[7]  # type: ignore[no-any-return]

    @property
    def clock(self) -> str:
        return str(self._row[8])

    @property
    def deadline(self) -> datetime | None:
        return None if self._row[9] is None else read_ts(self._row[9])

    @property
    def anonymised(self) -> bool:
        return self._row[10] is not None

    @property
    def refused(self) -> bool:
        """Said "stop" to a reconsent: expired at once (RULES.md §4)."""
        return self._row[17] is not None

    @property
    def audience(self) -> str:
        return str(self._row[11])

    @property
    def stored_clock(self) -> RetentionClock | None:
        """The clock as last written on the row (reminder not stored); None if never written."""
        r = self._row
        if r[18] is None:
            return None
        deadline = None if r[9] is None else read_ts(r[9])
        reconsent = None if r[20] is None else read_ts(r[20])
        return RetentionClock(str(r[8]), read_ts(r[18]), str(r[19]), deadline, reconsent, None)

    @property
    def stored_columns(self) -> tuple[Any, Any, Any, Any]:
        """Clock, anchor instant, anchor kind and deadline exactly as read, to compare-and-set
        them (``clicks``): a running contract changes the deadline alone."""
        r = self._row
        return r[8], r[18], r[19], r[9]

    @property
    def ref(self) -> tuple[str, str] | None:
        """How ``append_events`` names this contact."""
        for value, kind in zip(self._row[1:4], ("external_id", "email", "phone"), strict=True):
            if value:
                return kind, value
        return None

    @property
    def recordable(self) -> bool:
        return self._row[10] is None and any(self._row[1:4])


def load_card(raw: Raw, contact_id: int) -> ContactCard | None:
    row = raw.one(_CARD_SQL, (contact_id,))
    return None if row is None else ContactCard(row)


@dataclass(frozen=True, slots=True)
class ChannelState:
    """The person's latest word on one channel for our sender."""

    answer: str | None  # "yes" (consent), "no" (refusal or objection), None (never asked)
    objected: bool  # an objection in force: no consent given after it (GDPR art. 21)


def channel_states(raw: Raw, contact_id: int, sender: str) -> dict[str, ChannelState]:
    """Same instant: "no" wins [cautious], as in the domain's own ordering."""
    rows = raw.all(
        "SELECT type, occurred_at, data FROM events WHERE contact_id = ?"
        " AND type IN ('consent', 'opposition')",
        (contact_id,),
    )
    latest: dict[str, tuple[datetime, bool, str]] = {}
    objected_at: dict[str, datetime] = {}
    consented_at: dict[str, datetime] = {}
    for etype, at, data in rows:
        when, payload = read_ts(at), read_json(data)
        for channel, answer in _answers(etype, payload, sender):
            key = (when, answer == "no", answer)
            latest[channel] = max(latest.get(channel, key), key)
            marks = objected_at if etype == "opposition" else consented_at if answer == "yes" else None
            if marks is not None:
                marks[channel] = max(marks.get(channel, when), when)
    return {
        ch: ChannelState(
            latest[ch][2] if ch in latest else None,
            ch in objected_at and consented_at.get(ch, objected_at[ch]) <= objected_at[ch],
        )
        for ch in CHANNELS
    }


def _answers(etype: str, data: dict[str, Any], sender: str) -> Iterable[tuple[str, str]]:
    if etype == "opposition":
        chans = data.get("channels") or []
        return [(ch, "no") for ch in (CHANNELS if "all" in chans else chans)]
    if data.get("sender") not in (None, "", sender):
        return []  # a consent to a partner says nothing about our sender
    return [(data.get("channel", ""), "yes" if data.get("given") else "no")]


def latest_reconsent(raw: Raw, contact_id: int, since: int) -> bool | None:
    """The last answer given to a reconsent since the link was sent (True: keep), if any."""
    rows = raw.all(
        "SELECT occurred_at, data FROM events WHERE contact_id = ? AND type = 'consent' AND occurred_at >= ?",
        (contact_id, raw.ts(from_epoch(since))),
    )
    answers = sorted(
        (read_ts(at), bool(payload.get("given")))
        for at, data in rows
        if (payload := read_json(data)).get("method") == "reconsent"
    )
    return answers[-1][1] if answers else None


@dataclass(frozen=True, slots=True)
class Proof:
    """How a consent or objection was given (RULES.md §6): when, where, by which text."""

    occurred_at: datetime
    ip: str | None
    user_agent: str | None
    url: str
    form_id: str
    text_version: str
    sender: str
    campaign_id: int | str | None

    def data(self) -> dict[str, Any]:
        values = {
            "occurred_at": isoformat(self.occurred_at),
            "ip": self.ip,
            "user_agent": (self.user_agent or "")[:USER_AGENT_MAX] or None,
            "url": self.url,
            "form_id": self.form_id,
            "text_version": self.text_version,
            "campaign_id": self.campaign_id,
        }
        return {k: v for k, v in values.items() if v is not None}


def consent_record(card: ContactCard, channel: str, given: bool, method: str, proof: Proof) -> EventRecord:
    kind, value = _ref(card)
    data = proof.data() | {
        "channel": channel,
        "given": given,
        "method": method,
        "prechecked": False,
        "bundled_with_terms": False,
        "sender": proof.sender,
    }
    return EventRecord(0, kind, value, "consent", proof.occurred_at, data)


def objection_record(
    card: ContactCard, channels: list[str], via: str, proof: Proof, **extra: Any
) -> EventRecord:
    kind, value = _ref(card)
    data = proof.data() | {"channels": channels, "via": via, **extra}
    return EventRecord(0, kind, value, "opposition", proof.occurred_at, data)


def _ref(card: ContactCard) -> tuple[str, str]:
    ref = card.ref
    if ref is None:
        raise ValueError("an anonymised contact cannot be recorded")
    return ref


def record(session: Session, ctx: RegisterContext, records: list[EventRecord]) -> None:
    """Store consents and objections; objections become suppressions in the same transaction."""
    if records:
        append_events(session, records, ctx, origin="link")


def from_epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
