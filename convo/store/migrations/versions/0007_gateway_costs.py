"""outbox: the gateway a reply must leave through, the destination country, and what a message cost

* ``via`` - the gateway the client's message came in on (a reply leaves through it; NULL: routed by
  country, cheapest first). ``gateway`` keeps naming the gateway that actually took the message.
* ``country`` - the recipient's region code (phonenumbers), as routed.
* ``cost_amount`` / ``cost_currency`` - the route's price per segment x segments, in the route's currency
  (``convo report costs``, ``/metrics``).

Revision ID: 0007_gateway_costs
Revises: 0006_transfer_date
"""
from alembic import op
import sqlalchemy as sa

revision = "0007_gateway_costs"
down_revision = "0006_transfer_date"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("via", sa.String(32), nullable=True))
        batch.add_column(sa.Column("country", sa.String(2), nullable=True))
        batch.add_column(sa.Column("cost_amount", sa.Numeric(18, 6), nullable=True))
        batch.add_column(sa.Column("cost_currency", sa.String(3), nullable=True))
    op.create_index("ix_outbox_sent_at", "outbox", ["sent_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_sent_at", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("cost_currency")
        batch.drop_column("cost_amount")
        batch.drop_column("country")
        batch.drop_column("via")
