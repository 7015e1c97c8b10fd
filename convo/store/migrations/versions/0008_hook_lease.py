"""fineract_hooks: a lease (who is building the receipt, until when) and when a pending hook is retried

* ``leased_by`` / ``lease_until`` - the ``processing`` row's owner and lease (convo/store/lease.py), as on the
  outbox and transfer_requests: a row taken over after its lease ran out cannot be finished by the old owner.
  Rows left ``processing`` by the schema before (no owner) are claimable at once.
* ``next_attempt_at`` - when the worker retries a ``pending`` hook (backoff).

Revision ID: 0008_hook_lease
Revises: 0007_gateway_costs
"""
import sqlalchemy as sa
from alembic import op

from convo.store.db import UTCDateTime

revision = "0008_hook_lease"
down_revision = "0007_gateway_costs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fineract_hooks") as batch:
        batch.add_column(sa.Column("next_attempt_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("leased_by", sa.String(100), nullable=True))
        batch.add_column(sa.Column("lease_until", UTCDateTime(), nullable=True))
    # pending hooks are due at once; a row left processing (no owner) can be taken over at once
    op.execute("UPDATE fineract_hooks SET next_attempt_at = updated_at")
    op.execute("UPDATE fineract_hooks SET lease_until = updated_at WHERE status = 'processing'")


def downgrade() -> None:
    with op.batch_alter_table("fineract_hooks") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("leased_by")
        batch.drop_column("next_attempt_at")
