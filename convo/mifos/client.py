"""A small, strict REST client for Mifos X / Apache Fineract (``/fineract-provider/api/v1``).

It answers the questions a USSD hop asks (who is calling, what accounts, what
balance, what is due) as plain frozen dataclasses, and turns every failure into
one of three exceptions a flow can act on:

* :class:`MifosUnavailable`: Mifos X cannot answer now (timeout, refused,
  5xx, bad credentials, missing tenant, not JSON). Show cached figures or
  "try again later".
* :class:`MifosNotFound`: the account or client id does not exist (404).
* :class:`MifosRejected`: Fineract refused the request (validation 400,
  domain rule 403, loan locked by COB 409...), with ``.errors``.

Every error also has a ``.reason`` (``insufficient_funds``, ``future_date``, ``loan_locked``,
``invalid``, ``rule``, ``not_found``, ``in_progress``, ``circuit_open``,
``timeout``, ``unavailable``) so callers pick a text without parsing codes.

Every amount is a :class:`~decimal.Decimal` parsed from the JSON number's own
digits; v1 date arrays ``[2024, 4, 5]`` (and ISO strings) become
:class:`datetime.date`. The time budget is hard: one call never takes much
longer than ``timeout`` (a single quick retry, GETs only, on connection errors
only, inside ``timeout * 1.2``). Writes (``POST /accounttransfers``) are never
retried here, carry an ``Idempotency-Key`` and have their own, longer
``write_timeout``: they run in the worker, after the USSD session.

Each client guards its server with a :class:`~convo.mifos.breaker.CircuitBreaker`
(shared by every client of one base URL with the same thresholds in this
process) and reports ``convo_mifos_*`` Prometheus metrics: latency by endpoint
template (``/loans/{id}``, never an id or a phone number), errors by kind, and
the breaker state.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Literal

import requests
from requests.adapters import HTTPAdapter

from convo import budget, metrics
from convo.mifos.breaker import STATE_VALUES, CircuitBreaker, CircuitOpen
from convo.text import phone

log = logging.getLogger(__name__)

ZERO = Decimal("0")
#: share of ``timeout`` the whole call (retry included) may use
#: a GET is not started with less than this left of the hop's budget (convo.budget)
MIN_CALL_SECONDS = 0.1
BUDGET_FACTOR = 1.2
#: client statuses a caller is never matched to
_DEAD_CLIENT_STATUSES = {"closed", "rejected", "withdraw", "withdrawn"}


# --------------------------------------------------------------------------- errors


class MifosError(Exception):
    """Base of every client error: ``status`` (HTTP or None), ``code``, ``message``."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 errors: list[dict] | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.errors = errors or []

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status else "no response"
        return f"{self.message} ({where}{', ' + self.code if self.code else ''})"

    @property
    def codes(self) -> list[str]:
        """The global code and every parameter error's code."""
        return [c for c in [self.code, *(e.get("code") for e in self.errors)] if c]

    @property
    def reason(self) -> str:
        """What happened, for choosing a text: ``insufficient_funds``, ``future_date`` (400, the
        date is after Fineract's business date), ``loan_locked``,
        ``invalid`` (400), ``rule`` (another 403 domain rule), ``not_found``,
        ``in_progress`` (425, same Idempotency-Key still running), ``circuit_open``,
        ``timeout``, ``unavailable``."""
        if isinstance(self, MifosInProgress):
            return "in_progress"
        if isinstance(self, MifosUnavailable):
            if self.code == "circuit.open":
                return "circuit_open"
            return "timeout" if self.code == "timeout" else "unavailable"
        if isinstance(self, MifosNotFound):
            return "not_found"
        if any(_INSUFFICIENT in c for c in self.codes):
            return "insufficient_funds"
        if any(c.endswith(_IN_THE_FUTURE) for c in self.codes):
            return "future_date"
        if self.status == 409 or "error.msg.loan.locked" in self.codes:
            return "loan_locked"
        return "invalid" if self.status == 400 else "rule"


class MifosUnavailable(MifosError):
    """Mifos X cannot answer now: timeout, refused, 5xx, auth or tenant misconfiguration.

    After a write (:meth:`MifosClient.transfer_savings_to_loan`) this means the
    outcome is unknown: send it again later with the same Idempotency-Key.
    """


class MifosInProgress(MifosUnavailable):
    """425 Too Early: a request with the same Idempotency-Key is still being processed
    (Fineract 1.9+). Ask again later with the same key to get its result."""


class MifosNotFound(MifosError):
    """The requested client, loan or savings account does not exist (404)."""


class MifosRejected(MifosError):
    """Fineract understood and refused (400 validation, 403 domain rule, 409 locked...).

    ``errors`` is a list of ``{"parameterName", "code", "message"}``.
    """


#: ``InsufficientAccountBalanceException`` (fineract-savings): ``error.msg.savingsaccount.transaction.
#: insufficient.account.balance`` or, when a withdrawal fee applies, ``....insufficient.account.balance.withdraw``
_INSUFFICIENT = "insufficient.account.balance"
#: ``SavingsAccount.withdraw``/``deposit``: ``error.msg.savingsaccount.transaction.in.the.future`` (400)
_IN_THE_FUTURE = ".transaction.in.the.future"


def is_insufficient_funds(err: BaseException) -> bool:
    """Fineract's 403 ``...insufficient.account.balance`` or ``...insufficient.account.balance.withdraw``
    (savings cannot cover the amount, or the amount and the withdrawal fee)."""
    return isinstance(err, MifosError) and err.reason == "insufficient_funds"


def is_future_date(err: BaseException) -> bool:
    """Fineract's 400 ``error.msg.savingsaccount.transaction.in.the.future``: the transfer date is after
    the server's business date. Ask :meth:`MifosClient.business_date` and send again (with a new key:
    Fineract keeps the 400 under the old one)."""
    return isinstance(err, MifosError) and err.reason == "future_date"


def is_loan_locked(err: BaseException) -> bool:
    """Fineract's 409 ``error.msg.loan.locked``: the close-of-business job holds the loan.

    Only ``/loans/...`` writes can get it (``LoanCOBFilterHelper.LOAN_PATH_PATTERN``);
    ``POST /accounttransfers`` never does. Kept for callers that write to ``/loans``."""
    return isinstance(err, MifosError) and err.reason == "loan_locked"


def error_from_response(status: int, body: Any) -> MifosError:
    """Map an HTTP error status and its (parsed JSON or raw text) body to an exception."""
    if status == 425:
        return MifosInProgress("a request with this Idempotency-Key is still being processed",
                               status=425, code="idempotency.in.progress")
    fineract = isinstance(body, dict) and (
        "userMessageGlobalisationCode" in body or "developerMessage" in body or "errors" in body
    )
    if not fineract:
        return _non_fineract_error(status, body)
    errors = [_parameter_error(e) for e in body.get("errors") or [] if isinstance(e, dict)]
    code = body.get("userMessageGlobalisationCode") or (errors[0]["code"] if errors else None)
    message = body.get("developerMessage") or body.get("defaultUserMessage") or f"HTTP {status}"
    if errors and errors[0]["message"] and errors[0]["message"] != message:
        message = f"{message}: {errors[0]['message']}"
    cls: type[MifosError]
    if status >= 500 or status == 401:
        cls = MifosUnavailable
    elif status == 404:
        cls = MifosNotFound
    else:
        cls = MifosRejected
    return cls(message, status=status, code=code, errors=errors)


def _non_fineract_error(status: int, body: Any) -> MifosError:
    """Spring Boot's ``{timestamp,status,error,path}`` bodies, proxies' HTML pages.

    These come from the servlet filters (auth, tenant) or from something in
    front of Fineract, so they always mean "misconfigured or down", even a 404
    (wrong base URL), never "no such account".
    """
    hints = {
        400: "Bad Request (is the Fineract-Platform-TenantId / CONVO_FINERACT_TENANT right?)",
        401: "Unauthorized (check CONVO_FINERACT_USER / CONVO_FINERACT_PASSWORD)",
        403: "Forbidden (does the Fineract user have the READ permissions?)",
        404: "Not Found (is CONVO_FINERACT_URL right? it should end in /fineract-provider/api/v1)",
    }
    if isinstance(body, dict):
        detail = body.get("message") or body.get("error") or ""
        path = body.get("path")
        message = hints.get(status) or detail or f"HTTP {status}"
        if path:
            message = f"{message} at {path}"
    else:
        message = hints.get(status) or f"HTTP {status}: {str(body)[:120]}"
    return MifosUnavailable(message, status=status, code=f"http.{status}")


def _parameter_error(raw: dict) -> dict:
    return {
        "parameterName": raw.get("parameterName"),
        "code": raw.get("userMessageGlobalisationCode"),
        "message": raw.get("defaultUserMessage") or raw.get("developerMessage"),
    }


# --------------------------------------------------------------------------- value parsing


def parse_date(value: Any) -> date | None:
    """``[2024, 4, 5]`` (v1), ``"2024-04-05"`` or ``"2024-04-05T…"`` (v2/Jackson) → date."""
    if value is None or value == "":
        return None
    if isinstance(value, date):
        return value
    if isinstance(value, (list, tuple)) and len(value) >= 3:
        return date(int(value[0]), int(value[1]), int(value[2]))
    if isinstance(value, str):
        return date.fromisoformat(value[:10])
    raise ValueError(f"not a Fineract date: {value!r}")


def required_date(value: Any) -> date:
    """:func:`parse_date` of a date Fineract always sends (a transaction's, a meeting's): missing is a ValueError."""
    day = parse_date(value)
    if day is None:
        raise ValueError(f"missing Fineract date: {value!r}")
    return day


def to_decimal(value: Any, default: Decimal = ZERO) -> Decimal:
    """An amount as Decimal; absent (None) is ``default`` (the overview omits zeros)."""
    if value is None:
        return default
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):  # only when someone bypassed parse_float
        return Decimal(repr(value))
    return Decimal(str(value))


def _status_word(status: dict | None) -> str:
    """``{"code": "loanStatusType.closed.obligations.met"}`` → ``"closed.obligations.met"``."""
    code = (status or {}).get("code") or ""
    word = code.split(".", 1)[1] if "." in code else code
    return word or str((status or {}).get("value", "unknown")).lower()


# --------------------------------------------------------------------------- data


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


class _Plain:
    """``to_dict`` for the dataclasses below: JSON-ready, Decimals as strings, dates ISO."""

    if TYPE_CHECKING:  # every subclass is a @dataclass, which is what asdict needs
        __dataclass_fields__: ClassVar[dict[str, Any]]

    def to_dict(self) -> dict:
        return _plain(asdict(self))


@dataclass(frozen=True)
class Currency(_Plain):
    code: str
    decimal_places: int
    in_multiples_of: int | None = None
    display_symbol: str | None = None
    name: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "Currency":
        values: dict[str, Any] = {f.name: d.get(f.name) for f in fields(cls)}
        return cls(**values)

    @classmethod
    def from_fineract(cls, raw: dict) -> "Currency":
        return cls(
            code=raw["code"],
            decimal_places=int(raw.get("decimalPlaces", 2)),
            in_multiples_of=raw.get("inMultiplesOf"),
            display_symbol=raw.get("displaySymbol"),
            name=raw.get("name"),
        )


@dataclass(frozen=True)
class ClientRef(_Plain):
    """Who is calling: a Fineract client found by phone number."""

    id: int
    display_name: str
    mobile_no: str | None
    office_id: int | None
    #: Fineract status code without its prefix: ``active``, ``closed``, ``pending``...
    status: str

    @property
    def active(self) -> bool:
        return self.status == "active"

    @classmethod
    def from_dict(cls, d: dict) -> "ClientRef":
        values: dict[str, Any] = {f.name: d.get(f.name) for f in fields(cls)}
        return cls(**values)


@dataclass(frozen=True)
class Account(_Plain):
    """One line of the client's accounts overview."""

    id: int
    account_no: str
    kind: Literal["savings", "loan"]
    product_name: str
    currency: Currency
    #: savings: account balance; loan: outstanding loan balance
    balance: Decimal
    status: str

    @classmethod
    def from_dict(cls, d: dict) -> "Account":
        return cls(id=d["id"], account_no=d["account_no"], kind=d["kind"],
                   product_name=d["product_name"], currency=Currency.from_dict(d["currency"]),
                   balance=Decimal(d["balance"]), status=d["status"])


@dataclass(frozen=True)
class SavingsBalance(_Plain):
    id: int
    account_no: str
    product_name: str
    currency: Currency
    account_balance: Decimal
    #: balance minus holds and liens; what the client can withdraw
    available_balance: Decimal

    @classmethod
    def from_dict(cls, d: dict) -> "SavingsBalance":
        return cls(id=d["id"], account_no=d["account_no"], product_name=d["product_name"],
                   currency=Currency.from_dict(d["currency"]),
                   account_balance=Decimal(d["account_balance"]),
                   available_balance=Decimal(d["available_balance"]))


@dataclass(frozen=True)
class LoanDue(_Plain):
    """What the client must pay: arrears plus the next installment."""

    id: int
    account_no: str
    product_name: str
    currency: Currency
    #: overdue + next_installment
    amount_due: Decimal
    #: outstanding on installments due before today
    overdue: Decimal
    next_due_date: date | None
    #: outstanding on the first unpaid installment due today or later
    next_installment: Decimal
    #: everything still owed on the loan
    outstanding: Decimal

    @classmethod
    def from_dict(cls, d: dict) -> "LoanDue":
        return cls(id=d["id"], account_no=d["account_no"], product_name=d["product_name"],
                   currency=Currency.from_dict(d["currency"]),
                   amount_due=Decimal(d["amount_due"]), overdue=Decimal(d["overdue"]),
                   next_due_date=parse_date(d["next_due_date"]),
                   next_installment=Decimal(d["next_installment"]),
                   outstanding=Decimal(d["outstanding"]))


@dataclass(frozen=True)
class Transaction(_Plain):
    """One mini-statement line. ``amount`` is positive; ``credit`` says the direction
    for the client (deposit, disbursement = True; withdrawal, fee, repayment = False)."""

    id: int
    date: date
    kind: str
    amount: Decimal
    credit: bool
    running_balance: Decimal | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "Transaction":
        rb = d.get("running_balance")
        return cls(id=d["id"], date=required_date(d["date"]), kind=d["kind"],
                   amount=Decimal(d["amount"]), credit=d["credit"],
                   running_balance=None if rb is None else Decimal(rb))


@dataclass(frozen=True)
class Meeting(_Plain):
    """The next collection meeting of a client's group (or of the group's center)."""

    date: date
    group_id: int
    group_name: str
    location: str | None
    #: ``center`` when the group sits in a center and meets on the center's calendar
    kind: Literal["group", "center"]
    center_name: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "Meeting":
        return cls(date=required_date(d["date"]), group_id=int(d["group_id"]), group_name=d["group_name"],
                   location=d.get("location"), kind=d["kind"], center_name=d.get("center_name"))


@dataclass(frozen=True)
class TransferResult(_Plain):
    """``POST /accounttransfers`` went through (now or, ``served_from_cache``, before)."""

    #: the account transfer's id (Fineract's ``resourceId``)
    resource_id: int
    served_from_cache: bool = False
    savings_id: int | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "TransferResult":
        return cls(resource_id=int(d["resource_id"]), served_from_cache=bool(d.get("served_from_cache")),
                   savings_id=d.get("savings_id"))


# --------------------------------------------------------------------------- shape → data


def client_ref_from_search_row(row: dict) -> ClientRef:
    return ClientRef(
        id=int(row["entityId"]),
        display_name=row.get("entityName") or "",
        mobile_no=row.get("entityMobileNo"),
        office_id=row.get("parentId"),
        status=_status_word(row.get("entityStatus")),
    )


def accounts_from_overview(body: dict) -> list[Account]:
    """Active savings and loan accounts of ``GET /clients/{id}/accounts``; shares skipped."""
    accounts = []
    sources: tuple[tuple[Literal["savings", "loan"], str, str], ...] = (
        ("savings", "savingsAccounts", "accountBalance"), ("loan", "loanAccounts", "loanBalance"))
    for kind, key, balance_key in sources:
        for raw in body.get(key) or []:
            if not _is_active(raw.get("status")):
                continue
            accounts.append(Account(
                id=int(raw["id"]),
                account_no=str(raw.get("accountNo", raw["id"])),
                kind=kind,
                product_name=raw.get("productName") or raw.get("shortProductName") or "",
                currency=Currency.from_fineract(raw["currency"]),
                balance=to_decimal(raw.get(balance_key)),
                status=_status_word(raw.get("status")),
            ))
    return accounts


def _is_active(status: dict | None) -> bool:
    status = status or {}
    if "active" in status:
        return status["active"] is True
    return status.get("code") in ("savingsAccountStatusType.active", "loanStatusType.active")


def savings_balance_from_account(body: dict) -> SavingsBalance:
    summary = body.get("summary") or {}
    balance = to_decimal(summary.get("accountBalance"))
    return SavingsBalance(
        id=int(body["id"]),
        account_no=str(body.get("accountNo", body["id"])),
        product_name=body.get("savingsProductName") or "",
        currency=Currency.from_fineract(body.get("currency") or summary["currency"]),
        account_balance=balance,
        available_balance=to_decimal(summary.get("availableBalance"), default=balance),
    )


def period_outstanding(period: dict) -> Decimal:
    """What is still owed on one installment."""
    if period.get("totalOutstandingForPeriod") is not None:
        return to_decimal(period["totalOutstandingForPeriod"])
    due = to_decimal(period.get("totalDueForPeriod"))
    settled = sum((to_decimal(period.get(k)) for k in (
        "totalPaidForPeriod", "totalWaivedForPeriod", "totalWrittenOffForPeriod")), ZERO)
    return max(due - settled, ZERO)


def loan_due_from_loan(body: dict, today: date) -> LoanDue:
    """Arrears and next installment from ``GET /loans/{id}?associations=repaymentSchedule``.

    The schedule is the source of truth: ``summary.totalOverdue`` is computed by
    Fineract's close-of-business job and lags a day (or more when COB has not
    run), so it is only compared and logged.
    """
    schedule = (body.get("repaymentSchedule") or {}).get("periods") or []
    installments = [p for p in schedule if p.get("period") is not None]  # row 0 = disbursement
    overdue, next_period = ZERO, None
    for p in installments:
        owed = period_outstanding(p)
        if p.get("complete") is True or owed <= 0:
            continue
        due = parse_date(p.get("dueDate"))
        if due is not None and due < today:
            overdue += owed
        elif next_period is None:
            next_period = p
    next_amount = period_outstanding(next_period) if next_period else ZERO
    summary = body.get("summary") or {}
    outstanding = to_decimal(
        summary.get("totalOutstanding"),
        default=sum((period_outstanding(p) for p in installments), ZERO),
    )
    reported = summary.get("totalOverdue")
    if reported is not None and to_decimal(reported) != overdue:
        log.debug("loan %s: schedule overdue %s, summary.totalOverdue %s (COB lag?)",
                  body.get("id"), overdue, reported)
    currency = body.get("currency") or summary.get("currency") or \
        (body.get("repaymentSchedule") or {}).get("currency")
    if currency is None:  # Fineract always sends one (LoanAccountData.currency)
        raise ValueError(f"loan {body.get('id')} has no currency")
    return LoanDue(
        id=int(body["id"]),
        account_no=str(body.get("accountNo", body["id"])),
        product_name=body.get("loanProductName") or "",
        currency=Currency.from_fineract(currency),
        amount_due=overdue + next_amount,
        overdue=overdue,
        next_due_date=parse_date(next_period.get("dueDate")) if next_period else None,
        next_installment=next_amount,
        outstanding=outstanding,
    )


def savings_transactions_from(rows: Iterable[dict], limit: int) -> list[Transaction]:
    """Newest first, reversed entries (and their reversals) dropped."""
    out = []
    for raw in rows:
        if raw.get("reversed") or raw.get("isReversal"):
            continue
        kind = raw.get("transactionType") or {}
        credit = raw.get("entryType") == "CREDIT" if raw.get("entryType") else bool(
            kind.get("deposit") or kind.get("interestPosting") or kind.get("dividendPayout"))
        out.append(Transaction(
            id=int(raw["id"]), date=required_date(raw.get("date")), kind=kind.get("value") or "",
            amount=to_decimal(raw.get("amount")), credit=credit,
            running_balance=None if raw.get("runningBalance") is None
            else to_decimal(raw["runningBalance"]),
        ))
    out.sort(key=lambda t: (t.date, t.id), reverse=True)
    return out[:limit]


def loan_transactions_from(rows: Iterable[dict], limit: int) -> list[Transaction]:
    """Newest first; accruals and reversed transactions dropped."""
    out = []
    for raw in rows:
        kind = raw.get("type") or {}
        if raw.get("manuallyReversed") or raw.get("reversed") or kind.get("accrual") \
                or kind.get("accrualActivity"):
            continue
        out.append(Transaction(
            id=int(raw["id"]), date=required_date(raw.get("date")), kind=kind.get("value") or "",
            amount=to_decimal(raw.get("amount")), credit=bool(kind.get("disbursement")),
            running_balance=None if raw.get("outstandingLoanBalance") is None
            else to_decimal(raw["outstandingLoanBalance"]),
        ))
    out.sort(key=lambda t: (t.date, t.id), reverse=True)
    return out[:limit]


def meeting_dates(calendar: dict) -> list[date]:
    """The dates the server listed (``nextTenRecurringDates`` and ``recurringDates``), sorted."""
    found = set()
    for key in ("nextTenRecurringDates", "recurringDates"):
        for raw in calendar.get(key) or []:
            day = parse_date(raw)
            if day is not None:  # a null in the list would break the sort
                found.add(day)
    return sorted(found)


def next_meeting_date(calendar: dict, today: date) -> date | None:
    """First meeting on or after ``today`` of a Fineract ``CalendarData``.

    The server's own lists win (they honour holidays and the skip-first-day
    setting); when they hold nothing from ``today`` on (server business date
    behind ours, or a server that sends only the rule) the RFC 5545
    ``recurrence`` is expanded from ``startDate`` with dateutil. A calendar
    past its ``endDate`` has no next meeting.
    """
    start = parse_date(calendar.get("startDate"))
    end = parse_date(calendar.get("endDate"))
    listed = [d for d in meeting_dates(calendar) if d >= today]
    found: date | None
    if listed:
        found = listed[0]
    elif calendar.get("repeating") and calendar.get("recurrence") and start:
        from dateutil.rrule import rrulestr

        try:
            rule = rrulestr(calendar["recurrence"], dtstart=datetime(start.year, start.month, start.day))
        except (ValueError, TypeError):
            log.warning("calendar %s: cannot read recurrence %r", calendar.get("id"), calendar.get("recurrence"))
            return None
        hit = rule.after(datetime(today.year, today.month, today.day), inc=True)
        found = hit.date() if hit else None
    else:
        found = start if start and start >= today else None
    if found is None or (end is not None and found > end):
        return None
    return found


def meeting_from_group(group: dict, today: date) -> Meeting | None:
    """``GET /groups/{id}?associations=collectionMeetingCalendar`` → the next meeting.

    A group inside a center gets the center's calendar from Fineract (the
    group has ``centerId``; the calendar's ``entityType`` is CENTERS).
    Inactive (closed, pending) groups have no meetings for the client.
    """
    status = group.get("status") or {}
    if status and status.get("code") not in (None, "groupingStatusType.active"):
        return None
    calendar = group.get("collectionMeetingCalendar")
    if not calendar:
        return None
    when = next_meeting_date(calendar, today)
    if when is None:
        return None
    entity = ((calendar.get("entityType") or {}).get("code") or "")
    center = entity.endswith("centers") or (not entity and group.get("centerId") is not None)
    return Meeting(date=when, group_id=int(group["id"]), group_name=group.get("name") or "",
                   location=(calendar.get("location") or None), kind="center" if center else "group",
                   center_name=group.get("centerName") if center else None)


#: ``m_portfolio_command_source.idempotency_key`` is VARCHAR(50)
#: (``db/changelog/tenant/parts/0061_add_idempotency_key_to_command_source.xml``)
FINERACT_KEY_MAX = 50


def fineract_idempotency_key(key: str) -> str:
    """The ``Idempotency-Key`` Fineract gets for our (longer) local key: ``convo-`` and 40 hex
    digits of its SHA-256, 46 characters, the same for the same key in every process."""
    import hashlib

    return "convo-" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]


#: Fineract's ``dd MMMM yyyy`` with locale ``en`` (not strftime: it follows the process locale)
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December")
TRANSFER_DATE_FORMAT = "dd MMMM yyyy"


def fineract_date(day: date) -> str:
    return f"{day.day:02d} {_MONTHS[day.month - 1]} {day.year}"


# --------------------------------------------------------------------------- metrics

# defined in convo/metrics.py with every other metric (multiprocess modes there)
REQUEST_SECONDS = metrics.MIFOS_REQUEST_SECONDS
ERRORS = metrics.MIFOS_ERRORS
BREAKER_STATE = metrics.MIFOS_BREAKER_STATE
BREAKER_OPENED = metrics.MIFOS_BREAKER_OPENED

_ID_SEGMENT = re.compile(r"/\d+(?=/|$)")


def endpoint_template(path: str) -> str:
    """``/loans/29`` → ``/loans/{id}``; query strings never reach a label."""
    return _ID_SEGMENT.sub("/{id}", path.split("?", 1)[0])


def _breaker_changed(breaker: CircuitBreaker, old: str, new: str) -> None:
    BREAKER_STATE.labels(breaker.name).set(STATE_VALUES[new])
    if new == "open":
        BREAKER_OPENED.labels(breaker.name).inc()
    log.warning("Mifos X circuit breaker for %s: %s → %s", breaker.name, old, new)


_BREAKERS: dict[tuple, CircuitBreaker] = {}
_BREAKERS_LOCK = threading.Lock()


def breaker_for(base_url: str, failures: int = 5, reset_timeout: float = 30.0) -> CircuitBreaker:
    """The process-wide breaker of one Mifos X server (base URL and thresholds)."""
    key = (base_url.rstrip("/"), int(failures), float(reset_timeout))
    with _BREAKERS_LOCK:
        found = _BREAKERS.get(key)
        if found is None:
            found = _BREAKERS[key] = CircuitBreaker(_server_label(base_url), failures=failures,
                                                    reset_timeout=reset_timeout, on_change=_breaker_changed)
            BREAKER_STATE.labels(found.name).set(0)
        return found


def reset_breakers() -> None:
    """Close every breaker (tests, or an operator after fixing the server)."""
    with _BREAKERS_LOCK:
        for breaker in _BREAKERS.values():
            breaker.reset()


def _server_label(base_url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    return (parts.hostname or "unknown") + (f":{parts.port}" if parts.port else "")


# --------------------------------------------------------------------------- the client


class MifosClient:
    """Fineract REST over one pooled ``requests.Session`` (safe to share between threads).

    ``timeout`` bounds every read (a USSD hop's budget); ``write_timeout`` bounds
    a write, which runs in the worker. ``breaker_failures`` consecutive
    unavailable answers open the circuit for ``breaker_reset`` seconds; pass
    ``breaker`` to use your own.
    """

    def __init__(self, base_url: str, user: str, password: str, tenant: str = "default",
                 verify_tls: bool = True, timeout: float = 2.5, *, write_timeout: float = 30.0,
                 breaker_failures: int = 5, breaker_reset: float = 30.0,
                 breaker: CircuitBreaker | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.write_timeout = float(write_timeout)
        self.connect_timeout = min(1.0, self.timeout / 2)
        self.breaker = breaker or breaker_for(self.base_url, breaker_failures, breaker_reset)
        #: None until known: does the server have /savingsaccounts/{id}/transactions/search (1.9+)?
        self.has_transactions_search: bool | None = None
        #: (is the business-date feature on?, when that was read) for :meth:`business_date`
        self._business_date_enabled: tuple[bool, float] | None = None
        self.session = requests.Session()
        self.session.auth = (user, password)
        self.session.verify = verify_tls
        self.session.headers.update({
            "Fineract-Platform-TenantId": tenant,
            "Accept": "application/json",
            "User-Agent": "mifos-convo",
        })
        # every hop thread of `convo serve` (64 per process) may wait on Mifos X at once, each with up to
        # four searches side by side: keep their connections instead of dropping them ("pool is full")
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=256, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    @classmethod
    def from_settings(cls, settings, **kw) -> "MifosClient":
        return cls(settings.fineract_url, settings.fineract_user, settings.fineract_password,
                   tenant=settings.fineract_tenant, verify_tls=settings.fineract_verify_tls,
                   timeout=settings.fineract_timeout, **kw)

    def close(self) -> None:
        self.session.close()

    # ---- questions
    # who is calling: every client of one phone (issue 9 items 1-2; actions.mifos.identify_caller)
    def clients_by_phone(self, e164: str, region_of) -> list[ClientRef]:
        """Every live client (not closed, rejected or withdrawn) whose stored mobile number is ``e164``.

        One exact search per spelling of :func:`convo.text.phone.stored_formats`, run
        side by side (one round trip of the hop's budget, not four). Fineract's
        ``m_client.mobile_no`` is UNIQUE (``0001_initial_schema.xml``), so clients
        sharing a phone are stored in different spellings: every spelling is
        searched, never just the first that answers. A row counts only when its
        ``entityMobileNo`` read in the client's own region (``region_of(office_id)``)
        is ``e164``: ``771000127`` at a Dakar office is +221…, never +254….
        Ordered by client id. Any failed search raises: a partial answer could
        hide the second client of a shared phone.
        """
        import contextvars
        from concurrent.futures import ThreadPoolExecutor

        forms = phone.stored_formats(e164)

        def search(form: str):
            return self.get("/search", {"query": form, "resource": "clients", "exactMatch": "true"}) or []

        with ThreadPoolExecutor(max_workers=len(forms), thread_name_prefix="convo-search") as pool:
            futures = [pool.submit(contextvars.copy_context().run, search, f) for f in forms]
            answers = [f.result() for f in futures]
        found: dict[int, ClientRef] = {}
        for row in (r for rows in answers for r in rows):
            if row.get("entityType", "CLIENT") != "CLIENT":
                continue
            ref = client_ref_from_search_row(row)
            if ref.status in _DEAD_CLIENT_STATUSES or ref.id in found:
                continue
            if phone.read_stored(ref.mobile_no, region_of(ref.office_id)) == e164:
                found[ref.id] = ref
        return [found[k] for k in sorted(found)]

    def authenticate(self, username: str, password: str) -> dict:
        """``POST /authentication`` with a staff member's own Mifos X credentials (the console's sign-in).

        Fineract's ``AuthenticationApiResource.authenticate`` (fineract-provider, infrastructure/security/api)
        reads ``{"username", "password"}`` from the JSON body only (FINERACT-726) and answers
        ``AuthenticatedUserData``: ``username``, ``userId``, ``officeId``, ``officeName``, ``staffId``,
        ``staffDisplayName``, ``roles``, ``permissions``, ``shouldRenewPassword``,
        ``isTwoFactorAuthenticationRequired`` and ``base64EncodedAuthenticationKey`` (which is
        base64("user:password"), i.e. the password itself). A wrong password is a 401
        (``BadCredentialsExceptionMapper``: ``error.msg.not.authenticated``): :class:`MifosRejected`
        with status 401. The gateway's own Basic credentials are not sent, the breaker is not
        involved (a wrong password is no sign of a sick server), and nothing is retried.
        """
        try:
            response = self.session.post(self.base_url + "/authentication",
                                         json={"username": username, "password": password},
                                         auth=lambda r: r,          # not the gateway's own Basic credentials
                                         timeout=(self.connect_timeout * 3, max(self.timeout, 5.0)))
        except requests.RequestException as exc:
            raise MifosUnavailable(f"cannot reach Mifos X to sign in: {_short(exc)}", code="connection") from None
        if response.status_code in (400, 401, 403):
            try:
                body = response.json()
            except ValueError:
                body = {}
            code = body.get("userMessageGlobalisationCode") if isinstance(body, dict) else None
            raise MifosRejected("Mifos X refused the user name or password", status=response.status_code,
                                code=code or "error.msg.not.authenticated")
        body = _decode(response)
        if not isinstance(body, dict) or body.get("authenticated") is not True:
            raise MifosRejected("Mifos X did not authenticate the user", status=response.status_code,
                                code="error.msg.not.authenticated")
        return body

    def office_parents(self) -> dict[int, int | None]:
        """Office id → parent office id (None for the head office), from ``GET /offices``
        (``OfficeReadPlatformServiceImpl``: every office with ``parentId``, absent at the top)."""
        return {int(o["id"]): (int(o["parentId"]) if o.get("parentId") is not None else None)
                for o in self.get("/offices") or []}

    def client_accounts(self, client_id: int) -> list[Account]:
        """Active savings and loan accounts (pending, closed, shares left out)."""
        return accounts_from_overview(self.get(f"/clients/{int(client_id)}/accounts") or {})

    def savings_balance(self, savings_id: int) -> SavingsBalance:
        return savings_balance_from_account(self.get(f"/savingsaccounts/{int(savings_id)}"))

    def loan_due(self, loan_id: int, today: date) -> LoanDue:
        body = self.get(f"/loans/{int(loan_id)}", {"associations": "repaymentSchedule"})
        return loan_due_from_loan(body, today)

    def savings_transactions(self, savings_id: int, limit: int = 5) -> list[Transaction]:
        """Latest ``limit`` non-reversed savings transactions, newest first.

        Fineract 1.9+: ``GET /savingsaccounts/{id}/transactions/search?offset=P&limit=N``
        where ``offset`` is a **page number** (``TransactionSearchRequest.pageable``:
        ``PageRequest.of(offset, limit)``), sorted newest first by the server,
        asking for the next page while reversed rows leave fewer than ``limit``.
        An unknown account is an empty page (200), so it gives no lines. Fineract 1.8 has no search:
        the path falls on ``{transactionId}`` and Jersey answers a 404 that is
        not Fineract's JSON (the segment ``search`` is not a number), which
        this client reads as :class:`MifosUnavailable` with status 404 (405
        from some proxies). Then it falls back to
        ``GET /savingsaccounts/{id}?associations=transactions`` and remembers
        that, so later calls go straight to the fallback.
        """
        sid = int(savings_id)
        if self.has_transactions_search is not False:
            try:
                rows = self._search_savings_transactions(sid, limit)
            except MifosError as exc:
                if exc.status not in (404, 405) or isinstance(exc, MifosNotFound):
                    raise  # a Fineract 404 names the missing account: the search exists
                log.info("no savings transactions search on %s (HTTP %s): using associations=transactions",
                         self.base_url, exc.status)
                self.has_transactions_search = False
            else:
                self.has_transactions_search = True
                return savings_transactions_from(rows, limit)
        body = self.get(f"/savingsaccounts/{sid}", {"associations": "transactions"})
        return savings_transactions_from(body.get("transactions") or [], limit)

    def _search_savings_transactions(self, sid: int, limit: int, max_pages: int = 4) -> list[dict]:
        rows: dict[Any, dict] = {}
        size = max(limit * 2, limit + 5)  # reversed rows are dropped after paging
        for page in range(max_pages):
            body = self.get(f"/savingsaccounts/{sid}/transactions/search", {"offset": page, "limit": size})
            content = (body or {}).get("content") or []
            fresh = [r for r in content if r.get("id") not in rows]
            rows.update((r.get("id"), r) for r in fresh)
            kept = sum(1 for r in rows.values() if not (r.get("reversed") or r.get("isReversal")))
            total = (body or {}).get("total")
            if kept >= limit or not fresh or len(content) < size or \
                    (total is not None and (page + 1) * size >= int(total)):
                break
        return list(rows.values())

    def loan_transactions(self, loan_id: int, limit: int = 5) -> list[Transaction]:
        """Latest ``limit`` loan transactions (no accruals, no reversed), newest first."""
        body = self.get(f"/loans/{int(loan_id)}", {"associations": "transactions"})
        return loan_transactions_from(body.get("transactions") or [], limit)

    def next_meeting(self, client_id: int, today: date) -> Meeting | None:
        """The client's next group or center collection meeting on or after ``today``.

        ``GET /clients/{id}`` lists the client's groups (``groups``: id,
        accountNo, name); for each, ``GET /groups/{id}?associations=collectionMeetingCalendar``
        gives the group's calendar, or its center's when the group is in a
        center. The earliest meeting wins. None for a client in no group, or
        whose groups have no (future) meetings.
        """
        client = self.get(f"/clients/{int(client_id)}") or {}
        best: Meeting | None = None
        for ref in client.get("groups") or []:
            if ref.get("id") is None:
                continue
            group = self.get(f"/groups/{int(ref['id'])}", {"associations": "collectionMeetingCalendar"})
            found = meeting_from_group(group or {}, today)
            if found and (best is None or found.date < best.date):
                best = found
        return best

    def business_date(self, timezone: str, *, refresh: bool = False) -> date:
        """The date Fineract checks transactions against (``DateUtils.isDateInTheFuture``).

        With the business-date feature on (global configuration
        ``enable-business-date``, ``enable_business_date`` before Fineract
        1.10), ``GET /businessdate/BUSINESS_DATE``; otherwise today in the
        tenant's time zone (``DateUtils.getLocalDateOfTenant``), which is
        ``timezone`` here. Whether the feature is on is read from ``GET
        /configurations`` once every ten minutes; a user without permission to
        read it, or the business date, gets the tenant's today (and a 400 "in
        the future" if that is wrong). ``refresh`` reads the configuration again.
        """
        now = time.monotonic()
        cached = self._business_date_enabled
        if refresh or cached is None or now - cached[1] > 600:
            enabled = False
            try:
                body = self.get("/configurations") or {}
                for item in body.get("globalConfiguration") or []:
                    if str(item.get("name", "")).replace("_", "-") == "enable-business-date":
                        enabled = bool(item.get("enabled"))
            except (MifosRejected, MifosNotFound) as exc:
                log.info("cannot read Fineract's configuration (%s): using the tenant's today", exc)
            self._business_date_enabled = cached = (enabled, now)
        if cached[0]:
            try:
                found = parse_date((self.get("/businessdate/BUSINESS_DATE") or {}).get("date"))
            except (MifosRejected, MifosNotFound) as exc:   # no READ_BUSINESS_DATE, or no row: never fail a
                log.warning("cannot read Fineract's business date (%s): using the tenant's today", exc)  # repayment
                found = None
            if found is not None:
                return found
        from zoneinfo import ZoneInfo

        return datetime.now(ZoneInfo(timezone)).date()

    # ---- writes

    def transfer_savings_to_loan(self, *, client_id: int, office_id: int, savings_id: int, loan_id: int,
                                 amount: Decimal, on: date, idempotency_key: str, note: str = "",
                                 timeout: float | None = None) -> TransferResult:
        """Repay loan ``loan_id`` from the same client's savings ``savings_id``.

        ``POST /accounttransfers`` (fromAccountType 2 = savings, toAccountType
        1 = loan) with ``Idempotency-Key: fineract_idempotency_key(idempotency_key)``:
        Fineract stores the key in a 50-character column, so a longer local key
        is sent as its digest. Never retried here: on
        :class:`MifosUnavailable` (timeout, 5xx, circuit open) or
        :class:`MifosInProgress` (425) the outcome is unknown or pending, so
        send it again later **with the same key**: Fineract 1.9+ answers a key
        it has seen with the stored result (``served_from_cache``) and moves no
        money twice. Fineract 1.8 ignores the key; the transfer description
        carries it (``ref …``) so staff can reconcile.

        Raises :class:`MifosRejected`: ``reason`` ``insufficient_funds`` (403),
        ``future_date`` (400: ``on`` is after the business date), ``invalid``
        (400), ``rule`` (another 403); Fineract stores 400s and 403s under the
        key, so a retry with it gets the same error. (No 409 here: the
        close-of-business lock filter covers ``/loans/...`` only.)
        """
        if not idempotency_key:
            raise ValueError("idempotency_key is required for a money transfer")
        sent_key = fineract_idempotency_key(idempotency_key)
        amount = to_decimal(amount)
        description = (note.strip() or "Loan repayment from savings")
        suffix = f" (ref {sent_key})"
        description = description[:max(0, 200 - len(suffix))] + suffix if len(suffix) < 200 else description[:200]
        body = {
            "fromOfficeId": int(office_id), "fromClientId": int(client_id), "fromAccountType": 2,
            "fromAccountId": int(savings_id),
            "toOfficeId": int(office_id), "toClientId": int(client_id), "toAccountType": 1,
            "toAccountId": int(loan_id),
            "dateFormat": TRANSFER_DATE_FORMAT, "locale": "en", "transferDate": fineract_date(on),
            "transferAmount": format(amount, "f"), "transferDescription": description,
        }
        result, headers = self._call("POST", "/accounttransfers", body=body,
                                     headers={"Idempotency-Key": sent_key}, timeout=timeout)
        cached = str(headers.get("x-served-from-cache", "")).lower() == "true"
        if not isinstance(result, dict) or result.get("resourceId") is None:
            raise MifosUnavailable(f"unexpected transfer answer: {str(result)[:120]}", status=200,
                                   code="bad.response")
        savings = result.get("savingsId")
        return TransferResult(resource_id=int(result["resourceId"]), served_from_cache=cached,
                              savings_id=None if savings is None else int(savings))

    # ---- transport

    def get(self, path: str, params: dict | None = None) -> Any:
        """GET ``path`` and return its JSON (floats as Decimal), or raise a MifosError.

        One retry on a connection error (refused, reset, connect timeout) if at
        least half of ``timeout`` is left of the ``timeout * 1.2`` budget; read
        timeouts are never retried (the server is busy; asking again adds load).
        """
        return self._call("GET", path, params=params)[0]

    def _call(self, method: str, path: str, *, params: dict | None = None, body: Any = None,
              headers: dict | None = None, timeout: float | None = None) -> tuple[Any, Any]:
        """One call through the breaker, with metrics: ``(json, response headers)``."""
        endpoint = endpoint_template(path)
        left = budget.remaining() if method == "GET" else None
        if left is not None and left < MIN_CALL_SECONDS:
            ERRORS.labels(endpoint, "budget").inc()
            raise MifosUnavailable("the hop's time budget is spent; not calling Mifos X", code="budget")
        try:
            self.breaker.acquire()
        except CircuitOpen:
            ERRORS.labels(endpoint, "circuit_open").inc()
            raise MifosUnavailable(f"circuit open: Mifos X at {self.breaker.name} failed "
                                   f"{self.breaker.failures} times in a row; retry in "
                                   f"{self.breaker.retry_after():.0f} s", code="circuit.open") from None
        start = time.monotonic()
        settled = False
        try:
            if method == "GET":
                response = self._send_get(path, params)
            else:
                response = self._send_once(method, path, params, body, headers, timeout)
            result = _decode(response), response.headers
        except MifosError as exc:
            kind = _error_kind(exc)
            ERRORS.labels(endpoint, kind).inc()
            if kind in ("timeout", "connection", "server_error", "bad_response"):
                self.breaker.failure()
            else:
                self.breaker.success()  # the server answered: a business error is an answer
            settled = True
            raise
        else:
            self.breaker.success()
            settled = True
            return result
        finally:
            REQUEST_SECONDS.labels(method, endpoint).observe(time.monotonic() - start)
            if not settled:
                self.breaker.release()

    def _send_get(self, path: str, params: dict | None) -> requests.Response:
        url = self.base_url + path
        deadline = time.monotonic() + self.timeout * BUDGET_FACTOR
        left = budget.remaining()
        if left is not None:
            deadline = min(deadline, time.monotonic() + left)
        for attempt in (1, 2):
            remaining = min(self.timeout, deadline - time.monotonic())
            try:
                return self.session.get(
                    url, params=params,
                    timeout=(min(self.connect_timeout, remaining), max(remaining, 0.05)))
            except requests.Timeout as exc:
                if isinstance(exc, requests.ConnectTimeout) and self._may_retry(attempt, deadline):
                    continue
                raise MifosUnavailable(f"Mifos X did not answer in time: {_short(exc)}",
                                       code="timeout") from None
            except requests.ConnectionError as exc:
                if self._may_retry(attempt, deadline):
                    log.info("retrying GET %s after connection error: %s", endpoint_template(path), _short(exc))
                    continue
                raise MifosUnavailable(f"cannot reach Mifos X: {_short(exc)}", code="connection") from None
            except requests.RequestException as exc:
                raise MifosUnavailable(f"request to Mifos X failed: {_short(exc)}", code="connection") from None
        raise AssertionError("unreachable")

    def _send_once(self, method: str, path: str, params: dict | None, body: Any, headers: dict | None,
                   timeout: float | None) -> requests.Response:
        """A write: sent once, never retried (only Fineract may say whether it happened)."""
        read = float(timeout) if timeout is not None else self.write_timeout
        try:
            return self.session.request(method, self.base_url + path, params=params, json=body,
                                        headers=headers, timeout=(min(self.connect_timeout * 3, read), read))
        except requests.Timeout as exc:
            raise MifosUnavailable(f"Mifos X did not answer the {method} in time (outcome unknown): "
                                   f"{_short(exc)}", code="timeout") from None
        except requests.RequestException as exc:
            raise MifosUnavailable(f"cannot reach Mifos X for the {method}: {_short(exc)}",
                                   code="connection") from None

    def _may_retry(self, attempt: int, deadline: float) -> bool:
        return attempt == 1 and deadline - time.monotonic() >= self.timeout / 2


def _error_kind(exc: MifosError) -> str:
    """The ``kind`` label of ``convo_mifos_errors_total``; decides what the breaker counts."""
    if isinstance(exc, MifosInProgress):
        return "in_progress"
    if isinstance(exc, MifosUnavailable):
        if exc.code in ("timeout", "connection"):
            return exc.code
        if exc.status is None or exc.status >= 500:
            return "server_error"
        if exc.status < 300:
            return "bad_response"
        return "auth" if exc.status in (401, 403) else "misconfigured"
    if isinstance(exc, MifosNotFound):
        return "not_found"
    return {"insufficient_funds": "insufficient_funds", "loan_locked": "locked"}.get(exc.reason, "rejected")


def _decode(response: requests.Response) -> Any:
    text: str | None
    try:
        body = json.loads(response.content, parse_float=Decimal) if response.content else None
    except ValueError:
        body = None
        text = response.text[:200]
    else:
        text = None
    if response.status_code >= 400:
        raise error_from_response(response.status_code, body if body is not None else text or "")
    if body is None and response.status_code != 204:
        raise MifosUnavailable(f"Mifos X answered with non-JSON: {text!r}",
                               status=response.status_code)
    return body


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 160 else text[:157] + "..."
