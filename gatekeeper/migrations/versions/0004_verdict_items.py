"""verdict items: the verdict each known contact got in each run

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "verdict_items",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("contact_id", sa.BigInteger(), nullable=False),
        sa.Column("decision", sa.String(length=8), nullable=False),
        sa.Column("reasons", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["verdict_runs.id"],
            name=op.f("fk_verdict_items_run_id_verdict_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_verdict_items")),
    )
    with op.batch_alter_table("verdict_items", schema=None) as batch_op:
        batch_op.create_index("ix_verdict_items_contact", ["contact_id", "run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("verdict_items", schema=None) as batch_op:
        batch_op.drop_index("ix_verdict_items_contact")
    op.drop_table("verdict_items")
