"""PINs per (phone, client); the lock stays per phone

A PIN now belongs to one phone *and* one Mifos X client (``subscriber_pins``),
so on a phone shared by several clients one client's PIN never opens another's.
``subscribers`` keeps what belongs to the phone: its language and its lock.

Data: a PIN moves to its (phone, client) pair when the old row names the
client and has no half-finished PIN change pending (a change staged by a
shared phone's other client could have rewritten the row's client id, so such
a PIN cannot be trusted to its client). Other PINs are dropped: those clients
choose a new PIN the next time one is needed. Locks are kept, and so are the
wrong-PIN counts of the PINs that move.

Revision ID: 0005_pin_pairs
Revises: 0004_transfers
"""
from alembic import op
import sqlalchemy as sa

from convo.store.db import UTCDateTime

revision = "0005_pin_pairs"
down_revision = "0004_transfers"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_OLD_PIN_COLUMNS = ("client_id", "pin_hash", "new_pin_hash", "new_pin_until", "failed_attempts", "pin_set_at")


def upgrade() -> None:
    op.create_table(
        "subscriber_pins",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("phone", sa.String(32), nullable=False),
        sa.Column("client_id", sa.BigInteger, nullable=False),
        sa.Column("pin_hash", sa.String(200)),
        sa.Column("new_pin_hash", sa.String(200)),
        sa.Column("new_pin_until", UTCDateTime),
        sa.Column("failed_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("pin_set_at", UTCDateTime),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("phone", "client_id", name="uq_subscriber_pins_phone_client"),
    )
    op.execute(
        "INSERT INTO subscriber_pins (phone, client_id, pin_hash, failed_attempts, pin_set_at, created_at, updated_at) "
        "SELECT phone, client_id, pin_hash, failed_attempts, pin_set_at, created_at, updated_at FROM subscribers "
        "WHERE client_id IS NOT NULL AND pin_hash IS NOT NULL AND new_pin_hash IS NULL")
    with op.batch_alter_table("subscribers") as batch:
        for col in _OLD_PIN_COLUMNS:
            batch.drop_column(col)


def downgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("client_id", sa.BigInteger))
        batch.add_column(sa.Column("pin_hash", sa.String(200)))
        batch.add_column(sa.Column("new_pin_hash", sa.String(200)))
        batch.add_column(sa.Column("new_pin_until", UTCDateTime))
        batch.add_column(sa.Column("failed_attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("pin_set_at", UTCDateTime))
    # one PIN per phone again: the most recently set one (its client's); the phone's wrong PINs added up
    op.execute(
        "UPDATE subscribers SET "
        "client_id = (SELECT p.client_id FROM subscriber_pins p WHERE p.phone = subscribers.phone "
        "AND p.pin_hash IS NOT NULL ORDER BY p.pin_set_at DESC, p.id DESC LIMIT 1), "
        "pin_hash = (SELECT p.pin_hash FROM subscriber_pins p WHERE p.phone = subscribers.phone "
        "AND p.pin_hash IS NOT NULL ORDER BY p.pin_set_at DESC, p.id DESC LIMIT 1), "
        "pin_set_at = (SELECT p.pin_set_at FROM subscriber_pins p WHERE p.phone = subscribers.phone "
        "AND p.pin_hash IS NOT NULL ORDER BY p.pin_set_at DESC, p.id DESC LIMIT 1), "
        "failed_attempts = COALESCE((SELECT SUM(p.failed_attempts) FROM subscriber_pins p "
        "WHERE p.phone = subscribers.phone), 0)")
    op.drop_table("subscriber_pins")
