"""Tables of the notifications (issue 6): who a message was for and who sent it; Fineract hooks received.

* ``client_messages`` - one row per notification written to the outbox for a
  Mifos X client (staff message, reminder, receipt): links the outbox row to
  the client id, so a client's page lists what was sent with its status,
  segments and cost (those stay on the outbox row).
* ``fineract_hooks`` - every Fineract webhook call, once per idempotency key
  (entity, action, resource and transaction ids): a replayed hook finds its
  row and sends nothing again. ``status``: ``received`` → ``done`` |
  ``ignored`` (not a receipt, failed command, reversed transaction) |
  ``pending`` (Mifos X could not be asked; retried by the worker, with backoff, at
  ``next_attempt_at``). While one process builds the receipt the row is
  ``processing``, leased (``leased_by``, ``lease_until``: :mod:`convo.store.lease`).
* ``notify_alerts`` is not needed: alert idempotency is the outbox key.

Schema: migrations ``0003_notify``, ``0008_hook_lease``.
"""
from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from convo.store.db import Base, UTCDateTime, utcnow

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

__all__ = ["ClientMessage", "FineractHook"]


class ClientMessage(Base):
    __tablename__ = "client_messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    outbox_id: Mapped[int] = mapped_column(BigId, sa.ForeignKey("outbox.id", ondelete="CASCADE"), nullable=False)
    client_id: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    #: staff | reminder | meeting | receipt
    kind: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    #: locale key of the template (None for free text)
    template: Mapped[str | None] = mapped_column(sa.String(100))
    #: the staff user who sent it (staff messages), else the job that did
    sent_by: Mapped[str | None] = mapped_column(sa.String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (
        sa.UniqueConstraint("outbox_id", name="uq_client_messages_outbox"),
        sa.Index("ix_client_messages_client", "client_id", "id"),
    )


class FineractHook(Base):
    __tablename__ = "fineract_hooks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    entity: Mapped[str] = mapped_column(sa.String(40), nullable=False)
    action: Mapped[str] = mapped_column(sa.String(40), nullable=False)
    tenant: Mapped[str | None] = mapped_column(sa.String(100))
    body: Mapped[dict] = mapped_column(sa.JSON, nullable=False, default=dict)
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False, default="received")
    attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    outbox_id: Mapped[int | None] = mapped_column(BigId, sa.ForeignKey("outbox.id", ondelete="SET NULL"))
    detail: Mapped[str | None] = mapped_column(sa.Text)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    #: when a ``received`` / ``pending`` hook may be tried (again)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    leased_by: Mapped[str | None] = mapped_column(sa.String(100))
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        sa.UniqueConstraint("key", name="uq_fineract_hooks_key"),
        sa.Index("ix_fineract_hooks_status", "status", "updated_at"),
    )
