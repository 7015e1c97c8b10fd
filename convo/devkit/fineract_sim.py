"""A Fineract simulator: the read endpoints convo uses, in Fineract's exact shapes.

    app = create_sim_app(today=date(2024, 4, 20))     # seeded data set, see seed.py
    convo fineract-sim --port 8443                    # or: main(port=8443)

Serves under ``/fineract-provider/api/v1``: ``GET /search``, ``/clients/{id}``,
``/clients/{id}/accounts``, ``/savingsaccounts/{id}`` (``associations=transactions``),
``/savingsaccounts/{id}/transactions/search``, ``/loans/{id}``
(``associations=repaymentSchedule,transactions`` or ``all``) and
``POST /authentication``. Dates go out as ``[y, m, d]`` arrays, amounts with
the digits Fineract writes, null fields and (in the overview) zero amounts
left out. Basic auth and the tenant header are checked like Fineract's
filters do (Spring-style 400/401 bodies).

Groups and centers: ``GET /groups/{id}`` and ``/centers/{id}`` with
``associations=collectionMeetingCalendar`` (and ``clientMembers``,
``activeClientMembers``, ``groupMembers``, ``all``); ``GET /clients/{id}``
lists the client's ``groups`` like Fineract's ``retrieveOne``.

Writes: ``POST /accounttransfers`` (savings → loan only) moves the money in
the in-memory data set: the savings balance and available balance drop, the
loan's installments are paid oldest first, both accounts get a transaction.
Fineract's checks and error shapes: 400 validation (amount, date and its
``dateFormat``, description), 400 ``error.msg.savingsaccount.transaction.in.the.future``
for a date after the business date, 403 insufficient balance, 404 unknown
account. Like Fineract 1.9+, an ``Idempotency-Key`` seen before gets the
stored answer again (the same status and body, header ``x-served-from-cache:
true``, no second move; 400 and 403 answers are stored too); while the first
request with a key is still running, another gets 425; a key longer than
Fineract's 50-character column fails its insert (403 ``error.msg.data.integrity.issue``,
nothing moves). ``fineract_version="1.8"`` ignores the key (1.8 has no
idempotency) and answers the savings transactions search with a Spring 404
(1.8 has no such endpoint). The search takes ``offset`` as a page number and
answers an unknown account with an empty page.

Business date: ``GET /configurations`` (``enable-business-date``), ``GET
/businessdate/BUSINESS_DATE`` and ``POST /businessdate``; ``business_date=``
and ``business_date_enabled=`` of :func:`create_sim_app` (default: on, at the
data set's ``today``). Off, the business date is today in ``tenant_timezone``.

Fault injection: ``POST /__sim/faults {"delay": 3, "down": true}`` (down
answers 503), ``{"locked_loans": [29]}`` (POST/PUT/DELETE under ``/loans/29``
answer 409 "locked by the COB job", like Fineract's ``LoanCOBApiFilter``;
``/accounttransfers`` is not under that filter), ``{"transfer_delay": 0.5}``
(a transfer takes that long inside, for duplicate races); ``DELETE /__sim/faults``; or
``app.config["SIM_FAULTS"]``. ``app.config["SIM_HITS"]`` (and ``GET
/__sim/stats``) counts the API requests that reached the simulator.
"""
from __future__ import annotations

import base64
import hmac
import json
import re
import threading
import time
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Flask, Response, request

from convo.devkit import fineract_seed as seed

API = "/fineract-provider/api/v1"
_OVERVIEW_SAVINGS_TIMELINE_DROP = ("activatedByUsername", "activatedByFirstname", "activatedByLastname")


# ------------------------------------------------------------------ JSON the Fineract way


def to_json(value) -> str:
    """Serialize like Fineract's Gson: Decimals keep their digits, dates are arrays,
    ``None`` and ``_private`` keys are left out."""
    if isinstance(value, dict):
        items = (f"{json.dumps(k)}:{to_json(v)}" for k, v in value.items()
                 if v is not None and not k.startswith("_"))
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date):
        return f"[{value.year},{value.month},{value.day}]"
    return json.dumps(value, ensure_ascii=False)


def _reply(body, status: int = 200) -> Response:
    return Response(to_json(body), status=status, mimetype="application/json")


def _spring_error(status: int, error: str) -> Response:
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return _reply({"timestamp": now, "status": status, "error": error, "path": request.path}, status)


def _not_found(kind: str, code: str, ident) -> Response:
    return _reply(_not_found_body(kind, code, ident), 404)


# ------------------------------------------------------------------ shapes derived from the data set


def search_row(client: dict) -> dict:
    row = {"entityId": client["id"], "entityAccountNo": client["accountNo"],
           "entityExternalId": client.get("externalId"), "entityName": client["displayName"],
           "entityType": "CLIENT", "parentId": client["officeId"], "parentName": client["officeName"],
           "entityMobileNo": client.get("mobileNo"),
           "entityStatus": {k: client["status"][k] for k in ("id", "code", "value")},
           "subEntityType": "depositAccountType.invalid"}
    return row


def _matches(client: dict, query: str, exact: bool) -> bool:
    fields = [client.get("displayName"), client.get("accountNo"), client.get("externalId"), client.get("mobileNo")]
    if exact:
        return any(f is not None and f == query for f in fields)
    q = query.lower()
    return any(f is not None and q in f.lower() for f in fields)


def _nonzero(value: Decimal | None) -> Decimal | None:
    """The overview's ``getBigDecimalDefaultToNullIfZero``."""
    return value if value else None


def savings_overview(acc: dict) -> dict:
    timeline = {k: v for k, v in acc["timeline"].items() if k not in _OVERVIEW_SAVINGS_TIMELINE_DROP}
    return {
        "id": acc["id"], "accountNo": acc["accountNo"], "externalId": acc.get("externalId"),
        "productId": acc["savingsProductId"], "productName": acc["savingsProductName"],
        "shortProductName": acc["_short"], "status": acc["status"], "currency": acc["currency"],
        "accountBalance": _nonzero((acc.get("summary") or {}).get("accountBalance")),
        "accountType": {"id": 1, "code": "accountType.individual", "value": "Individual"},
        "timeline": timeline, "subStatus": acc["subStatus"],
        "lastActiveTransactionDate": acc.get("lastActiveTransactionDate"),
        "depositType": acc["depositType"],
    }


def loan_overview(loan: dict) -> dict:
    summary = loan.get("summary") or {}
    timeline = dict(loan["timeline"])
    if not summary:  # not disbursed: no maturity date in the overview yet
        timeline.pop("expectedMaturityDate", None)
    return {
        "id": loan["id"], "accountNo": loan["accountNo"], "externalId": loan.get("externalId"),
        "productId": loan["loanProductId"], "productName": loan["loanProductName"],
        "shortProductName": loan["_short"], "status": loan["status"], "currency": loan["currency"],
        "loanType": loan["loanType"], "loanCycle": loan["loanProductCounter"], "timeline": timeline,
        "inArrears": loan["inArrears"],
        "originalLoan": _nonzero(summary.get("principalDisbursed")),
        "loanBalance": _nonzero(summary.get("totalOutstanding")),
        "amountPaid": _nonzero(seed.d6(loan["_amount_paid"])) if summary else None,
    }


def _associations() -> set[str]:
    raw = request.args.get("associations", "")
    wanted = {a.strip() for a in raw.split(",") if a.strip()}
    if "all" in wanted:
        wanted |= {"repaymentSchedule", "transactions"}
    return wanted


# ------------------------------------------------------------------ the app


#: the newest Fineract the simulator imitates (``fineract_version`` default)
NEWEST_VERSION = "1.10"
_FAULT_KEYS = ("delay", "down", "locked_loans", "transfer_delay")


_SUPER = {"id": 1, "name": "Super user", "description": "This role provides all application permissions.",
          "disabled": False}
#: Mifos X users of the simulator (``POST /authentication``); every password is "password".
#: mifos: the super user of Fineract's demo; peter: loan officer at Nairobi Eastlands (staff 2), may view
#: and text clients but not change them; beatrice: that branch's manager (staff 1), may also reset PINs;
#: halima: Kisumu's manager (staff 3), sees only Kisumu's clients; readonly: may view only; renew: must
#: change the password first; twofactor: Mifos X asks for a second factor.
SIM_USERS: dict[str, dict] = {
    "mifos": {"password": "password", "userId": 1, "officeId": 1, "role": _SUPER, "permissions": ["ALL_FUNCTIONS"]},
    "peter": {"password": "password", "userId": 2, "officeId": 2, "staffId": 2, "staffDisplayName": "Otieno, Peter",
              "role": {"id": 3, "name": "Loan Officer", "description": "Field staff", "disabled": False},
              "permissions": ["READ_CLIENT", "READ_LOAN", "READ_GROUP", "CREATE_SMS", "READ_SMS"]},
    "beatrice": {"password": "password", "userId": 3, "officeId": 2, "staffId": 1,
                 "staffDisplayName": "Wekesa, Beatrice",
                 "role": {"id": 4, "name": "Branch Manager", "description": "Branch", "disabled": False},
                 "permissions": ["READ_CLIENT", "UPDATE_CLIENT", "CREATE_SMS", "READ_LOAN"]},
    "halima": {"password": "password", "userId": 4, "officeId": 3, "staffId": 3, "staffDisplayName": "Juma, Halima",
               "role": {"id": 4, "name": "Branch Manager", "description": "Branch", "disabled": False},
               "permissions": ["READ_CLIENT", "UPDATE_CLIENT", "CREATE_SMS"]},
    "readonly": {"password": "password", "userId": 5, "officeId": 1,
                 "role": {"id": 2, "name": "Auditor", "description": "Reads", "disabled": False},
                 "permissions": ["ALL_FUNCTIONS_READ"]},
    "renew": {"password": "password", "userId": 6, "officeId": 1, "renew": True, "role": _SUPER,
              "permissions": ["ALL_FUNCTIONS"]},
    "twofactor": {"password": "password", "userId": 7, "officeId": 1, "two_factor": True, "role": _SUPER,
                  "permissions": ["ALL_FUNCTIONS"]},
}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in str(text).split(".")[:2])


def create_sim_app(dataset: dict | None = None, *, today: date | None = None,
                   username: str = "mifos", password: str = "password",
                   fineract_version: str = NEWEST_VERSION, business_date: date | None = None,
                   business_date_enabled: bool = True, tenant_timezone: str = "Africa/Nairobi") -> Flask:
    """The simulator as a Flask app; ``dataset`` defaults to :func:`seed.build(today)`.

    ``fineract_version`` ("1.8", "1.9", "1.10"...) switches what differs
    between versions: the savings transactions search and Idempotency-Key.
    ``business_date`` (default the data set's ``today``) is what transfers are
    checked against while ``business_date_enabled``; else today in ``tenant_timezone``.
    """
    app = Flask(__name__)
    app.config.update(
        SIM_DATA=dataset if dataset is not None else seed.build(today),
        SIM_FAULTS={},
        SIM_TENANTS={"default"},
        SIM_CREDENTIALS=(username, password),
        SIM_USERS={**SIM_USERS, username: {**SIM_USERS["mifos"], "password": password}},
        SIM_VERSION=str(fineract_version),
        SIM_HITS=0,
        SIM_IDEMPOTENCY={},
        SIM_BUSINESS_DATE=business_date,
        SIM_BUSINESS_DATE_ENABLED=bool(business_date_enabled),
        SIM_TIMEZONE=tenant_timezone,
    )
    lock = threading.RLock()  # the data set and the idempotency store are written by request threads
    app.config["SIM_LOCK"] = lock
    hits_lock = threading.Lock()

    def data() -> dict:
        return app.config["SIM_DATA"]

    def data_today() -> date:
        return data().get("today") or date.today()

    def current_business_date() -> date:
        """``DateUtils.getBusinessLocalDate``: the stored BUSINESS_DATE while the feature is on, else the
        tenant's today (``BusinessDateReadPlatformServiceImpl.getBusinessDates``)."""
        if app.config["SIM_BUSINESS_DATE_ENABLED"]:
            return app.config["SIM_BUSINESS_DATE"] or data_today()
        from zoneinfo import ZoneInfo

        return datetime.now(ZoneInfo(app.config["SIM_TIMEZONE"])).date()

    app.config["SIM_BUSINESS_DATE_OF"] = current_business_date

    @app.before_request
    def faults_and_security():
        if request.path.startswith("/__sim/"):
            return None
        with hits_lock:
            app.config["SIM_HITS"] += 1
        faults = app.config.get("SIM_FAULTS") or {}
        if faults.get("delay"):
            time.sleep(float(faults["delay"]))
        if faults.get("down"):
            return _spring_error(503, "Service Unavailable")
        if not request.path.startswith(API):
            return None
        tenant = request.headers.get("Fineract-Platform-TenantId") or request.args.get("tenantIdentifier")
        if not tenant or tenant not in app.config["SIM_TENANTS"]:
            return _spring_error(400, "Bad Request")
        if request.path == API + "/authentication":
            return None
        if _basic_auth() != tuple(app.config["SIM_CREDENTIALS"]):
            return _spring_error(401, "Unauthorized")
        return _cob_lock(faults)

    @app.post("/__sim/faults")
    def set_faults():
        body = request.get_json(silent=True) or {}
        app.config["SIM_FAULTS"] = {k: body[k] for k in _FAULT_KEYS if k in body}
        return _reply(app.config["SIM_FAULTS"])

    @app.get("/__sim/stats")
    def stats():
        return _reply({"hits": app.config["SIM_HITS"], "version": app.config["SIM_VERSION"]})

    @app.delete("/__sim/faults")
    def clear_faults():
        app.config["SIM_FAULTS"] = {}
        return _reply({})

    @app.post(API + "/authentication")
    def authentication():
        """``AuthenticationApiResource.authenticate`` (fineract-provider/.../infrastructure/security/api):
        credentials from the JSON body only (FINERACT-726; no body or a null field: 400), a wrong
        password 401 with ``ApiGlobalErrorResponse.unAuthenticated()`` (``BadCredentialsExceptionMapper``),
        else ``AuthenticatedUserData`` (Gson leaves null fields out: no ``staffId`` for a user without
        staff). A user who must renew their password gets only username, userId, key, authenticated and
        the two flags. Users: :data:`SIM_USERS` (``app.config["SIM_USERS"]``)."""
        body = request.get_json(silent=True, force=True)
        if not isinstance(body, dict) or not isinstance(body.get("username"), str) \
                or not isinstance(body.get("password"), str):
            return _reply({"developerMessage": "Invalid JSON in BODY (no longer URL param; see FINERACT-726) "
                           "of POST to /authentication", "httpStatusCode": "400",
                           "defaultUserMessage": "Invalid JSON in BODY of POST to /authentication",
                           "userMessageGlobalisationCode": "error.msg.invalid.request.body", "errors": []}, 400)
        user, pwd = body["username"], body["password"]
        found = app.config["SIM_USERS"].get(user)
        if found is None or not hmac.compare_digest(found["password"].encode(), pwd.encode()):
            return _reply({"developerMessage": "Invalid authentication details were passed in api request.",
                           "httpStatusCode": "401", "defaultUserMessage": "Unauthenticated. Please login.",
                           "userMessageGlobalisationCode": "error.msg.not.authenticated", "errors": []}, 401)
        key = base64.b64encode(f"{user}:{pwd}".encode()).decode()
        if found.get("renew"):
            return _reply({"username": user, "userId": found["userId"], "base64EncodedAuthenticationKey": key,
                           "authenticated": True, "shouldRenewPassword": True,
                           "isTwoFactorAuthenticationRequired": False})
        office = found["officeId"]
        out = {"username": user, "userId": found["userId"], "base64EncodedAuthenticationKey": key,
               "authenticated": True, "officeId": office, "officeName": data()["offices"][office]}
        if found.get("staffId"):
            out.update(staffId=found["staffId"], staffDisplayName=found["staffDisplayName"])
        out.update(roles=[found["role"]], permissions=list(found["permissions"]), shouldRenewPassword=False,
                   isTwoFactorAuthenticationRequired=bool(found.get("two_factor")))
        return _reply(out)

    @app.get(API + "/search")
    def search():
        query = request.args.get("query", "")
        resources = {r.strip() for r in request.args.get("resource", "clients").split(",")}
        exact = request.args.get("exactMatch", "false").lower() == "true"
        if not query or "clients" not in resources:
            return _reply([])
        # SearchReadPlatformServiceImpl.searchSchema: "order by c.id desc", then "limit 50"
        clients = sorted(data()["clients"].values(), key=lambda c: c["id"], reverse=True)
        rows = [search_row(c) for c in clients if _matches(c, query, exact)]
        return _reply(rows[:50])

    @app.get(API + "/offices")
    def offices():
        """OfficeReadPlatformServiceImpl.OfficeMapper: id, name, nameDecorated, openingDate, hierarchy
        (head office ".", then parent's hierarchy + id + "." per Office.hierarchyOf), parentId, parentName."""
        def hierarchy(oid):
            parent = seed.OFFICE_PARENTS.get(oid)
            return "." if parent is None else hierarchy(parent) + f"{oid}."
        out = []
        for oid, name in sorted(data()["offices"].items()):
            row = {"id": oid, "name": name, "nameDecorated": "...." * (hierarchy(oid).count(".") - 1) + name,
                   "openingDate": date(2015, 1, 1), "hierarchy": hierarchy(oid)}
            parent = seed.OFFICE_PARENTS.get(oid)
            if parent is not None:
                row.update(parentId=parent, parentName=data()["offices"][parent])
            out.append(row)
        return _reply(out)

    @app.get(API + "/clients/<int:client_id>")
    def client(client_id: int):
        found = data()["clients"].get(client_id)
        if found is None:
            return _not_found("Client", "error.msg.client.id.invalid", client_id)
        return _reply(found)

    @app.get(API + "/clients/<int:client_id>/accounts")
    def client_accounts(client_id: int):
        if client_id not in data()["clients"]:
            return _not_found("Client", "error.msg.client.id.invalid", client_id)
        loans = [loan_overview(l) for l in sorted(data()["loans"].values(), key=lambda l: l["id"])
                 if l["clientId"] == client_id]
        savings = [savings_overview(s) for s in sorted(data()["savings"].values(), key=lambda s: s["id"])
                   if s["clientId"] == client_id]
        return _reply({"loanAccounts": loans or None, "groupLoanIndividualMonitoringAccounts": [],
                       "savingsAccounts": savings or None, "guarantorAccounts": []})

    @app.get(API + "/savingsaccounts/<int:savings_id>")
    def savings_account(savings_id: int):
        acc = data()["savings"].get(savings_id)
        if acc is None:
            return _not_found("Savings account", "error.msg.saving.account.id.invalid", savings_id)
        body = dict(acc)
        if "transactions" not in _associations() or not body.get("transactions"):
            body.pop("transactions", None)
        return _reply(body)

    @app.get(API + "/savingsaccounts/<int:savings_id>/transactions/search")
    def savings_transactions(savings_id: int):
        if _version(app.config["SIM_VERSION"]) < (1, 9):
            # 1.8: ".../transactions/{transactionId}" with "search" for a Long: Jersey's 404, Spring's body
            return _spring_error(404, "Not Found")
        # SavingsAccountTransactionsSearchServiceImpl.searchTransactions: WHERE savings_account_id = ? AND
        # is_reversal = false, ORDER BY transaction_date DESC, created_date DESC, id DESC; no account check,
        # so an unknown account is an empty page. TransactionSearchRequest.pageable: PageRequest.of(offset, limit),
        # offset is the page number.
        acc = data()["savings"].get(savings_id) or {}
        page = max(0, request.args.get("offset", 0, type=int))
        size = max(1, request.args.get("limit", 50, type=int))
        rows = sorted((r for r in acc.get("transactions") or [] if not r.get("isReversal")),
                      key=lambda r: (r["date"], r["id"]), reverse=True)
        return _reply({"total": len(rows), "content": rows[page * size:(page + 1) * size]})

    @app.get(API + "/configurations")
    def configurations():
        """GlobalConfigurationApiResource.retrieveConfiguration (only what the simulator models)."""
        return _reply({"globalConfiguration": [
            {"name": "enable-business-date", "enabled": app.config["SIM_BUSINESS_DATE_ENABLED"], "value": 0,
             "id": 41, "description": "Whether the logical business date functionality is enabled",
             "trapDoor": False}]})

    @app.get(API + "/businessdate/<kind>")
    def get_business_date(kind: str):
        """BusinessDateApiResource.getBusinessDate: the stored row (whether or not the feature is on)."""
        if kind not in ("BUSINESS_DATE", "COB_DATE"):
            return _reply(_not_found_body("Business date", "error.msg.businessdate.type.not.exist", kind), 404)
        day = app.config["SIM_BUSINESS_DATE"] or data_today()
        if kind == "COB_DATE":
            day = date.fromordinal(day.toordinal() - 1)
        return _reply({"description": "Business Date" if kind == "BUSINESS_DATE" else "Close of Business Date",
                       "type": kind, "date": day})

    @app.post(API + "/businessdate")
    def set_business_date():
        """BusinessDateApiResource.updateBusinessDate: ``{"type", "date", "dateFormat", "locale"}``."""
        body = request.get_json(silent=True) or {}
        if not app.config["SIM_BUSINESS_DATE_ENABLED"]:
            return _reply(domain_error("error.msg.business.date.is.disabled",
                                        "Business date functionality is not enabled", []), 403)
        day = parse_fineract_date(body.get("date", ""), body.get("dateFormat", ""))
        if body.get("type") != "BUSINESS_DATE" or day is None:
            return _reply(validation_error([("date", "validation.msg.invalid.date.format",
                                              "The parameter `date` is invalid.", [])]), 400)
        app.config["SIM_BUSINESS_DATE"] = day
        return _reply({"changes": {"BUSINESS_DATE": day}})

    @app.get(API + "/loans/<int:loan_id>")
    def loan(loan_id: int):
        found = data()["loans"].get(loan_id)
        if found is None:
            return _not_found("Loan", "error.msg.loan.id.invalid", loan_id)
        wanted = _associations()
        body = {k: v for k, v in found.items()
                if not (k == "repaymentSchedule" and k not in wanted)
                and not (k == "transactions" and (k not in wanted or not v))}
        return _reply(body)

    @app.get(API + "/groups/<int:group_id>")
    def group(group_id: int):
        body = seed.group_body(data(), group_id, _associations(), data_today())
        if body is None:
            return _not_found("Group", "error.msg.group.id.invalid", group_id)
        return _reply(body)

    @app.get(API + "/centers/<int:center_id>")
    def center(center_id: int):
        body = seed.center_body(data(), center_id, _associations(), data_today())
        if body is None:
            return _not_found("Center", "error.msg.center.id.invalid", center_id)
        return _reply(body)

    @app.post(API + "/accounttransfers")
    def account_transfers():
        raw = request.get_data(as_text=True)
        faults = app.config.get("SIM_FAULTS") or {}
        try:
            body = json.loads(raw, parse_float=Decimal) if raw else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _reply(validation_error([("body", "error.msg.invalid.request.body",
                                              "The JSON body of the request is invalid.", [])]), 400)
        key = request.headers.get("Idempotency-Key")
        if _version(app.config["SIM_VERSION"]) < (1, 9):
            key = None  # no idempotency before 1.9
        store = app.config["SIM_IDEMPOTENCY"]
        if key and len(key) > KEY_COLUMN_LENGTH:
            return _reply(_key_too_long(), 403)
        if key:
            with lock:
                seen = store.get(("accounttransfer", key))
                if seen == "running":
                    return Response(raw, status=425, mimetype="application/json",
                                    headers={"x-served-from-cache": "true"})
                if seen is not None:
                    status, text = seen
                    return Response(text, status=status, mimetype="application/json",
                                    headers={"x-served-from-cache": "true"})
                store[("accounttransfer", key)] = "running"
        try:
            if faults.get("transfer_delay"):
                time.sleep(float(faults["transfer_delay"]))
            with lock:
                status, answer = _transfer(app, body, current_business_date(), data_today())
            text = to_json(answer)
        except BaseException:
            if key:
                with lock:
                    store.pop(("accounttransfer", key), None)
            raise
        if key:
            with lock:
                if status < 500:
                    store[("accounttransfer", key)] = (status, text)
                else:
                    store.pop(("accounttransfer", key), None)
        if status == 200 and app.config.get("SIM_PUBLISH_HOOK"):
            app.config["SIM_PUBLISH_HOOK"]("ACCOUNTTRANSFER", "CREATE", body, answer)
        return Response(text, status=status, mimetype="application/json")

    _meeting_times(app.config["SIM_DATA"])
    from convo.devkit import fineract_sim_notify as sim_notify

    return sim_notify.install(app)  # loan list, staff, groups list, single transactions (notifications)


#: collection meeting times (``m_calendar.meeting_time``) by center / group id; Fineract's
#: ``LocalTimeAdapter`` writes a ``LocalTime`` as ``[hour, minute, second]``
MEETING_TIMES = {("centers", 1): [10, 0, 0], ("centers", 2): [9, 30, 0], ("groups", 11): [14, 0, 0],
                 ("groups", 13): [11, 0, 0], ("groups", 15): [16, 0, 0]}


def _meeting_times(data: dict) -> None:
    """Give the seeded calendars their ``meetingTime`` (``CalendarData.meetingTime``) where they have none."""
    for kind in ("centers", "groups"):
        for eid, body in (data.get(kind) or {}).items():
            cal = body.get("_calendar")
            if cal is not None and (kind, eid) in MEETING_TIMES:
                cal.setdefault("meetingTime", MEETING_TIMES[(kind, eid)])


# ------------------------------------------------------------------ account transfers (savings → loan)

_TRANSFER_PARAMS = {"fromOfficeId", "fromClientId", "fromAccountType", "fromAccountId", "toOfficeId", "toClientId",
                    "toAccountType", "toAccountId", "dateFormat", "locale", "transferDate", "transferAmount",
                    "transferDescription"}
_MONTHS = {m: i for i, m in enumerate(("january", "february", "march", "april", "may", "june", "july", "august",
                                       "september", "october", "november", "december"), start=1)}


def _param_error(param: str | None, code: str, message: str, args: list) -> dict:
    return {"developerMessage": message, "defaultUserMessage": message, "userMessageGlobalisationCode": code,
            "parameterName": param, "args": [{"value": a} if a is not None else {} for a in args]}


def validation_error(errors: list[tuple]) -> dict:
    return {"developerMessage": "The request was invalid. This typically will happen due to validation errors "
                                "which are provided.",
            "httpStatusCode": "400", "defaultUserMessage": "Validation errors exist.",
            "userMessageGlobalisationCode": "validation.msg.validation.errors.exist",
            "errors": [_param_error(*e) for e in errors]}


def domain_error(code: str, message: str, args: list) -> dict:
    return {"developerMessage": "Request was understood but caused a domain rule violation.",
            "httpStatusCode": "403", "defaultUserMessage": "Errors contain reason for domain rule violation.",
            "userMessageGlobalisationCode": "validation.msg.domain.rule.violation",
            "errors": [_param_error("id", code, message, args)]}


#: ``m_portfolio_command_source.idempotency_key`` VARCHAR(50) (0061_add_idempotency_key_to_command_source.xml)
KEY_COLUMN_LENGTH = 50
_LOAN_PATH = re.compile("^" + re.escape(API) + r"/(?:reschedule)?loans/(?:external-id/)?([^/?]+)")


def _cob_lock(faults: dict) -> Response | None:
    """LoanCOBApiFilter / LoanCOBFilterHelper.isOnApiList: POST, PUT, DELETE on ``/loans/{id}...``
    (not ``/loans/catch-up``) for a loan the COB job holds answer 409 before any command runs."""
    locked = {str(x) for x in faults.get("locked_loans") or []}
    if not locked or request.method not in ("POST", "PUT", "DELETE"):
        return None
    found = _LOAN_PATH.match(request.path)
    if found and found.group(1) in locked and found.group(1) != "catch-up":
        return _reply(_loan_locked(int(found.group(1)) if found.group(1).isdigit() else found.group(1)), 409)
    return None


def _key_too_long() -> dict:
    """A longer Idempotency-Key fails the INSERT of m_portfolio_command_source (CommandSourceService.saveInitial,
    before the command runs). EclipseLink's error reaches SynchronousCommandProcessingService's fallback as a
    JpaSystemException (a NonTransientDataAccessException), ErrorHandler.getMappable makes it a
    PlatformDataIntegrityException "error.msg.data.integrity.issue", PlatformDataIntegrityExceptionMapper answers
    403. The message is the database's (PostgreSQL's here; MySQL/MariaDB: "Data too long for column")."""
    msg = "ERROR: value too long for type character varying(50)"
    return {"developerMessage": "The request caused a data integrity issue to be fired by the database.",
            "httpStatusCode": "403", "defaultUserMessage": msg,
            "userMessageGlobalisationCode": "error.msg.data.integrity.issue",
            "errors": [_param_error(None, "error.msg.data.integrity.issue", msg, [])]}


def _format_fineract_date(day: date, pattern: str) -> str:
    if pattern == "yyyy-MM-dd":
        return day.isoformat()
    names = sorted(_MONTHS, key=_MONTHS.__getitem__)
    return f"{day.day:02d} {names[day.month - 1].capitalize()} {day.year}"


def _loan_locked(loan_id) -> dict:
    msg = f"Loan is locked by the COB job. Loan ID: {loan_id}"
    return {"developerMessage": msg, "httpStatusCode": "409", "defaultUserMessage": msg,
            "userMessageGlobalisationCode": "error.msg.loan.locked", "errors": []}


def parse_fineract_date(text: str, pattern: str) -> date | None:
    """The two patterns clients send: ``dd MMMM yyyy`` (locale en) and ``yyyy-MM-dd``."""
    try:
        if pattern == "dd MMMM yyyy":
            day, month, year = str(text).split()
            return date(int(year), _MONTHS[month.lower()], int(day))
        if pattern == "yyyy-MM-dd":
            return date.fromisoformat(str(text))
    except (ValueError, KeyError):
        return None
    return None


def _transfer(app: Flask, body: dict, business_day: date, today: date) -> tuple[int, dict]:
    """AccountTransfersWritePlatformServiceImpl.create for savings → loan, on the data set.

    ``business_day`` is what the date is checked against, ``today`` the data set's date."""
    data = app.config["SIM_DATA"]
    unknown = sorted(set(body) - _TRANSFER_PARAMS)
    if unknown:
        return 400, validation_error([(p, "error.msg.parameter.unsupported",
                                        f"The parameter {p} is not supported.", [p]) for p in unknown])
    errors: list[tuple[str, str, str, list[Any]]] = []
    day: date | None = None
    if body.get("transferDate") not in (None, ""):
        if not body.get("dateFormat"):
            errors.append(("transferDate", "validation.msg.missing.dateFormat.parameter",
                           "The parameter `transferDate` requires a `dateFormat` parameter to be passed with it.", []))
        elif not body.get("locale"):
            errors.append(("transferDate", "validation.msg.missing.locale.parameter",
                           "The parameter `transferDate` requires a `locale` parameter to be passed with it.", []))
        else:
            day = parse_fineract_date(body["transferDate"], body["dateFormat"])
            if day is None:
                errors.append(("transferDate", "validation.msg.invalid.date.format",
                               f"The parameter `transferDate` is invalid based on the dateFormat: "
                               f"`{body['dateFormat']}` and locale: `{body['locale']}` provided:", []))
    else:
        errors.append(("transferDate", "validation.msg.accounttransfer.transferDate.cannot.be.blank",
                       "The parameter `transferDate` is mandatory.", [None]))
    amount = None
    raw_amount = body.get("transferAmount")
    if raw_amount in (None, ""):
        errors.append(("transferAmount", "validation.msg.accounttransfer.transferAmount.cannot.be.blank",
                       "The parameter `transferAmount` is mandatory.", [None]))
    else:
        try:
            amount = Decimal(str(raw_amount))
        except InvalidOperation:
            errors.append(("transferAmount", "validation.msg.invalid.decimal.format",
                           f"The parameter `transferAmount` has value: {raw_amount} which is invalid decimal value "
                           f"for provided locale of [{body.get('locale')}].", [raw_amount]))
        else:
            if amount <= 0:
                errors.append(("transferAmount", "validation.msg.accounttransfer.transferAmount.not.greater.than.zero",
                               "The parameter `transferAmount` must be greater than 0.", [amount, 0]))
    if not str(body.get("transferDescription") or "").strip():
        errors.append(("transferDescription", "validation.msg.accounttransfer.transferDescription.cannot.be.blank",
                       "The parameter `transferDescription` is mandatory.", [None]))
    elif len(str(body["transferDescription"])) > 200:
        errors.append(("transferDescription",
                       "validation.msg.accounttransfer.transferDescription.exceeds.max.length",
                       "The parameter `transferDescription` exceeds max length of 200.", [200]))
    for param in ("fromOfficeId", "fromClientId", "fromAccountId", "toOfficeId", "toClientId", "toAccountId",
                  "fromAccountType", "toAccountType"):
        if body.get(param) in (None, ""):
            errors.append((param, f"validation.msg.accounttransfer.{param}.cannot.be.blank",
                           f"The parameter `{param}` is mandatory.", [None]))
    if errors:
        return 400, validation_error(errors)
    assert day is not None and amount is not None  # both were checked above: no errors
    if (int(body["fromAccountType"]), int(body["toAccountType"])) != (2, 1):
        return 400, validation_error([("toAccountType", "validation.msg.accounttransfer.toAccountType.is.not.supported",
                                        "The simulator transfers only from savings (2) to a loan (1).",
                                        [body["toAccountType"]])])
    sid, lid = int(body["fromAccountId"]), int(body["toAccountId"])
    acc, loan = data["savings"].get(sid), data["loans"].get(lid)
    if acc is None:
        return 404, _not_found_body("Savings account", "error.msg.saving.account.id.invalid", sid)
    if loan is None:
        return 404, _not_found_body("Loan", "error.msg.loan.id.invalid", lid)
    if acc["clientId"] != int(body["fromClientId"]) or loan["clientId"] != int(body["toClientId"]):
        return 400, validation_error([("fromClientId",
                                        "validation.msg.accounttransfer.account.does.not.belong.to.client",
                                        "The account does not belong to the client given.", [])])
    if not acc["status"].get("active"):
        return 403, domain_error("error.msg.savingsaccount.transaction.account.is.not.active",
                                  "Transaction is not allowed. Account is not active.", [sid])
    if not loan["status"].get("active"):
        return 403, domain_error("error.msg.loan.transaction.account.is.not.active",
                                  "Loan transaction is not allowed. Loan is not active.", [lid])
    if day > business_day:
        # SavingsAccount.withdraw: DateUtils.isDateInTheFuture -> PlatformApiDataValidationException (400)
        return 400, validation_error([("transactionDate", "error.msg.savingsaccount.transaction.in.the.future",
                                        "Transaction date cannot be in the future.",
                                        [_format_fineract_date(day, body["dateFormat"])])])
    summary = acc["summary"]
    if amount > summary["availableBalance"]:
        return 403, domain_error("error.msg.savingsaccount.transaction.insufficient.account.balance",
                                  "Insufficient account balance.",
                                  ["transactionAmount", summary["accountBalance"], None, seed.d6(amount)])
    if amount > loan["summary"]["totalOutstanding"]:
        # simulator simplification: Fineract would take the overpayment and mark the loan overpaid
        return 403, domain_error("error.msg.loan.transaction.amount.exceeds.outstanding",
                                  "The repayment is more than the loan's outstanding balance.",
                                  [seed.d6(amount), loan["summary"]["totalOutstanding"]])
    data["savings"][sid] = seed.with_savings_withdrawal(acc, day, amount, today)
    data["loans"][lid] = seed.with_loan_repayment(loan, day, amount, today)
    data["transfer_seq"] = data.get("transfer_seq", 0) + 1
    transfer_id = data["transfer_seq"]
    data.setdefault("transfers", {})[transfer_id] = {
        "id": transfer_id, "fromAccountId": sid, "toAccountId": lid, "amount": amount, "date": day,
        "description": body["transferDescription"]}
    return 200, {"savingsId": sid, "resourceId": transfer_id}


def _not_found_body(kind: str, code: str, ident) -> dict:
    msg = f"{kind} with identifier {ident} does not exist"
    return {"developerMessage": "The requested resource is not available.", "httpStatusCode": "404",
            "defaultUserMessage": "The requested resource is not available.",
            "userMessageGlobalisationCode": "error.msg.resource.not.found",
            "errors": [{"developerMessage": msg, "defaultUserMessage": msg, "userMessageGlobalisationCode": code,
                        "parameterName": "id", "args": [{"value": ident}]}]}


def _basic_auth() -> tuple[str | None, str | None] | None:
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return None
    return auth.username, auth.password


def main(host: str = "127.0.0.1", port: int = 8443, today: date | None = None,
         fineract_version: str = NEWEST_VERSION) -> None:
    """Run the simulator with werkzeug (threaded) and print the demo phones."""
    from werkzeug.serving import run_simple

    print(f"Fineract simulator on http://{host}:{port}{API}  (user mifos / password password, tenant default)")
    for phone, what in seed.DEMO_PHONES:
        print(f"  {phone:<16} {what}")
    run_simple(host, port, create_sim_app(today=today, fineract_version=fineract_version), threaded=True)


if __name__ == "__main__":
    main()


def start_simulator(port: int = 0, host: str = "127.0.0.1"):
    """Run the Fineract simulator in a background thread; returns the server (``.url``, ``.stop()``)."""
    from convo.devkit.devserver import BackgroundServer

    return BackgroundServer(create_sim_app(), host=host, port=port).start()
