"""webhook_events: the contact index is built in bulk from a queue, beside the table

Revision ID: 0006
Revises: 0005

A 500-event batch names about 450 different contacts. Indexed on ``webhook_events.contact_id``,
each of them dirtied a different leaf page of that index, and SQLite's write-ahead log writes
whole pages at every commit: 286 of the 699 pages a SendGrid batch wrote (bench/webhooks.py),
against 56 for the events themselves. The request now appends to ``webhook_pending`` one row
naming the range of event ids it stored, in the events' transaction; the drainer indexes the
ranges in sorted bulk into ``webhook_event_contacts``, where one pass writes each leaf once for
thousands of events. The queue also holds the register facts of clicks (``effect``), applied by
the same pass. Readers by contact look in both (``gatekeeper.register.webhook_queue``).

suppressions: the index on ``coord_hash`` alone goes; the unique constraint leads with it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "webhook_event_contacts",
        sa.Column("contact_id", ID, nullable=False),
        sa.Column("event_id", ID, nullable=False),
        sa.PrimaryKeyConstraint("contact_id", "event_id", name=op.f("pk_webhook_event_contacts")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "webhook_pending",
        sa.Column("id", ID, nullable=False),
        sa.Column("event_id", ID, nullable=False),
        sa.Column("last_event_id", ID, nullable=False),
        sa.Column("contact_id", ID, nullable=True),
        sa.Column("effect", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_pending")),
    )
    op.execute(
        "INSERT INTO webhook_event_contacts (contact_id, event_id)"
        " SELECT contact_id, id FROM webhook_events WHERE contact_id IS NOT NULL"
    )
    op.drop_index("ix_webhook_events_contact_id", table_name="webhook_events")
    # The unique constraint on (coord_hash, reason, channels) already leads with the hash and
    # answers every lookup; this copy cost each suppression a second random leaf (17 of the
    # 154 pages a batch still wrote).
    op.drop_index("ix_suppressions_coord_hash", table_name="suppressions")


def downgrade() -> None:
    op.create_index("ix_suppressions_coord_hash", "suppressions", ["coord_hash"], unique=False)
    op.create_index("ix_webhook_events_contact_id", "webhook_events", ["contact_id"], unique=False)
    op.drop_table("webhook_pending")
    op.drop_table("webhook_event_contacts")
