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

Every amount is a :class:`~decimal.Decimal` parsed from the JSON number's own
digits; v1 date arrays ``[2024, 4, 5]`` (and ISO strings) become
:class:`datetime.date`. The time budget is hard: one call never takes much
longer than ``timeout`` (a single quick retry, GETs only, on connection errors
only, inside ``timeout * 1.2``).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, fields
from datetime import date
from decimal import Decimal
from typing import Any, Iterable, Literal

import phonenumbers
import requests
from requests.adapters import HTTPAdapter

from convo import phone

log = logging.getLogger(__name__)

ZERO = Decimal("0")
#: share of ``timeout`` the whole call (retry included) may use
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


class MifosUnavailable(MifosError):
    """Mifos X cannot answer now: timeout, refused, 5xx, auth or tenant misconfiguration."""


class MifosNotFound(MifosError):
    """The requested client, loan or savings account does not exist (404)."""


class MifosRejected(MifosError):
    """Fineract understood and refused (400 validation, 403 domain rule, 409 locked...).

    ``errors`` is a list of ``{"parameterName", "code", "message"}``.
    """


def error_from_response(status: int, body: Any) -> MifosError:
    """Map an HTTP error status and its (parsed JSON or raw text) body to an exception."""
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
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})

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
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})


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
        return cls(id=d["id"], date=parse_date(d["date"]), kind=d["kind"],
                   amount=Decimal(d["amount"]), credit=d["credit"],
                   running_balance=None if rb is None else Decimal(rb))


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
    for kind, key, balance_key in (("savings", "savingsAccounts", "accountBalance"),
                                   ("loan", "loanAccounts", "loanBalance")):
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
            id=int(raw["id"]), date=parse_date(raw.get("date")), kind=kind.get("value") or "",
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
            id=int(raw["id"]), date=parse_date(raw.get("date")), kind=kind.get("value") or "",
            amount=to_decimal(raw.get("amount")), credit=bool(kind.get("disbursement")),
            running_balance=None if raw.get("outstandingLoanBalance") is None
            else to_decimal(raw["outstandingLoanBalance"]),
        ))
    out.sort(key=lambda t: (t.date, t.id), reverse=True)
    return out[:limit]


# --------------------------------------------------------------------------- the client


class MifosClient:
    """Fineract REST over one pooled ``requests.Session`` (safe to share between threads
    for these read calls)."""

    def __init__(self, base_url: str, user: str, password: str, tenant: str = "default",
                 verify_tls: bool = True, timeout: float = 2.5):
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.connect_timeout = min(1.0, self.timeout / 2)
        self.session = requests.Session()
        self.session.auth = (user, password)
        self.session.verify = verify_tls
        self.session.headers.update({
            "Fineract-Platform-TenantId": tenant,
            "Accept": "application/json",
            "User-Agent": "mifos-convo",
        })
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    @classmethod
    def from_settings(cls, settings) -> "MifosClient":
        return cls(settings.fineract_url, settings.fineract_user, settings.fineract_password,
                   tenant=settings.fineract_tenant, verify_tls=settings.fineract_verify_tls,
                   timeout=settings.fineract_timeout)

    def close(self) -> None:
        self.session.close()

    # ---- questions

    def find_client_by_phone(self, e164: str) -> ClientRef | None:
        """The client whose stored mobile number is ``e164`` in any usual spelling.

        Tries :func:`convo.phone.stored_formats` in order with an exact search.
        Closed, rejected and withdrawn clients are ignored; an active client is
        preferred over a pending one. Rows whose mobile number does not match
        (exact search also matches account numbers and external ids) are skipped.
        """
        fallback = None
        for form in phone.stored_formats(e164):
            rows = self.get("/search", {"query": form, "resource": "clients", "exactMatch": "true"})
            candidates = [client_ref_from_search_row(r) for r in rows or []
                          if r.get("entityType", "CLIENT") == "CLIENT"
                          and _same_phone(r.get("entityMobileNo"), e164)]
            candidates = [c for c in candidates if c.status not in _DEAD_CLIENT_STATUSES]
            active = [c for c in candidates if c.active]
            if active:
                return active[0]
            fallback = fallback or (candidates[0] if candidates else None)
        return fallback

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

        Uses the paged search (Fineract 1.9+), falling back to
        ``?associations=transactions`` on older servers (404/405).
        """
        sid = int(savings_id)
        try:
            # ask for a few extra: reversed rows are dropped after paging
            body = self.get(f"/savingsaccounts/{sid}/transactions/search",
                            {"offset": 0, "limit": limit + 5})
            rows = body.get("content") or []
        except MifosError as exc:
            if exc.status not in (404, 405):
                raise
            body = self.get(f"/savingsaccounts/{sid}", {"associations": "transactions"})
            rows = body.get("transactions") or []
        return savings_transactions_from(rows, limit)

    def loan_transactions(self, loan_id: int, limit: int = 5) -> list[Transaction]:
        """Latest ``limit`` loan transactions (no accruals, no reversed), newest first."""
        body = self.get(f"/loans/{int(loan_id)}", {"associations": "transactions"})
        return loan_transactions_from(body.get("transactions") or [], limit)

    # ---- transport

    def get(self, path: str, params: dict | None = None) -> Any:
        """GET ``path`` and return its JSON (floats as Decimal), or raise a MifosError.

        One retry on a connection error (refused, reset, connect timeout) if at
        least half of ``timeout`` is left of the ``timeout * 1.2`` budget; read
        timeouts are never retried (the server is busy; asking again adds load).
        """
        url = self.base_url + path
        start = time.monotonic()
        deadline = start + self.timeout * BUDGET_FACTOR
        for attempt in (1, 2):
            remaining = min(self.timeout, deadline - time.monotonic())
            try:
                response = self.session.get(
                    url, params=params,
                    timeout=(min(self.connect_timeout, remaining), max(remaining, 0.05)))
            except requests.Timeout as exc:
                if isinstance(exc, requests.ConnectTimeout) and self._may_retry(attempt, deadline):
                    continue
                raise MifosUnavailable(f"Mifos X did not answer in time: {_short(exc)}") from None
            except requests.ConnectionError as exc:
                if self._may_retry(attempt, deadline):
                    log.info("retrying GET %s after connection error: %s", path, _short(exc))
                    continue
                raise MifosUnavailable(f"cannot reach Mifos X: {_short(exc)}") from None
            except requests.RequestException as exc:
                raise MifosUnavailable(f"request to Mifos X failed: {_short(exc)}") from None
            return _decode(response)
        raise AssertionError("unreachable")

    def _may_retry(self, attempt: int, deadline: float) -> bool:
        return attempt == 1 and deadline - time.monotonic() >= self.timeout / 2


def _decode(response: requests.Response) -> Any:
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


def _same_phone(stored: str | None, e164: str) -> bool:
    if not stored:
        return False
    region = phonenumbers.region_code_for_country_code(phonenumbers.parse(e164, None).country_code)
    try:
        return phone.normalize(stored, region=region) == e164
    except phone.InvalidPhone:
        return False


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) < 160 else text[:157] + "..."
