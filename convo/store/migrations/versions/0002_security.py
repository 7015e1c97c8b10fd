"""subscribers (PIN state) and the audit log

Revision ID: 0002_security
Revises: 0001_outbox
Create Date: 2024-06-15
"""
from alembic import op
import sqlalchemy as sa

from convo.store.db import UTCDateTime

revision = "0002_security"
down_revision = "0001_outbox"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "subscribers",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("client_id", sa.BigInteger),
        sa.Column("language", sa.String(8)),
        sa.Column("pin_hash", sa.String(200)),
        sa.Column("new_pin_hash", sa.String(200)),
        sa.Column("new_pin_until", UTCDateTime),
        sa.Column("failed_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("locked_until", UTCDateTime),
        sa.Column("pin_set_at", UTCDateTime),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("phone", name="uq_subscribers_phone"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.Column("actor", sa.String(120), nullable=False),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("channel", sa.String(16)),
        sa.Column("phone", sa.String(32)),
        sa.Column("client_id", sa.BigInteger),
        sa.Column("outcome", sa.String(40)),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_audit_log_phone", "audit_log", ["phone"])
    op.create_index("ix_audit_log_client_id", "audit_log", ["client_id"])
    op.create_index("ix_audit_log_at", "audit_log", ["at"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("subscribers")
