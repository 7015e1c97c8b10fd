"""The ``transfer_requests`` table (repayments from savings asked for over USSD/SMS) and how a request is recorded.

The dialog records a request (:func:`request_transfer`) and ends; the worker's
transfer task (:mod:`convo.jobs.transfers`) leases due rows, moves the money in
Mifos X and writes the SMS. Schema: migrations ``0004_transfers``, ``0006_transfer_date``.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from convo.store.db import Base, UTCDateTime, utcnow
from convo.store.lease import LeaseTable

__all__ = ["FINAL", "TRANSFER_LEASE", "TransferRequest", "request_transfer", "table"]

FINAL = ("done", "failed", "unknown")


class TransferRequest(Base):
    __tablename__ = "transfer_requests"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                                    autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(sa.String(200), unique=True)
    phone: Mapped[str] = mapped_column(sa.String(32))
    lang: Mapped[str] = mapped_column(sa.String(8))
    client_id: Mapped[int] = mapped_column(sa.BigInteger)
    office_id: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    savings_id: Mapped[int] = mapped_column(sa.BigInteger)
    loan_id: Mapped[int] = mapped_column(sa.BigInteger)
    amount: Mapped[Decimal] = mapped_column(sa.Numeric(19, 6))
    currency: Mapped[dict] = mapped_column(sa.JSON)
    loan_label: Mapped[str] = mapped_column(sa.String(120))
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    leased_by: Mapped[str | None] = mapped_column(sa.String(80), nullable=True)
    resource_id: Mapped[int | None] = mapped_column(sa.BigInteger, nullable=True)
    error: Mapped[str | None] = mapped_column(sa.String(300), nullable=True)
    #: the date sent to Fineract (chosen at the first attempt; changed only after a 400 "in the future")
    transfer_date: Mapped[dt.date | None] = mapped_column(sa.Date, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    __table_args__ = (sa.Index("ix_transfer_requests_due", "status", "next_attempt_at"),)


# a declarative model's ``__table__`` is typed as a FromClause; this is a Table (insert/update)
table = cast(sa.Table, TransferRequest.__table__)


def request_transfer(db, *, idempotency_key: str, phone: str, lang: str, client_id: int, office_id: int | None,
                     savings_id: int, loan_id: int, amount: Decimal, currency: dict, loan_label: str) -> int:
    """Record one repayment to make; the same key again is the same request. Returns its id."""
    now = utcnow()
    values = dict(idempotency_key=idempotency_key, phone=phone, lang=lang, client_id=client_id,
                  office_id=office_id, savings_id=savings_id, loan_id=loan_id, amount=Decimal(amount),
                  currency=currency, loan_label=loan_label[:120], status="pending", attempts=0,
                  next_attempt_at=now, created_at=now, updated_at=now)
    with db.begin() as conn:
        stmt: sa.Insert
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt = pg_insert(table).values(**values).on_conflict_do_nothing(index_elements=["idempotency_key"])
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(table).values(**values).on_conflict_do_nothing(index_elements=["idempotency_key"])
        conn.execute(stmt)
        return conn.execute(sa.select(table.c.id).where(table.c.idempotency_key == idempotency_key)).scalar_one()


#: the lease columns: ``pending`` rows due at ``next_attempt_at``, ``running`` while leased
TRANSFER_LEASE = LeaseTable(table, ready=("pending",), leased="running")
