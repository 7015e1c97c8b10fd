"""transfer_requests.transfer_date: the date a repayment is sent to Fineract with

Fineract refuses a transfer dated after its business date (400
``error.msg.savingsaccount.transaction.in.the.future``) and keeps that answer
under the Idempotency-Key, so a new date needs a new key. The date (and with
it the key sent) is chosen once and kept, so a retry after an unknown outcome
(timeout) sends the same date and key and can never move the money twice.

Revision ID: 0006_transfer_date
Revises: 0005_pin_pairs
"""
from alembic import op
import sqlalchemy as sa

revision = "0006_transfer_date"
down_revision = "0005_pin_pairs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("transfer_requests") as batch:
        batch.add_column(sa.Column("transfer_date", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("transfer_requests") as batch:
        batch.drop_column("transfer_date")
