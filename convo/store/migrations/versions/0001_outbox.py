"""outbox, delivery reports, opt-outs

Revision ID: 0001_outbox
Revises:
Create Date: 2024-06-01
"""
from alembic import op
import sqlalchemy as sa

from convo.store.db import UTCDateTime

revision = "0001_outbox"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("recipient", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("encoding", sa.String(8), nullable=False),
        sa.Column("chars", sa.Integer, nullable=False),
        sa.Column("segments", sa.Integer, nullable=False),
        sa.Column("gateway", sa.String(32)),
        sa.Column("sender_id", sa.String(32)),
        sa.Column("link_id", sa.String(100)),
        sa.Column("requested_by_client", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime, nullable=False),
        sa.Column("lease_until", UTCDateTime),
        sa.Column("leased_by", sa.String(100)),
        sa.Column("last_attempt_at", UTCDateTime),
        sa.Column("provider_id", sa.String(100)),
        sa.Column("provider_status", sa.String(40)),
        sa.Column("status_code", sa.Integer),
        sa.Column("cost", sa.String(32)),
        sa.Column("parts", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("sent_at", UTCDateTime),
        sa.Column("final_at", UTCDateTime),
        sa.UniqueConstraint("idempotency_key", name="uq_outbox_idempotency_key"),
    )
    op.create_index("ix_outbox_due", "outbox", ["status", "next_attempt_at"])
    op.create_index("ix_outbox_recipient", "outbox", ["recipient"])
    op.create_index("ix_outbox_provider_id", "outbox", ["provider_id"])

    op.create_table(
        "delivery_reports",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("gateway", sa.String(32), nullable=False),
        sa.Column("provider_id", sa.String(100), nullable=False),
        sa.Column("provider_status", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16)),
        sa.Column("phone", sa.String(32)),
        sa.Column("network_code", sa.String(16)),
        sa.Column("failure_reason", sa.String(100)),
        sa.Column("retry_count", sa.Integer),
        sa.Column("outbox_id", BigId, sa.ForeignKey("outbox.id", ondelete="SET NULL")),
        sa.Column("raw", sa.JSON, nullable=False),
        sa.Column("received_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_delivery_reports_provider_id", "delivery_reports", ["provider_id"])
    op.create_index("ix_delivery_reports_outbox_id", "delivery_reports", ["outbox_id"])

    op.create_table(
        "opt_outs",
        sa.Column("phone", sa.String(32), primary_key=True),
        sa.Column("opted_out", sa.Boolean, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("opt_outs")
    op.drop_table("delivery_reports")
    op.drop_table("outbox")
