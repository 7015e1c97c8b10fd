"""Simulator additions for notifications: the loan list, staff, single transactions.

``install(app)`` registers the blueprint on a simulator app made by
:func:`convo.devkit.fineract_sim.create_sim_app` and extends its data set
(:func:`extend_seed`): staff with mobile numbers (loan officers, branch
managers); the loan list carries ``loanOfficerId`` (the client's staff member).

Endpoints (Fineract's shapes):

* ``GET /loans?offset=&limit=&accountNo=&status=`` → ``{"totalFilteredRecords": n, "pageItems": [LoanAccountData...]}``
  (no schedule, no transactions: like Fineract's list; ``accountNo`` exact, ``status`` a loan status id)
* ``GET /runreports/Expected Payments By Date - Basic?R_officeId=&R_loanOfficerId=&R_startDate=&R_endDate=``
  with ``genericResultSet=false`` (:func:`expected_payments_rows`): Fineract's core report, the
  unpaid installments of active loans due between the dates, in the office and the offices under it
* ``GET /groups?paged=true&offset=&limit=&staffId=`` → ``{totalFilteredRecords, pageItems}``
  (a bare list without ``paged``)
* ``GET /staff/{id}`` → StaffData (``mobileNo``, ``isLoanOfficer``, ``isActive``, office)
* ``GET /loans/{loanId}/transactions/{id}`` → LoanTransactionData
* ``GET /savingsaccounts/{id}/transactions/{id}`` → SavingsAccountTransactionData

Commands that publish hooks, and the hooks themselves (``HookApiResource``):

* ``POST /loans/{id}/transactions?command=repayment`` → LOAN REPAYMENT
* ``POST /savingsaccounts/{id}/transactions?command=deposit`` → SAVINGSACCOUNT DEPOSIT
* a successful ``POST /accounttransfers`` → ACCOUNTTRANSFER CREATE
* ``POST /hooks`` (template "Web": ``config`` ``Content Type`` json|form and
  ``Payload URL``; ``events``), ``GET /hooks``.

A hook is delivered the way Fineract's ``WebHookProcessor`` does it, through
Retrofit (:func:`retrofit_target`): the Payload URL is Retrofit's ``baseUrl``,
which must end in ``/`` (else ``IllegalArgumentException``: the hook cannot be
created, and is never sent), and the request goes to ``"."`` resolved against
it, which drops the query string. Delivery is asynchronous (Retrofit's
``enqueue``); ``app.config["SIM_HOOK_DELIVERIES"]`` records each one (url,
status or error) and :func:`wait_for_hooks` waits for those in flight.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from decimal import Decimal, InvalidOperation
from urllib.parse import urljoin, urlsplit

import requests
from flask import Blueprint, Flask, Response, current_app, request

from convo.devkit import fineract_seed as seed
from convo.devkit.fineract_sim import API, domain_error, parse_fineract_date, to_json, validation_error

__all__ = ["STAFF", "extend_seed", "install", "retrofit_base_url", "retrofit_target", "wait_for_hooks"]

log = logging.getLogger(__name__)

#: staff id → (first, last, office id, mobile, loan officer?)
STAFF = {
    1: ("Beatrice", "Wekesa", 2, "+254711000001", False),   # branch manager, Nairobi Eastlands
    2: ("Peter", "Otieno", 2, "+254711000002", True),       # loan officer of every seeded client
    3: ("Halima", "Juma", 3, "+254711000003", False),       # branch manager, Kisumu
    4: ("Moussa", "Diallo", 6, "+221770000004", True),
    5: ("Inactive", "Officer", 2, "+254711000005", True),
}


def staff_record(sid: int) -> dict:
    first, last, office, mobile, officer = STAFF[sid]
    return {"id": sid, "firstname": first, "lastname": last, "displayName": f"{last}, {first}",
            "officeId": office, "officeName": seed.OFFICES[office], "isLoanOfficer": officer,
            "isActive": sid != 5, "mobileNo": mobile, "joiningDate": [2019, 1, 7]}


def extend_seed(data: dict) -> dict:
    """Add ``staff`` (idempotent). The loans keep the shape of the shared samples (no officer);
    the loan list gives each loan its client's staff member as ``loanOfficerId``."""
    data.setdefault("staff", {sid: staff_record(sid) for sid in STAFF})
    return data


def _with_officer(data: dict, loan: dict) -> dict:
    row = {k: v for k, v in loan.items() if k not in _LIST_DROP}
    sid = (data["clients"].get(loan.get("clientId")) or {}).get("staffId")
    if sid in data["staff"] and "loanOfficerId" not in row:
        row["loanOfficerId"] = sid
        row["loanOfficerName"] = data["staff"][sid]["displayName"]
    return row


bp = Blueprint("sim_notify", __name__)


def _reply(body, status: int = 200) -> Response:
    return Response(to_json(body), status=status, mimetype="application/json")


def _not_found(kind: str, code: str, ident) -> Response:
    return _reply({"developerMessage": "The requested resource is not available.", "httpStatusCode": "404",
                   "defaultUserMessage": "The requested resource is not available.",
                   "userMessageGlobalisationCode": "error.msg.resource.not.found",
                   "errors": [{"developerMessage": f"{kind} with identifier {ident} does not exist",
                               "defaultUserMessage": f"{kind} with identifier {ident} does not exist",
                               "userMessageGlobalisationCode": code, "parameterName": "id", "value": None,
                               "args": [{"value": ident}]}]}, 404)


def _data() -> dict:
    return extend_seed(current_app.config["SIM_DATA"])


_LIST_DROP = ("repaymentSchedule", "transactions")


@bp.get(API + "/loans")
def loans():
    """``LoansApiResource.retrieveAll`` / ``LoanReadPlatformServiceImpl.retrieveAll``: ``accountNo`` adds
    ``l.account_no = ?``, ``status`` adds ``l.loan_status_id = ?``."""
    data = _data()
    offset = max(0, request.args.get("offset", 0, type=int))
    limit = request.args.get("limit", 200, type=int)
    account_no, status = request.args.get("accountNo"), request.args.get("status")
    if account_no:
        found = data.setdefault("_loans_by_account_no", {})
        if len(found) != len(data["loans"]):
            found.clear()
            found.update({str(l["accountNo"]): lid for lid, l in data["loans"].items()})
        loan = data["loans"].get(found.get(account_no))
        rows = [loan] if loan is not None and str(loan["accountNo"]) == account_no else []
    else:
        rows = sorted(data["loans"].values(), key=lambda l: l["id"])
    if status:
        rows = [l for l in rows if str((l.get("status") or {}).get("id")) == status]
    if request.args.get("sortOrder", "ASC").upper() == "DESC":
        rows.reverse()
    page = rows[offset:] if limit <= 0 else rows[offset:offset + limit]
    return _reply({"totalFilteredRecords": len(rows),
                   "pageItems": [_with_officer(data, l) for l in page]})


@bp.get(API + "/clients")
def clients():
    """``ClientsApiResource.retrieveAll`` / ``ClientReadPlatformServiceImpl.retrieveAll``: ``status``
    (``ClientStatus.fromString``: active = ``c.status_enum = 300``), ``officeId``, ``offset``/``limit``
    (no cap), ordered by id; ``{totalFilteredRecords, pageItems}`` of ClientData rows (``mobileNo``,
    names, ``officeId``, ``staffId``, ``active``)."""
    data = _data()
    offset = max(0, request.args.get("offset", 0, type=int))
    limit = request.args.get("limit", 200, type=int)
    rows = sorted(data["clients"].values(), key=lambda c: c["id"])
    status = (request.args.get("status") or "").lower()
    if status == "active":
        rows = [c for c in rows if (c.get("status") or {}).get("id") == 300 or
                (c.get("status") is None and c.get("active"))]
    elif status:
        return _reply({"developerMessage": f"The Status value '{status}' is not supported.", "httpStatusCode": "400",
                       "userMessageGlobalisationCode": "validation.msg.client.status.invalid"}, 400)
    if request.args.get("officeId"):
        rows = [c for c in rows if c.get("officeId") == request.args.get("officeId", type=int)]
    if request.args.get("sortOrder", "ASC").upper() == "DESC":
        rows.reverse()
    page = rows[offset:] if limit <= 0 else rows[offset:offset + limit]
    return _reply({"totalFilteredRecords": len(rows), "pageItems": page})


@bp.get(API + "/groups")
def groups():
    data = _data()
    offset = max(0, request.args.get("offset", 0, type=int))
    limit = request.args.get("limit", 200, type=int)
    staff_id = request.args.get("staffId", type=int)        # GroupsApiResource.retrieveAll: staffId filter
    rows = [{k: v for k, v in g.items() if not k.startswith("_")}
            for g in sorted(data.get("groups", {}).values(), key=lambda g: g["id"])
            if staff_id is None or g.get("staffId") == staff_id]
    page = rows[offset:] if limit <= 0 else rows[offset:offset + limit]
    if request.args.get("paged", "false").lower() == "true":
        return _reply({"totalFilteredRecords": len(rows), "pageItems": page})
    return _reply(page)


@bp.get(API + "/staff/<int:staff_id>")
def staff(staff_id: int):
    found = _data()["staff"].get(staff_id)
    if found is None:
        return _not_found("Staff", "error.msg.staff.id.invalid", staff_id)
    return _reply(found)


@bp.get(API + "/loans/<int:loan_id>/transactions/<int:tx_id>")
def loan_transaction(loan_id: int, tx_id: int):
    loan = _data()["loans"].get(loan_id)
    if loan is None:
        return _not_found("Loan", "error.msg.loan.id.invalid", loan_id)
    for tx in loan.get("transactions") or []:
        if tx["id"] == tx_id:
            return _reply(tx)
    return _not_found("Transaction", "error.msg.loan.transaction.id.invalid", tx_id)


@bp.get(API + "/savingsaccounts/<int:savings_id>/transactions/<int:tx_id>")
def savings_transaction(savings_id: int, tx_id: int):
    acc = _data()["savings"].get(savings_id)
    if acc is None:
        return _not_found("Savings account", "error.msg.saving.account.id.invalid", savings_id)
    for tx in acc.get("transactions") or []:
        if tx["id"] == tx_id:
            return _reply(tx)
    return _not_found("Savings transaction", "error.msg.saving.account.transaction.id.invalid", tx_id)


# ------------------------------------------------------------------ hooks, the Retrofit way


def retrofit_base_url(url: str) -> str:
    """``Retrofit.Builder.baseUrl(String)``: the URL must parse (http/https) and its path must end in ``/``
    (``"baseUrl must end in /: " + baseUrl``, retrofit2/Retrofit.java)."""
    parts = urlsplit(str(url).strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"Expected URL scheme 'http' or 'https': {url}")
    if not (parts.path or "/").endswith("/"):
        raise ValueError(f"baseUrl must end in /: {url}")
    return url


def retrofit_target(url: str) -> str:
    """Where ``@POST(".")`` of ``WebHookService`` lands for Payload URL ``url``: OkHttp's
    ``HttpUrl.resolve(".")`` (RFC 3986 relative resolution: the base's path, no query, no fragment),
    which ``urllib.parse.urljoin`` computes alike."""
    return urljoin(retrofit_base_url(url), ".")


def wait_for_hooks(app: Flask, timeout: float = 10.0) -> list[dict]:
    """Wait for the hooks in flight (Retrofit's ``enqueue``) and return every delivery so far."""
    for t in list(app.config.get("SIM_HOOK_THREADS") or []):
        t.join(timeout)
    return list(app.config.get("SIM_HOOK_DELIVERIES") or [])


def _deliver(app: Flask, hook: dict, entity: str, action: str, tenant: str, payload: dict) -> None:
    """WebHookProcessor.sendRequest: json → ``sendJsonRequest``, anything else → ``sendFormRequest``."""
    record = {"hook": hook["id"], "entity": entity, "action": action, "payload_url": hook["url"]}
    try:
        target = retrofit_target(hook["url"])
        record["url"] = target
        headers = {"X-Fineract-Entity": entity, "X-Fineract-Action": action, "Fineract-Platform-TenantId": tenant}
        if hook["endpoint"]:                     # System.getProperty("baseUrl"); a null @Header is left out
            headers["X-Fineract-Endpoint"] = hook["endpoint"]
        if "json" in hook["content_type"].lower():
            r = requests.post(target, data=json.dumps(payload, default=_plain), timeout=10,
                              headers={**headers, "Content-Type": "application/json; charset=UTF-8"})
        else:
            fields = {k: v if isinstance(v, str) else json.dumps(v, default=_plain) for k, v in payload.items()}
            r = requests.post(target, data=fields, headers=headers, timeout=10)
        record["status"] = r.status_code
    except Exception as e:  # noqa: BLE001 - Retrofit's onFailure only logs
        record["error"] = str(e)
        log.info("sim hook %s to %s failed: %s", hook["id"], hook["url"], e)
    app.config["SIM_HOOK_DELIVERIES"].append(record)


def _plain(value):
    if isinstance(value, Decimal):
        return float(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def publish_hook(app: Flask, entity: str, action: str, request_json: dict, result: dict,
                 tenant: str | None = None) -> None:
    """SynchronousCommandProcessingService.publishHookEvent + FineractHookListener: the 1.9+ body to every
    active hook registered for (entity, action)."""
    app = getattr(app, "_get_current_object", lambda: app)()      # the thread needs the app, not the proxy
    result = dict(result)
    body = {"entityName": entity, "actionName": action, "createdBy": 1, "createdByName": "mifos",
            "createdByFullName": "App Administrator", "request": request_json,
            "officeId": result.get("officeId"), "clientId": result.get("clientId")}
    result.pop("officeId", None)
    body["response"] = {k: v for k, v in result.items() if v is not None}
    body = {k: v for k, v in body.items() if v is not None}
    body["timestamp"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    tenant = tenant or request.headers.get("Fineract-Platform-TenantId") or "default"
    for hook in list(app.config["SIM_HOOKS"].values()):
        if hook["active"] and (entity, action) in hook["events"]:
            t = threading.Thread(target=_deliver, args=(app, hook, entity, action, tenant, body), daemon=True,
                                 name=f"sim-hook-{hook['id']}")
            app.config["SIM_HOOK_THREADS"].append(t)
            t.start()


@bp.post(API + "/hooks")
def create_hook():
    """HookWritePlatformServiceJpaRepositoryImpl.createHook / validateHookRules for the "Web" template."""
    body = request.get_json(silent=True) or {}
    config = body.get("config") or {}
    events = {(str(e.get("entityName")), str(e.get("actionName"))) for e in body.get("events") or []}
    errors = []
    content_type = str(config.get("Content Type", ""))
    if content_type.lower() not in ("json", "form"):
        errors.append(("hook", "validation.msg.hook.content.type.must.be.json.or.form",
                       "content.type.must.be.json.or.form", []))
    url = config.get("Payload URL")
    if url is None:
        errors.append(("hook", "validation.msg.hook.required.config.field.not.provided",
                       "required.config.field.not.provided", ["Payload URL"]))
    else:
        try:
            base = retrofit_base_url(url)
        except ValueError as e:  # IllegalArgumentException: DefaultExceptionMapper
            return _reply({"Exception": str(e)}, 500)
        try:                     # service.sendEmptyRequest().execute(): GET "."; only an IOException fails
            requests.get(urljoin(base, "."), timeout=5)
        except requests.RequestException:
            errors.append(("hook", "validation.msg.hook.url.invalid", "url.invalid", []))
    if not events:
        errors.append(("hook", "validation.msg.hook.registered.events.cannot.be.empty",
                       "registered.events.cannot.be.empty", []))
    if errors:
        return _reply(validation_error(errors), 400)
    hooks = current_app.config["SIM_HOOKS"]
    hid = max(hooks, default=0) + 1
    hooks[hid] = {"id": hid, "name": body.get("name", "Web"), "display": body.get("displayName"),
                  "active": bool(body.get("isActive", True)), "content_type": content_type, "url": url,
                  "events": events, "endpoint": current_app.config.get("SIM_BASE_URL_PROPERTY")}
    return _reply({"resourceId": hid})


@bp.get(API + "/hooks")
def list_hooks():
    return _reply([{"id": h["id"], "name": h["name"], "displayName": h["display"], "isActive": h["active"],
                    "config": [{"fieldName": "Payload URL", "fieldValue": h["url"]},
                               {"fieldName": "Content Type", "fieldValue": h["content_type"]}],
                    "events": [{"entityName": e, "actionName": a} for e, a in sorted(h["events"])]}
                   for h in current_app.config["SIM_HOOKS"].values()])


def _transaction_input(body: dict) -> tuple[dt.date | None, Decimal | None, list]:
    errors, day, amount = [], None, None
    if not body.get("transactionDate"):
        errors.append(("transactionDate", "validation.msg.transaction.transactionDate.cannot.be.blank",
                       "The parameter `transactionDate` is mandatory.", [None]))
    else:
        day = parse_fineract_date(body["transactionDate"], body.get("dateFormat") or "")
        if day is None:
            errors.append(("transactionDate", "validation.msg.invalid.date.format",
                           "The parameter `transactionDate` is invalid based on the dateFormat.", []))
    try:
        amount = Decimal(str(body.get("transactionAmount")))
        if amount <= 0:
            raise InvalidOperation
    except InvalidOperation:
        errors.append(("transactionAmount", "validation.msg.transaction.transactionAmount.not.greater.than.zero",
                       "The parameter `transactionAmount` must be greater than 0.", [body.get("transactionAmount")]))
    return day, amount, errors


def _future(day: dt.date, param: str, resource: str, body: dict) -> Response | None:
    if day > current_app.config["SIM_BUSINESS_DATE_OF"]():
        return _reply(validation_error([(param, f"error.msg.{resource}.transaction.in.the.future",
                                          "Transaction date cannot be in the future.",
                                          [body.get("transactionDate")])]), 400)
    return None


def _changes(body: dict) -> dict:
    return {k: body[k] for k in ("transactionDate", "transactionAmount", "locale", "dateFormat") if k in body}


@bp.post(API + "/loans/<int:loan_id>/transactions")
def loan_transaction_command(loan_id: int):
    """LoanTransactionsApiResource ``command=repayment`` (LoanWritePlatformServiceJpaRepositoryImpl.makeLoanRepayment):
    publishes LOAN REPAYMENT with ``loanId`` and ``resourceId`` = the new transaction's id."""
    if request.args.get("command") != "repayment":
        return _reply(validation_error([("command", "error.msg.command.unsupported",
                                          "The simulator supports command=repayment only.", [])]), 400)
    data = _data()
    loan = data["loans"].get(loan_id)
    if loan is None:
        return _not_found("Loan", "error.msg.loan.id.invalid", loan_id)
    body = request.get_json(silent=True) or {}
    day, amount, errors = _transaction_input(body)
    if errors:
        return _reply(validation_error(errors), 400)
    assert day is not None and amount is not None  # else _transaction_input reported an error
    if not loan["status"].get("active"):
        return _reply(domain_error("error.msg.loan.transaction.account.is.not.active",
                                    "Loan transaction is not allowed. Loan is not active.", [loan_id]), 403)
    future = _future(day, "transactionDate", "loan", body)
    if future is not None:
        return future
    with current_app.config["SIM_LOCK"]:
        before = {t["id"] for t in loan.get("transactions") or []}
        data["loans"][loan_id] = seed.with_loan_repayment(loan, day, amount, data.get("today") or dt.date.today())
        new = [t["id"] for t in data["loans"][loan_id].get("transactions") or [] if t["id"] not in before]
    result = {"officeId": loan.get("clientOfficeId"), "clientId": loan.get("clientId"), "loanId": loan_id,
              "resourceId": max(new) if new else None, "changes": _changes(body)}
    publish_hook(current_app, "LOAN", "REPAYMENT", body, result)
    return _reply(result)


@bp.post(API + "/savingsaccounts/<int:savings_id>/transactions")
def savings_transaction_command(savings_id: int):
    """SavingsAccountTransactionsApiResource ``command=deposit`` (SavingsAccountWritePlatformServiceJpaRepositoryImpl
    .deposit): publishes SAVINGSACCOUNT DEPOSIT with ``savingsId`` and ``resourceId`` = the transaction's id."""
    if request.args.get("command") != "deposit":
        return _reply(validation_error([("command", "error.msg.command.unsupported",
                                          "The simulator supports command=deposit only.", [])]), 400)
    data = _data()
    acc = data["savings"].get(savings_id)
    if acc is None:
        return _not_found("Savings account", "error.msg.saving.account.id.invalid", savings_id)
    body = request.get_json(silent=True) or {}
    day, amount, errors = _transaction_input(body)
    if errors:
        return _reply(validation_error(errors), 400)
    assert day is not None and amount is not None  # else _transaction_input reported an error
    if not acc["status"].get("active"):
        return _reply(domain_error("error.msg.savingsaccount.transaction.account.is.not.active",
                                    "Transaction is not allowed. Account is not active.", [savings_id]), 403)
    future = _future(day, "transactionDate", "savingsaccount", body)
    if future is not None:
        return future
    with current_app.config["SIM_LOCK"]:
        before = {t["id"] for t in acc.get("transactions") or []}
        args = dict(acc["_args"])
        args["txs"] = list(args["txs"]) + [(day, "deposit", amount, False)]
        data["savings"][savings_id] = seed.savings_account(today=data.get("today") or dt.date.today(), **args)
        new = [t["id"] for t in data["savings"][savings_id].get("transactions") or [] if t["id"] not in before]
    client = data["clients"].get(acc["clientId"]) or {}
    result = {"officeId": client.get("officeId"), "clientId": acc["clientId"], "savingsId": savings_id,
              "resourceId": max(new) if new else None, "changes": _changes(body)}
    publish_hook(current_app, "SAVINGSACCOUNT", "DEPOSIT", body, result)
    return _reply(result)


def install(app: Flask) -> Flask:
    """Register the notification endpoints on a simulator app and extend its data set."""
    extend_seed(app.config["SIM_DATA"])
    app.config.setdefault("SIM_HOOKS", {})
    app.config.setdefault("SIM_HOOK_THREADS", [])
    app.config.setdefault("SIM_HOOK_DELIVERIES", [])
    app.config.setdefault("SIM_LOCK", threading.RLock())
    app.config["SIM_PUBLISH_HOOK"] = lambda *a, **kw: publish_hook(app, *a, **kw)
    app.register_blueprint(bp)
    return app


# --------------------------------------------------------------------------- reports (/runreports)

#: the columns of 'Expected Payments By Date - Basic', in the order of its SELECT
#: (fineract-provider/src/main/resources/db/changelog/tenant/parts/0003_postgresql_specific_initial_data.xml)
EXPECTED_PAYMENTS_COLUMNS = ("Office", "Loan Officer", "Client Account Number", "Name", "Product",
                             "Loan Account Number", "Due Date", "Installment", "Currency", "Principal Due",
                             "Interest Due", "Fees Due", "Penalty Due", "Total Due", "Total Overdue")


def _office_hierarchy(oid: int) -> str:
    parent = seed.OFFICE_PARENTS.get(oid)
    return "." if parent is None else _office_hierarchy(parent) + f"{oid}."


def _owed(p: dict, part: str) -> Decimal:
    """``x_amount - coalesce(coalesce(x_completed_derived, x_waived_derived), 0)`` of the report's SQL."""
    paid = p.get(f"{part}Paid")
    return Decimal(p.get(f"{part}Due") or 0) - Decimal(paid if paid is not None else (p.get(f"{part}Waived") or 0))


def expected_payments_rows(data: dict, office_id: int, loan_officer_id: int, start: dt.date,
                           end: dt.date) -> list[dict]:
    """The report's rows over the simulator's data: active loans (``loan_status_id=300``) of clients in the
    office or under it (``ounder.hierarchy LIKE concat(mo.hierarchy, '%')``), of the loan officer unless
    -1, their installments not completed (``completed_derived=false``) with ``duedate BETWEEN`` the dates;
    ordered by office id, due date, loan account number."""
    top = _office_hierarchy(office_id)
    out = []
    for loan in data["loans"].values():
        if (loan.get("status") or {}).get("id") != 300:
            continue
        client = data["clients"].get(loan.get("clientId")) or {}
        oid = loan.get("clientOfficeId") or client.get("officeId")
        if oid is None or not _office_hierarchy(oid).startswith(top):
            continue
        officer = loan.get("loanOfficerId") or client.get("staffId")
        if loan_officer_id != -1 and (officer if officer is not None else -10) != loan_officer_id:
            continue
        summary = loan.get("summary") or {}
        overdue = summary.get("totalOverdue")
        for p in (loan.get("repaymentSchedule") or {}).get("periods") or []:
            if p.get("period") is None or p.get("complete") is True:
                continue
            due = p["dueDate"]
            if not (start <= due <= end):
                continue
            parts = [_owed(p, "principal"), _owed(p, "interest"), _owed(p, "feeCharges"), _owed(p, "penaltyCharges")]
            staff = data.get("staff", {}).get(officer) if officer is not None else None
            out.append(dict(zip(EXPECTED_PAYMENTS_COLUMNS, (
                data["offices"].get(oid, ""), (staff or {}).get("displayName") or "-",
                loan.get("clientAccountNo") or client.get("accountNo"),
                loan.get("clientName") or client.get("displayName"),
                loan.get("loanProductName"), loan.get("accountNo"), due, p["period"],
                (loan.get("currency") or {}).get("displaySymbol"), *parts, sum(parts, Decimal(0)),
                overdue if overdue else None))))
            out[-1]["_sort"] = (oid, due, str(loan.get("accountNo")))
    out.sort(key=lambda r: r.pop("_sort"))
    return out


@bp.get(API + "/runreports/<path:name>")
def run_report(name: str):
    """``RunreportsApiResource.runReport``: ``R_<name>`` fills ``${name}`` in the report's SQL
    (``AbstractReportingProcessService.getReportParams``); ``genericResultSet=false`` answers one object per
    row keyed by column name (``GenericDataServiceImpl.generateJsonFromGenericResultsetData``), otherwise
    ``columnHeaders`` + ``data: [{row: [...]}]``. Only 'Expected Payments By Date - Basic' is simulated."""
    if name != "Expected Payments By Date - Basic":
        return _not_found("Reporting meta-data entry", "error.msg.report.name.not.found", name)
    a = request.args
    try:
        rows = expected_payments_rows(_data(), int(a["R_officeId"]), int(a.get("R_loanOfficerId", "-1")),
                                      dt.date.fromisoformat(a["R_startDate"]), dt.date.fromisoformat(a["R_endDate"]))
    except (KeyError, ValueError) as e:
        # Fineract leaves ${x} unreplaced in the SQL and the database refuses it
        return _reply({"developerMessage": f"report parameter missing or malformed: {e}", "httpStatusCode": "400",
                       "userMessageGlobalisationCode": "error.msg.report.parameter.invalid"}, 400)
    if a.get("genericResultSet", "true").lower() == "false":
        # GenericDataServiceImpl writes every column, null included, in the SELECT's order (not Gson)
        def value(v):
            return "null" if v is None else to_json(v)

        body = ",".join("{" + ",".join(f"{json.dumps(c)}: {value(r[c])}" for c in EXPECTED_PAYMENTS_COLUMNS) + "}"
                        for r in rows)
        return Response("[" + body + "]", mimetype="application/json")
    return _reply({"columnHeaders": [{"columnName": c} for c in EXPECTED_PAYMENTS_COLUMNS],
                   "data": [{"row": [r[c] for c in EXPECTED_PAYMENTS_COLUMNS]} for r in rows]})
