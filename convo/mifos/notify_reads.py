"""Fineract reads the notifications need (reminders, receipts, alerts, staff messages).

Plain functions over :class:`convo.mifos.client.MifosClient` (its ``get``),
so the Fineract client itself stays small. Every endpoint here exists in
Apache Fineract 1.8+ with the same shapes:

* ``GET /clients/{id}`` → :func:`client_contact` (mobile number, names, office, loan officer)
* ``GET /staff/{id}`` → :func:`staff_mobile` (``mobileNo`` of a loan officer or other staff)
* ``GET /loans?offset=&limit=`` → :func:`iter_active_loans`: Fineract has no
  "installments due in N days" endpoint, so reminders page through the loan
  list (``totalFilteredRecords`` + ``pageItems``, newest Fineract; a bare list
  on old ones) keeping active loans, then read each active loan's schedule
  with ``GET /loans/{id}?associations=repaymentSchedule`` (:func:`loan_with_schedule`).
  One call per active loan per run: a few thousand loans take a few minutes
  once a day, done by the worker, never on a USSD hop.
* ``GET /loans/{loanId}/transactions/{id}`` and
  ``GET /savingsaccounts/{id}/transactions/{id}`` → receipts read the
  transaction as committed (amount, date, reversed flag, running balance).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Iterator

from convo.mifos.client import Currency, MifosClient, MifosNotFound, parse_date, period_outstanding, to_decimal

__all__ = [
    "ClientContact", "Installment", "client_contact", "iter_active_loans", "loan_installments",
    "loan_transaction", "loan_with_schedule", "savings_transaction", "staff_mobile", "savings_account",
]


@dataclass(frozen=True)
class ClientContact:
    id: int
    display_name: str
    first_name: str
    mobile_no: str | None
    office_id: int | None
    staff_id: int | None
    active: bool


def client_contact(mifos: MifosClient, client_id: int) -> ClientContact:
    """``GET /clients/{id}``; raises ``MifosNotFound`` for an unknown client."""
    body = mifos.get(f"/clients/{int(client_id)}") or {}
    first = body.get("firstname") or (body.get("displayName") or "").split(" ")[0]
    return ClientContact(
        id=int(body["id"]), display_name=body.get("displayName") or "", first_name=first or "",
        mobile_no=body.get("mobileNo") or None, office_id=body.get("officeId"), staff_id=body.get("staffId"),
        active=bool(body.get("active", True)),
    )


def staff_mobile(mifos: MifosClient, staff_id: int) -> str | None:
    """The staff member's ``mobileNo`` (None when unknown, inactive or without a number)."""
    try:
        body = mifos.get(f"/staff/{int(staff_id)}") or {}
    except MifosNotFound:
        return None
    if body.get("isActive") is False:
        return None
    return body.get("mobileNo") or None


def _is_active_loan(loan: dict) -> bool:
    status = loan.get("status") or {}
    if "active" in status:
        return status["active"] is True
    return status.get("code") == "loanStatusType.active" or status.get("id") == 300


def iter_active_loans(mifos: MifosClient, page_size: int = 200, max_pages: int = 10_000) -> Iterator[dict]:
    """Every active loan of ``GET /loans`` (list shape: id, accountNo, clientId, clientOfficeId,
    loanOfficerId, status, currency, summary), page by page."""
    offset = 0
    for _ in range(max_pages):
        body = mifos.get("/loans", {"offset": offset, "limit": page_size, "orderBy": "id", "sortOrder": "ASC"})
        if isinstance(body, list):  # very old servers: no paging wrapper
            items, total = body, len(body)
        else:
            items = (body or {}).get("pageItems") or []
            total = (body or {}).get("totalFilteredRecords")
        for loan in items:
            if _is_active_loan(loan):
                yield loan
        offset += len(items)
        if not items or len(items) < page_size or isinstance(body, list) or (total is not None and offset >= int(total)):
            return


def loan_with_schedule(mifos: MifosClient, loan_id: int) -> dict:
    return mifos.get(f"/loans/{int(loan_id)}", {"associations": "repaymentSchedule"}) or {}


@dataclass(frozen=True)
class Installment:
    loan_id: int
    number: int
    due_date: date
    #: still owed on this installment
    outstanding: Decimal
    #: the installment's full amount due
    due: Decimal


def loan_installments(loan: dict) -> list[Installment]:
    """Unpaid installments of a ``GET /loans/{id}?associations=repaymentSchedule`` body."""
    out = []
    for p in (loan.get("repaymentSchedule") or {}).get("periods") or []:
        if p.get("period") is None:
            continue
        owed = period_outstanding(p)
        if p.get("complete") is True or owed <= 0:
            continue
        due = parse_date(p.get("dueDate"))
        if due is None:
            continue
        out.append(Installment(int(loan["id"]), int(p["period"]), due, owed, to_decimal(p.get("totalDueForPeriod"))))
    return out


def loan_currency(loan: dict) -> Currency:
    raw = loan.get("currency") or (loan.get("summary") or {}).get("currency") or {"code": "", "decimalPlaces": 2}
    return Currency.from_fineract(raw)


def loan_transaction(mifos: MifosClient, loan_id: int, transaction_id: int) -> dict:
    return mifos.get(f"/loans/{int(loan_id)}/transactions/{int(transaction_id)}") or {}


def savings_transaction(mifos: MifosClient, savings_id: int, transaction_id: int) -> dict:
    return mifos.get(f"/savingsaccounts/{int(savings_id)}/transactions/{int(transaction_id)}") or {}


def savings_account(mifos: MifosClient, savings_id: int) -> dict:
    return mifos.get(f"/savingsaccounts/{int(savings_id)}") or {}
