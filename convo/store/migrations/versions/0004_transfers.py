"""transfer_requests: repayments from savings made after the USSD/SMS dialog

Revision ID: 0004_transfers
Revises: 0003_notify
"""
from alembic import op
import sqlalchemy as sa

from convo.store.db import UTCDateTime

revision = "0004_transfers"
down_revision = "0003_notify"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "transfer_requests",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("lang", sa.String(8), nullable=False),
        sa.Column("client_id", sa.BigInteger, nullable=False),
        sa.Column("office_id", sa.BigInteger),
        sa.Column("savings_id", sa.BigInteger, nullable=False),
        sa.Column("loan_id", sa.BigInteger, nullable=False),
        sa.Column("amount", sa.Numeric(19, 6), nullable=False),
        sa.Column("currency", sa.JSON, nullable=False),
        sa.Column("loan_label", sa.String(120), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime, nullable=False),
        sa.Column("lease_until", UTCDateTime),
        sa.Column("leased_by", sa.String(80)),
        sa.Column("resource_id", sa.BigInteger),
        sa.Column("error", sa.String(300)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index("ix_transfer_requests_due", "transfer_requests", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("transfer_requests")
