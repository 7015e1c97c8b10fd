"""Repay a loan from savings, after the USSD session: the worker's transfer task and its SMS receipt.

A repayment asked for over USSD or SMS becomes one ``transfer_requests`` row
(:func:`convo.store.transfers.request_transfer`, unique idempotency key) and the
dialog ends with "you will receive an SMS": a slow Mifos X can never time the
session out. The runner (a task of ``convo worker``, :class:`TransferTask`)
leases due rows with :mod:`convo.store.lease` (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL), calls ``POST /accounttransfers`` and writes the outcome to the
outbox as an SMS in the client's language.

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
import os
import socket
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from convo.store import lease
from convo.store.db import utcnow
from convo.store.transfers import FINAL, TRANSFER_LEASE, TransferRequest, request_transfer, table

__all__ = ["FINAL", "TransferRequest", "TransferRunner", "TransferTask", "request_transfer"]

log = logging.getLogger(__name__)


class TransferRunner:
    """Leases due requests, moves the money in Mifos X, writes the SMS to the outbox.

    ``ctx``: what it needs, passed by whoever starts the worker (:class:`convo.jobs.worker.JobContext`, or
    the app's services): ``db`` (engine), ``mifos`` (client), ``settings``, ``flows`` (texts), ``cache``.
    """

    def __init__(self, ctx, *, batch: int = 20, lease_seconds: float = 120.0, max_attempts: int = 6,
                 retry_base_seconds: float = 30.0, retry_max_seconds: float = 1800.0):
        self.services = ctx
        self.db = ctx.db
        self.batch, self.max_attempts = batch, max_attempts
        self.lease = dt.timedelta(seconds=lease_seconds)
        self.retry_base, self.retry_max = retry_base_seconds, retry_max_seconds
        self.name = f"transfers:{socket.gethostname()}:{os.getpid()}"

    def claim(self) -> Sequence[sa.Row[Any]]:
        """Lease up to ``batch`` due requests (committed); each row's ``leased_by`` is this claim's token."""
        now = utcnow()
        with self.db.begin() as conn:
            return lease.claim(conn, TRANSFER_LEASE, token=lease.new_token(self.name), now=now, lease=self.lease,
                               limit=self.batch, values={"updated_at": now})

    def run_once(self) -> int:
        """Claim a batch and process it; how many requests were claimed."""
        rows = self.claim()
        for row in rows:
            self._process(row)
        return len(rows)

    def _finish(self, row, status: str, *, error: str | None = None, resource_id: int | None = None,
                retry: bool = False) -> bool:
        now = utcnow()
        values: dict[str, Any] = dict(status=status, error=error, updated_at=now)
        if resource_id is not None:
            values["resource_id"] = resource_id
        if retry:
            values["next_attempt_at"] = lease.retry_at(now, row.attempts, self.retry_base, self.retry_max)
        with self.db.begin() as conn:
            done = lease.finish(conn, TRANSFER_LEASE, [row.id], row.leased_by, values)
        if not done:
            log.warning("transfer %s: lease lost before recording %s (another worker took it over)", row.id, status)
        else:
            from convo import metrics

            metrics.TRANSFERS.labels("retry" if retry else status).inc()
        return bool(done)

    def _store_date(self, row, day: dt.date) -> None:
        with self.db.begin() as conn:
            conn.execute(sa.update(table).where(table.c.id == row.id, TRANSFER_LEASE.held_by(row.leased_by))
                         .values(transfer_date=day, updated_at=utcnow()))

    def _process(self, row) -> None:
        from convo.mifos import keys
        from convo.mifos.client import (
            MifosError,
            MifosRejected,
            MifosUnavailable,
            is_future_date,
            is_insufficient_funds,
            is_loan_locked,
        )
        from convo.mifos.notify_reads import client_contact

        mifos = self.services.mifos
        tz = self.services.settings.timezone
        try:
            office = row.office_id
            if office is None:
                office = client_contact(mifos, int(row.client_id)).office_id
                if office is None:     # Fineract gives every client an office: an answer without one is broken
                    raise MifosUnavailable(f"client {row.client_id} came back without an office", status=200,
                                           code="bad.response")
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
            # the next BAL, DUE and MINI show the new figures: "due today" is cached under the MFI's day
            local_today = dt.datetime.now(ZoneInfo(tz)).date()
            for key in keys.stale_after_repayment(row.savings_id, row.loan_id, (local_today, dt.date.today(), day)):
                self.services.cache.drop(key)
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


class TransferTask:
    """Repayments from savings as a task of the worker loop (:mod:`convo.jobs.worker`)."""

    name = "transfers"

    def __init__(self, ctx, *, idle_seconds: float = 1.0, **runner_options):
        self.runner = TransferRunner(ctx, **runner_options)
        self.idle_seconds = idle_seconds

    def tick(self) -> int:
        """Process one batch of due requests; how many were claimed."""
        return self.runner.run_once()
