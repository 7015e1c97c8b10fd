"""Fineract reads beyond the client's own methods: what notifications, the console and actions ask.

Every Mifos X path the service calls is written in :mod:`convo.mifos` (here or in the client).

Plain functions over :class:`convo.mifos.client.MifosClient` (its ``get``),
so the Fineract client itself stays small. Every endpoint here exists in
Apache Fineract 1.8+ with the same shapes:

* ``GET /clients/{id}`` → :func:`client_contact` (mobile number, names, office, loan officer),
  :func:`client_birth_date`
* ``GET /clients/{id}/accounts`` → :func:`client_savings_rows` (the overview's savings rows as Fineract sends them)
* ``GET /staff/{id}`` → :func:`staff_mobile` (``mobileNo`` of a loan officer or other staff), :func:`staff`
* ``GET /groups`` and ``GET /groups/{id}?associations=collectionMeetingCalendar`` → :func:`groups`,
  :func:`group_with_meetings` (the field officer's day)
* ``GET /loans/{id}`` → :func:`loan` (receipts)
* ``GET /runreports/Expected Payments By Date - Basic`` → :func:`installments_due`: the unpaid
  installments of active loans due between two dates, in an office and every office under it,
  computed by Fineract's database (a core report of every Fineract since 1.x:
  ``0003_postgresql_specific_initial_data.xml`` / ``0002_initial_data.xml``, report 'Expected Payments
  By Date - Basic'; ``R_`` parameters per ``AbstractReportingProcessService.getReportParams``;
  ``genericResultSet=false`` gives one JSON object per row keyed by column name, dates as
  ``[y, m, d]``, per ``GenericDataServiceImpl.generateJsonFromGenericResultsetData``). Reminders ask
  it once per reminder day: the number of calls does not grow with the number of loans.
  The rows name the loan by account number: :func:`loan_by_account_no` (``GET /loans?accountNo=``,
  ``LoanReadPlatformServiceImpl.retrieveAll``: ``l.account_no = ?``) gives its id, client, office
  and currency, once per loan that gets a reminder.
* ``GET /offices`` → :func:`offices` (id, name, hierarchy; names are unique in Fineract).
* ``GET /loans?offset=&limit=`` → :func:`iter_active_loans` and ``GET /loans/{id}?associations=repaymentSchedule``
  → :func:`loan_with_schedule`: one loan at a time (a loan's own schedule).
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
    "EXPECTED_PAYMENTS_REPORT", "ClientContact", "DueRow", "Installment", "client_contact", "client_contacts",
    "installments_due",
    "iter_active_loans", "loan_by_account_no", "loans_by_account_no", "loan_installments", "offices",
    "loan_transaction", "loan_with_schedule", "savings_transaction", "staff_mobile", "savings_account",
    "client_birth_date", "client_savings_rows", "staff", "groups", "group_with_meetings", "loan", "all_groups",
    "group_with_members_and_meetings", "client", "search_clients",
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
    return _contact(mifos.get(f"/clients/{int(client_id)}") or {})


def staff(mifos: MifosClient, staff_id: int) -> dict:
    """``GET /staff/{id}`` as Fineract sends it; raises ``MifosNotFound`` for an unknown id."""
    return mifos.get(f"/staff/{int(staff_id)}") or {}


def groups(mifos: MifosClient, staff_id: int | None = None) -> list[dict]:
    """``GET /groups`` (one page of up to 500; those of loan officer ``staff_id`` when given): the rows."""
    params: dict = {"paged": "true", "limit": 500}
    if staff_id is not None:
        params["staffId"] = staff_id
    body = mifos.get("/groups", params) or {}
    return list((body.get("pageItems") if isinstance(body, dict) else body) or [])


def all_groups(mifos: MifosClient, page_size: int = 200) -> list[dict]:
    """Every group, ``GET /groups?paged=true`` page by page (``totalFilteredRecords`` ends it)."""
    out: list[dict] = []
    offset = 0
    while True:
        body = mifos.get("/groups", {"offset": offset, "limit": page_size, "paged": "true"})
        items = body if isinstance(body, list) else (body or {}).get("pageItems") or []
        out.extend(items)
        offset += len(items)
        total = None if isinstance(body, list) else (body or {}).get("totalFilteredRecords")
        if (isinstance(body, list) or not items or len(items) < page_size
                or (total is not None and offset >= int(total))):
            return out


def group_with_members_and_meetings(mifos: MifosClient, group_id: int) -> dict:
    """``GET /groups/{id}?associations=activeClientMembers,collectionMeetingCalendar`` (meeting reminders)."""
    associations = {"associations": "activeClientMembers,collectionMeetingCalendar"}
    return mifos.get(f"/groups/{int(group_id)}", associations) or {}


def client(mifos: MifosClient, client_id: int) -> dict:
    """``GET /clients/{id}`` as Fineract sends it (the console's client page); ``MifosNotFound`` if unknown."""
    return mifos.get(f"/clients/{int(client_id)}") or {}


def search_clients(mifos: MifosClient, query: str) -> list[dict]:
    """``GET /search?resource=clients&exactMatch=false``: clients whose name (or number, id) matches ``query``."""
    return list(mifos.get("/search", {"query": query, "resource": "clients", "exactMatch": "false"}) or [])


def group_with_meetings(mifos: MifosClient, group_id: int) -> dict:
    """``GET /groups/{id}?associations=collectionMeetingCalendar``: the group with its meeting calendar."""
    return mifos.get(f"/groups/{int(group_id)}", {"associations": "collectionMeetingCalendar"}) or {}


def loan(mifos: MifosClient, loan_id: int, *, transactions: bool = False) -> dict:
    """``GET /loans/{id}`` (with ``associations=transactions`` when asked)."""
    return mifos.get(f"/loans/{int(loan_id)}", {"associations": "transactions"} if transactions else None) or {}


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
    items: list[dict]
    total: int | None
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
        if (not items or len(items) < page_size or isinstance(body, list)
                or (total is not None and offset >= int(total))):
            return


def loan_with_schedule(mifos: MifosClient, loan_id: int) -> dict:
    return mifos.get(f"/loans/{int(loan_id)}", {"associations": "repaymentSchedule"}) or {}


def client_birth_date(mifos: MifosClient, client_id: int) -> date | None:
    """``dateOfBirth`` of ``GET /clients/{id}``, when Mifos X knows it."""
    return parse_date((mifos.get(f"/clients/{int(client_id)}") or {}).get("dateOfBirth"))


def client_savings_rows(mifos: MifosClient, client_id: int) -> list[dict]:
    """The ``savingsAccounts`` rows of ``GET /clients/{id}/accounts``, as Fineract sends them (with
    ``depositType`` and ``subStatus``, which the typed overview leaves out)."""
    return list((mifos.get(f"/clients/{int(client_id)}/accounts") or {}).get("savingsAccounts") or [])


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


# --------------------------------------------------------------------------- reminders at scale

#: Fineract's core report of unpaid installments of active loans due between two dates (see the module doc)
EXPECTED_PAYMENTS_REPORT = "Expected Payments By Date - Basic"
#: seconds a report or list read of the reminder run may take (the worker, never a USSD hop)
REPORT_TIMEOUT = 120.0


@dataclass(frozen=True)
class DueRow:
    """One row of :data:`EXPECTED_PAYMENTS_REPORT`: an unpaid installment of an active loan."""
    office: str
    loan_account_no: str
    client_account_no: str
    client_name: str
    product: str
    due_date: date
    installment: int
    #: still owed on this installment (principal, interest, fees and penalties)
    outstanding: Decimal
    #: the loan's whole overdue amount (``m_loan_arrears_aging``; 0 when not in arrears)
    loan_overdue: Decimal


def _patient(mifos: MifosClient, timeout: float = REPORT_TIMEOUT) -> MifosClient:
    """The same client (session, breaker) with a timeout for a long read in the worker."""
    import copy

    if mifos.timeout >= timeout:
        return mifos
    slow = copy.copy(mifos)
    slow.timeout = float(timeout)
    return slow


def offices(mifos: MifosClient) -> list[dict]:
    """``GET /offices``: every office (id, name, hierarchy, parentId)."""
    return list(mifos.get("/offices") or [])


def installments_due(mifos: MifosClient, office_id: int, start: date, end: date) -> list[DueRow]:
    """Unpaid installments of active loans due from ``start`` to ``end`` (both included) in office
    ``office_id`` and the offices under it: one call of :data:`EXPECTED_PAYMENTS_REPORT`."""
    from urllib.parse import quote

    rows = _patient(mifos).get("/runreports/" + quote(EXPECTED_PAYMENTS_REPORT), {
        "R_officeId": int(office_id), "R_loanOfficerId": -1, "R_startDate": start.isoformat(),
        "R_endDate": end.isoformat(), "genericResultSet": "false"}) or []
    out = []
    for r in rows:
        due = parse_date(r.get("Due Date"))
        if due is None or r.get("Loan Account Number") is None:
            continue
        out.append(DueRow(office=r.get("Office") or "", loan_account_no=str(r["Loan Account Number"]),
                          client_account_no=str(r.get("Client Account Number") or ""),
                          client_name=r.get("Name") or "", product=r.get("Product") or "", due_date=due,
                          installment=int(r.get("Installment") or 0), outstanding=to_decimal(r.get("Total Due")),
                          loan_overdue=to_decimal(r.get("Total Overdue"))))
    return out


def loan_by_account_no(mifos: MifosClient, account_no: str) -> dict | None:
    """``GET /loans?accountNo=``: the loan list's row (id, clientId, clientOfficeId, loanOfficerId,
    currency, status, summary) of the loan with that account number, or None."""
    body = _patient(mifos, 30.0).get("/loans", {"accountNo": account_no, "limit": 1})
    items = body if isinstance(body, list) else (body or {}).get("pageItems") or []
    return next((l for l in items if str(l.get("accountNo")) == str(account_no)), None)


#: rows per page when the active loans are read as a list (``GET /loans?status=300``: Fineract caps no
#: ``limit``, ``SearchParameters.getLimit``) instead of one look-up per account
LIST_PAGE = 2000


def _by_look_up_or_pages(mifos: MifosClient, wanted: set, look_up, list_path: str, list_params: dict, key_of,
                         *, threads: int, page_size: int) -> tuple[dict, int]:
    """Rows of ``wanted`` keys: ``look_up(key)`` each while that is fewer calls than reading every page of
    ``list_path`` (``page_size`` rows a page), the pages otherwise; and the calls it took. The first page
    is read as soon as there are more than two keys: its ``totalFilteredRecords`` tells the pages left."""
    from concurrent.futures import ThreadPoolExecutor

    if not wanted:
        return {}, 0
    slow = _patient(mifos)

    def page(offset: int):
        body = slow.get(list_path, {**list_params, "offset": offset, "limit": page_size, "orderBy": "id",
                                    "sortOrder": "ASC"})
        items = body if isinstance(body, list) else (body or {}).get("pageItems") or []
        total = len(items) if isinstance(body, list) else int((body or {}).get("totalFilteredRecords") or 0)
        return items, total

    def look_up_all(rest) -> dict:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            rows = dict(zip(rest, pool.map(look_up, rest)))
        return {k: r for k, r in rows.items() if r is not None}

    if len(wanted) <= 2:
        return look_up_all(sorted(wanted)), len(wanted)
    items, total = page(0)
    calls = 1
    found = {key_of(r): r for r in items if key_of(r) in wanted}
    offset = len(items)
    pages_left = -(-(total - offset) // page_size) if total > offset else 0
    rest = sorted(wanted - set(found))
    if len(rest) <= pages_left or not items:
        found.update(look_up_all(rest))
        return found, calls + len(rest)
    while items and offset < total:
        items, _ = page(offset)
        calls += 1
        offset += len(items)
        found.update({key_of(r): r for r in items if key_of(r) in wanted})
    return found, calls


def loans_by_account_no(mifos: MifosClient, accounts, *, threads: int = 4,
                        page_size: int = LIST_PAGE) -> tuple[dict[str, dict], int]:
    """The loan list's rows of ``accounts`` (account number -> row) and the Mifos X calls it took: one
    :func:`loan_by_account_no` each while that is fewer calls than paging through every active loan
    (``GET /loans?status=300``, ``page_size`` a page, ``LoanReadPlatformServiceImpl.retrieveAll``:
    ``l.loan_status_id = ?``); past that, the pages. At most ``1 + active loans / page_size`` calls."""
    return _by_look_up_or_pages(mifos, set(map(str, accounts)), lambda a: loan_by_account_no(mifos, a), "/loans",
                                {"status": 300}, lambda l: str(l.get("accountNo")), threads=threads,
                                page_size=page_size)


def _contact(body: dict) -> ClientContact:
    first = body.get("firstname") or (body.get("displayName") or "").split(" ")[0]
    return ClientContact(
        id=int(body["id"]), display_name=body.get("displayName") or "", first_name=first or "",
        mobile_no=body.get("mobileNo") or None, office_id=body.get("officeId"), staff_id=body.get("staffId"),
        active=bool(body.get("active", True)),
    )


def client_contacts(mifos: MifosClient, client_ids, *, threads: int = 4,
                    page_size: int = LIST_PAGE) -> tuple[dict[int, ClientContact], int]:
    """Contacts of ``client_ids`` and the Mifos X calls it took: ``GET /clients/{id}`` each while that is
    fewer calls than the pages of ``GET /clients?status=active`` (``ClientReadPlatformServiceImpl``:
    ``c.status_enum = 300``; the list's rows carry ``mobileNo``, names, ``officeId``, ``staffId``).
    Clients not found (or not active) are left out: :func:`client_contact` says why."""
    def one(cid):
        try:
            return mifos.get(f"/clients/{int(cid)}")
        except MifosNotFound:
            return None

    rows, calls = _by_look_up_or_pages(mifos, {int(c) for c in client_ids}, one, "/clients", {"status": "active"},
                                       lambda r: int(r.get("id")), threads=threads, page_size=page_size)
    return {cid: _contact(r) for cid, r in rows.items()}, calls
