"""notifications: client messages (who a message was for, who sent it) and Fineract hooks received

Revision ID: 0003_notify
Revises: 0002_security
Create Date: 2024-07-01
"""
from alembic import op
import sqlalchemy as sa

from convo.store.db import UTCDateTime

revision = "0003_notify"
down_revision = "0002_security"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "client_messages",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("outbox_id", BigId, sa.ForeignKey("outbox.id", ondelete="CASCADE"), nullable=False),
        sa.Column("client_id", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("template", sa.String(100)),
        sa.Column("sent_by", sa.String(100)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("outbox_id", name="uq_client_messages_outbox"),
    )
    op.create_index("ix_client_messages_client", "client_messages", ["client_id", "id"])
    op.create_table(
        "fineract_hooks",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("entity", sa.String(40), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(100)),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("outbox_id", BigId, sa.ForeignKey("outbox.id", ondelete="SET NULL")),
        sa.Column("detail", sa.Text),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("key", name="uq_fineract_hooks_key"),
    )
    op.create_index("ix_fineract_hooks_status", "fineract_hooks", ["status", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_fineract_hooks_status", table_name="fineract_hooks")
    op.drop_table("fineract_hooks")
    op.drop_index("ix_client_messages_client", table_name="client_messages")
    op.drop_table("client_messages")
