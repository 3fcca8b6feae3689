"""Tables of the retention work: the outbox of messages to send and the daily task guard.

Outbox rows hold ids only (contact, kind, the deadline of the cycle they belong to), never an
address or a name: the message is rendered from the contact when it is sent, so an anonymised
contact leaves nothing behind here and a message to a contact erased meanwhile is cancelled.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from gatekeeper.models import Base, BigId, Contact, UtcDateTime, utcnow

OUTBOX_STATES = ("queued", "sent", "failed", "cancelled")


class OutboxMessage(Base):
    """One message decided by a task, written in the transaction of that decision."""

    __tablename__ = "outbox"
    # One message per contact, kind and retention cycle: planning twice queues nothing new.
    __table_args__ = (
        UniqueConstraint("contact_id", "kind", "cycle"),
        Index("ix_outbox_state_next", "state", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))  # the template: templates/email/<kind>/
    cycle: Mapped[datetime] = mapped_column(UtcDateTime)  # the deadline this message is about
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))
    message_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class TaskRun(Base):
    """The guard: a task runs once per slot (a day, or a minute for the sender), whoever asks."""

    __tablename__ = "task_runs"
    __table_args__ = (UniqueConstraint("name", "slot"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    slot: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))  # running | done | failed
    owner: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)


# Refusals are purged at once; the index keeps that query proportional to the refusals. Partial
# (migration 0005): the contacts that never refused, nearly all, cost an insert nothing.
_REFUSED = text("refused_at IS NOT NULL")
Index("ix_contacts_refused_at", Contact.refused_at, sqlite_where=_REFUSED, postgresql_where=_REFUSED)
