"""Repay a loan from savings, after the USSD session: requests, the runner, the SMS receipt.

A repayment asked for over USSD or SMS becomes one ``transfer_requests`` row
(unique idempotency key) and the dialog ends with "you will receive an SMS":
a slow Mifos X can never time the session out. The runner (a thread of
``convo worker``, and of ``convo demo``) leases due rows like the outbox
worker does (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), calls
``POST /accounttransfers`` and writes the outcome to the outbox as an SMS in
the client's language.

The transfer date is Fineract's business date (:meth:`MifosClient.business_date`:
``GET /businessdate/BUSINESS_DATE`` when that feature is on, else today in
``CONVO_TIMEZONE``, which must be the tenant's time zone), chosen at the first
attempt and stored in ``transfer_date``. The ``Idempotency-Key`` is derived
from the row's key and that date (``<key>@<date>``, sent as a 46-character
digest: Fineract's column holds 50). So:

* done: money moved once (a retried call is answered from Fineract's cache);
* date after Fineract's business date (400 ``...transaction.in.the.future``):
  nothing moved; the business date is read again, stored, and the transfer is
  sent at once with it and its own key (Fineract keeps the 400 under the old key);
* insufficient funds (403, either code variant), other refusals (400/403):
  failed at once, the SMS says why;
* Mifos X down, timeout, 425 (and 409, which ``/accounttransfers`` does not
  answer today: the close-of-business lock guards ``/loans/...`` only): retried
  with backoff under the same date and key; after ``max_attempts`` the row is
  ``unknown`` (money may have moved) and the SMS asks the client to check
  with the branch.
"""
from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import uuid
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from convo.store.db import Base, UTCDateTime, utcnow

log = logging.getLogger(__name__)

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


table = TransferRequest.__table__


def request_transfer(db, *, idempotency_key: str, phone: str, lang: str, client_id: int, office_id: int | None,
                     savings_id: int, loan_id: int, amount: Decimal, currency: dict, loan_label: str) -> int:
    """Record one repayment to make; the same key again is the same request. Returns its id."""
    now = utcnow()
    values = dict(idempotency_key=idempotency_key, phone=phone, lang=lang, client_id=client_id,
                  office_id=office_id, savings_id=savings_id, loan_id=loan_id, amount=Decimal(amount),
                  currency=currency, loan_label=loan_label[:120], status="pending", attempts=0,
                  next_attempt_at=now, created_at=now, updated_at=now)
    with db.begin() as conn:
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        conn.execute(insert(table).values(**values).on_conflict_do_nothing(index_elements=["idempotency_key"]))
        return conn.execute(sa.select(table.c.id).where(table.c.idempotency_key == idempotency_key)).scalar_one()


class TransferRunner:
    """Leases due requests, moves the money in Mifos X, writes the SMS to the outbox."""

    def __init__(self, services, *, batch: int = 20, lease_seconds: float = 120.0, max_attempts: int = 6,
                 retry_base_seconds: float = 30.0, retry_max_seconds: float = 1800.0):
        self.services = services
        self.db = services.db
        self.batch, self.max_attempts = batch, max_attempts
        self.lease = dt.timedelta(seconds=lease_seconds)
        self.retry_base, self.retry_max = retry_base_seconds, retry_max_seconds
        self.name = f"transfers:{uuid.uuid4().hex[:8]}"

    def claim(self) -> list:
        now = utcnow()
        c = table.c
        due = sa.or_(sa.and_(c.status == "pending", c.next_attempt_at <= now),
                     sa.and_(c.status == "running", c.lease_until < now))
        pick = sa.select(c.id).where(due).order_by(c.next_attempt_at, c.id).limit(self.batch)
        if self.db.dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        stmt = (sa.update(table).where(c.id.in_(pick.scalar_subquery()))
                .values(status="running", leased_by=self.name, lease_until=now + self.lease,
                        attempts=c.attempts + 1, updated_at=now)
                .returning(*table.c))
        with self.db.begin() as conn:
            return conn.execute(stmt).all()

    def run_once(self) -> int:
        rows = self.claim()
        for row in rows:
            self._process(row)
        return len(rows)

    def _finish(self, row, status: str, *, error: str | None = None, resource_id: int | None = None,
                retry: bool = False) -> bool:
        now = utcnow()
        values = dict(status=status, error=error, updated_at=now, leased_by=None, lease_until=None)
        if resource_id is not None:
            values["resource_id"] = resource_id
        if retry:
            delay = min(self.retry_max, self.retry_base * 2 ** max(0, row.attempts - 1)) * (0.5 + random.random() / 2)
            values["next_attempt_at"] = now + dt.timedelta(seconds=delay)
        with self.db.begin() as conn:
            done = conn.execute(sa.update(table).where(table.c.id == row.id, table.c.leased_by == self.name)
                                .values(**values)).rowcount
        if done:
            from convo import metrics

            metrics.TRANSFERS.labels("retry" if retry else status).inc()
        return bool(done)

    def _store_date(self, row, day: dt.date) -> None:
        with self.db.begin() as conn:
            conn.execute(sa.update(table).where(table.c.id == row.id, table.c.leased_by == self.name)
                         .values(transfer_date=day, updated_at=utcnow()))

    def _process(self, row) -> None:
        from convo.mifos.client import (MifosError, MifosRejected, is_future_date, is_insufficient_funds,
                                        is_loan_locked)

        mifos = self.services.mifos
        tz = self.services.settings.timezone
        try:
            office = row.office_id
            if office is None:
                office = int(mifos.get(f"/clients/{int(row.client_id)}", {}).get("officeId"))
            day = row.transfer_date
            if day is None:                       # stored before sending: a retry sends the same date and key
                day = mifos.business_date(tz)
                self._store_date(row, day)
            try:
                result = self._send(mifos, row, office, day)
            except MifosRejected as e:
                if not is_future_date(e):
                    raise
                # Fineract answered, nothing moved: its business date is before ``day``
                earlier = min(mifos.business_date(tz, refresh=True), day - dt.timedelta(days=1))
                log.info("transfer %s: %s is after Fineract's business date; sending again dated %s",
                         row.id, day, earlier)
                day = earlier
                self._store_date(row, day)
                result = self._send(mifos, row, office, day)
        except MifosRejected as e:
            if is_loan_locked(e):
                self._retry_or_give_up(row, "loan locked by close-of-business", "repay.locked")
            elif is_insufficient_funds(e):
                if self._finish(row, "failed", error="insufficient funds"):
                    self._sms(row, "repay.insufficient")
            else:
                if self._finish(row, "failed", error=f"refused: {e.code or e.status}"[:300]):
                    self._sms(row, "repay.refused")
            return
        except MifosError as e:
            self._retry_or_give_up(row, f"Mifos X: {type(e).__name__}", "repay.unknown")
            return
        if self._finish(row, "done", resource_id=result.resource_id):
            self._sms(row, "repay.done", reference=result.resource_id)
            for key in (f"convo:savings:{row.savings_id}", f"convo:loan:{row.loan_id}:{dt.date.today().isoformat()}"):
                self.services.cache.drop(key)             # the next BAL/DUE shows the new figures
            log.info("transfer %s done (resource %s%s)", row.id, result.resource_id,
                     ", served from Fineract's cache" if result.served_from_cache else "")

    @staticmethod
    def _send(mifos, row, office: int, day: dt.date):
        return mifos.transfer_savings_to_loan(
            client_id=row.client_id, office_id=office, savings_id=row.savings_id, loan_id=row.loan_id,
            amount=Decimal(row.amount), on=day, idempotency_key=f"{row.idempotency_key}@{day.isoformat()}",
            note="Loan repayment from savings, asked for by the client (mifos-convo)")

    def _retry_or_give_up(self, row, reason: str, text_key: str) -> None:
        if row.attempts >= self.max_attempts:
            status = "unknown" if text_key == "repay.unknown" else "failed"
            if self._finish(row, status, error=f"gave up after {row.attempts} attempts: {reason}"):
                self._sms(row, text_key)
        else:
            self._finish(row, "pending", error=reason, retry=True)

    def _sms(self, row, key: str, **extra) -> None:
        from convo.notify.outbox import enqueue

        fs = self.services.flows.current
        ctx = {"amount": str(row.amount), "currency": row.currency, "loan": row.loan_label, "lang": row.lang,
               **extra}
        body = fs.render_text(key, row.lang, ctx)
        enqueue(self.db, idempotency_key=f"repay-sms:{row.idempotency_key}", to=row.phone, body=body,
                kind="receipt", requested_by_client=True, region=self.services.settings.default_region)


def run_transfers(services, stop: threading.Event, poll_seconds: float = 1.0) -> None:
    """Loop until ``stop`` is set (a thread of ``convo worker`` and ``convo demo``)."""
    runner = TransferRunner(services)
    while not stop.is_set():
        try:
            busy = runner.run_once()
        except Exception:  # noqa: BLE001 - keep the runner alive; the row's lease will expire
            log.exception("transfer runner error")
            busy = 0
        if not busy:
            stop.wait(poll_seconds)


def start_transfer_thread(settings, stop: threading.Event | None = None) -> threading.Event:
    from convo.services import build_services

    stop = stop or threading.Event()
    services = build_services(settings)
    threading.Thread(target=run_transfers, args=(services, stop), daemon=True, name="transfers").start()
    return stop
