"""proof journal: hash-chained entries, per-register heads, per-contact subject salts

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import gatekeeper.models

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "journal",
        sa.Column("id", _ID, nullable=False),
        sa.Column("register", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", gatekeeper.models.UtcDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject_ref", sa.String(length=64), nullable=False),
        sa.Column("subject_hash", sa.String(length=64), nullable=True),
        sa.Column("fact_table", sa.String(length=16), nullable=True),
        sa.Column("fact_id", sa.BigInteger(), nullable=True),
        sa.Column("payload_digest", sa.String(length=64), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_journal")),
        sa.UniqueConstraint("register", "seq", name=op.f("uq_journal_register")),
    )
    with op.batch_alter_table("journal", schema=None) as batch_op:
        batch_op.create_index("ix_journal_fact", ["fact_table", "fact_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_journal_subject_ref"), ["subject_ref"], unique=False)
    op.create_table(
        "journal_heads",
        sa.Column("register", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("register", name=op.f("pk_journal_heads")),
    )
    op.create_table(
        "journal_subjects",
        sa.Column("contact_id", sa.BigInteger(), nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("contact_id", name=op.f("pk_journal_subjects")),
    )


def downgrade() -> None:
    op.drop_table("journal_subjects")
    op.drop_table("journal_heads")
    with op.batch_alter_table("journal", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_journal_subject_ref"))
        batch_op.drop_index("ix_journal_fact")
    op.drop_table("journal")
