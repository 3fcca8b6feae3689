"""Typed SQLAlchemy models: the register's storage.

The schema itself is created by Alembic migrations (gatekeeper/migrations); a test proves the
models and the migrations agree. Coordinates of suppressed people are never stored in clear:
``Suppression.coord_hash`` is a keyed HMAC (RULES.md §4).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes everywhere; SQLite stores them naive, PostgreSQL as timestamptz."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# BigInteger ids on PostgreSQL, INTEGER PRIMARY KEY (rowid) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class GateProfileRow(Base):
    """Distinct gate profiles, shared by many contacts (the bulk gate decides once per profile)."""

    __tablename__ = "gate_profiles"
    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class Contact(Base):
    __tablename__ = "contacts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    external_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    email: Mapped[str | None] = mapped_column(String(320), unique=True)
    phone: Mapped[str | None] = mapped_column(String(20), unique=True)
    # Keyed hashes of the coordinates, so the gate joins suppressions set-based even when a
    # recipient is named by external_id (and so a hash survives when the clear text goes).
    email_hash: Mapped[str | None] = mapped_column(String(64))
    phone_hash: Mapped[str | None] = mapped_column(String(64))
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    postal_address: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    audience: Mapped[str] = mapped_column(String(8), default="b2c")
    profession_tags: Mapped[list[str] | None] = mapped_column(JSON)
    collected_at: Mapped[datetime] = mapped_column(UtcDateTime)
    collected_by: Mapped[str | None] = mapped_column(String(200))
    source_type: Mapped[str] = mapped_column(String(32), default="direct")
    source_name: Mapped[str | None] = mapped_column(String(200))
    source_proof_ref: Mapped[str | None] = mapped_column(String(200))
    purpose: Mapped[str] = mapped_column(String(32), default="marketing")
    timezone: Mapped[str | None] = mapped_column(String(64))
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Retention clock, computed by gatekeeper.domain and stored so the daily pass and the
    # gate read an indexed column instead of recomputing from the facts.
    clock: Mapped[str] = mapped_column(String(16), default="prospect")
    clock_anchor_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    clock_anchor_kind: Mapped[str | None] = mapped_column(String(32))
    deadline: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    reconsent_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    refused_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    anonymised_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    profile_key: Mapped[str | None] = mapped_column(String(32))
    instants: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Event(Base):
    """An append-only fact about a contact (API.md event types)."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_contact_occurred", "contact_id", "occurred_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    origin: Mapped[str] = mapped_column(String(32), default="api")
    # Same fact sent twice (re-import, webhook redelivery) hits this key and changes nothing.
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Suppression(Base):
    """An objection, bounce or complaint, stored as a keyed hash of the coordinate."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("coord_hash", "reason", "channels"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    coord_hash: Mapped[str] = mapped_column(String(64))  # looked up through the unique constraint
    coord_kind: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(String(32))
    channels: Mapped[str] = mapped_column(String(100))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    origin: Mapped[str] = mapped_column(String(32), default="api")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class BloctelCheck(Base):
    """When the phone list was last scrubbed against Bloctel (valid 30 days, D223-9 / L223-1)."""

    __tablename__ = "bloctel_checks"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    checked_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    numbers: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="queued")
    progress_done: Mapped[int] = mapped_column(BigInteger, default=0)
    progress_total: Mapped[int | None] = mapped_column(BigInteger)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    input_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class WebhookEvent(Base):
    """One provider event as received (raw payload kept), stored once per provider event."""

    __tablename__ = "webhook_events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    dedupe_key: Mapped[str] = mapped_column(String(255), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    provider_event: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # Not indexed here: ``webhook_event_contacts`` is its index by contact (migration 0006).
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    campaign_id: Mapped[int | None] = mapped_column(BigInteger)
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class WebhookEventContact(Base):
    """The provider events of a contact: ``webhook_events.contact_id``'s index, filled in bulk
    from ``webhook_pending`` by the drainer (``gatekeeper.register.webhook_queue``)."""

    __tablename__ = "webhook_event_contacts"
    __table_args__ = ({"sqlite_with_rowid": False},)
    contact_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    event_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)


class WebhookPending(Base):
    """Stored provider events (ids ``event_id`` to ``last_event_id``) not yet indexed in
    ``webhook_event_contacts``, and the register fact one of them makes for ``contact_id`` when
    it waits for the drainer (a click: ``effect``)."""

    __tablename__ = "webhook_pending"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[int] = mapped_column(BigId)
    last_event_id: Mapped[int] = mapped_column(BigId)
    contact_id: Mapped[int | None] = mapped_column(BigId)
    effect: Mapped[str | None] = mapped_column(Text)


class WebhookToken(Base):
    """Signature tokens already used (Mailgun signs timestamp + token only: replays are refused)."""

    __tablename__ = "webhook_tokens"
    __table_args__ = (UniqueConstraint("provider", "token"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    token: Mapped[str] = mapped_column(String(255))
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)


class CampaignRow(Base):
    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(16))
    purpose: Mapped[str] = mapped_column(String(16))
    sender: Mapped[str] = mapped_column(String(200))
    sender_nonprofit: Mapped[bool] = mapped_column(default=False)
    product_category: Mapped[str | None] = mapped_column(String(200))
    topic_tags: Mapped[list[str] | None] = mapped_column(JSON)
    professional_relevance: Mapped[bool] = mapped_column(default=False)
    partner: Mapped[str | None] = mapped_column(String(200))
    sector: Mapped[str | None] = mapped_column(String(64))
    send_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class VerdictRun(Base):
    """Every decision run (a check call or a campaign list) with the policy version that decided."""

    __tablename__ = "verdict_runs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    campaign_id: Mapped[int | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="SET NULL"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # check | list
    state: Mapped[str] = mapped_column(String(16), default="done")
    as_of: Mapped[datetime] = mapped_column(UtcDateTime)
    policy_id: Mapped[str] = mapped_column(String(32))
    policy_version: Mapped[str] = mapped_column(String(32))
    recipients: Mapped[int] = mapped_column(BigInteger, default=0)
    allowed: Mapped[int] = mapped_column(BigInteger, default=0)
    blocked: Mapped[int] = mapped_column(BigInteger, default=0)
    duplicates: Mapped[int] = mapped_column(BigInteger, default=0)
    by_reason: Mapped[dict[str, int] | None] = mapped_column(JSON)
    output_path: Mapped[str | None] = mapped_column(String(500))
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class VerdictItem(Base):
    """The verdict one known contact got in one run: part of the proof of why a person was (or
    was not) contacted. Ids and codes only, so it survives an anonymisation unchanged."""

    __tablename__ = "verdict_items"
    __table_args__ = (Index("ix_verdict_items_contact", "contact_id", "run_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("verdict_runs.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(BigInteger)
    decision: Mapped[str] = mapped_column(String(8))
    reasons: Mapped[str] = mapped_column(String(500))


from gatekeeper import models_proof as _proof  # noqa: E402,F401
from gatekeeper import models_retention as _retention  # noqa: E402,F401
