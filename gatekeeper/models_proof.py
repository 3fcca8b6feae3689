"""Tables of the proof journal (issue 7, RULES.md §6).

The journal holds references and digests only, never a coordinate or a name: anonymising a
contact leaves every entry (and so the chain) intact. ``journal_subjects`` holds one random salt
per contact for the entries' ``subject_hash``; erasure deletes the salt (crypto-shredding), so the
hashes left in the chain can no longer be linked to the person, even by the holder of the key.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from gatekeeper.models import Base, BigId, UtcDateTime


class JournalEntry(Base):
    """One link of the hash chain: ``entry_hash`` = SHA-256 of the canonical entry, which
    includes ``prev_hash``, the ``entry_hash`` of the entry before it in the same register."""

    __tablename__ = "journal"
    __table_args__ = (
        UniqueConstraint("register", "seq"),
        Index("ix_journal_fact", "fact_table", "fact_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    register: Mapped[str] = mapped_column(String(32))
    seq: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    kind: Mapped[str] = mapped_column(String(32))
    subject_ref: Mapped[str] = mapped_column(String(64), index=True)
    subject_hash: Mapped[str | None] = mapped_column(String(64))
    fact_table: Mapped[str | None] = mapped_column(String(16))
    fact_id: Mapped[int | None] = mapped_column(BigInteger)
    payload_digest: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class JournalHead(Base):
    """The last entry of each register: locked (``FOR UPDATE``) to serialise appends on
    PostgreSQL, and compared with the last row so a removed tail is noticed."""

    __tablename__ = "journal_heads"
    register: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    entry_hash: Mapped[str] = mapped_column(String(64))


class JournalSubject(Base):
    """The per-contact salt of ``JournalEntry.subject_hash``; deleted at anonymisation."""

    __tablename__ = "journal_subjects"
    contact_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    salt: Mapped[str] = mapped_column(String(64))
