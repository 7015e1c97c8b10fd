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

Fault injection: ``POST /__sim/faults {"delay": 3, "down": true}`` (down
answers 503), ``DELETE /__sim/faults``; or ``app.config["SIM_FAULTS"]``.
"""
from __future__ import annotations

import base64
import json
import time
from datetime import date, datetime, timezone
from decimal import Decimal

from flask import Flask, Response, request

from convo.mifos import seed

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
    msg = f"{kind} with identifier {ident} does not exist"
    return _reply({
        "developerMessage": "The requested resource is not available.", "httpStatusCode": "404",
        "defaultUserMessage": "The requested resource is not available.",
        "userMessageGlobalisationCode": "error.msg.resource.not.found",
        "errors": [{"developerMessage": msg, "defaultUserMessage": msg, "userMessageGlobalisationCode": code,
                    "parameterName": "id", "args": [{"value": ident}]}],
    }, 404)


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


def create_sim_app(dataset: dict | None = None, *, today: date | None = None,
                   username: str = "mifos", password: str = "password") -> Flask:
    """The simulator as a Flask app; ``dataset`` defaults to :func:`seed.build(today)`."""
    app = Flask(__name__)
    app.config.update(
        SIM_DATA=dataset if dataset is not None else seed.build(today),
        SIM_FAULTS={},
        SIM_TENANTS={"default"},
        SIM_CREDENTIALS=(username, password),
    )

    def data() -> dict:
        return app.config["SIM_DATA"]

    @app.before_request
    def faults_and_security():
        if request.path.startswith("/__sim/"):
            return None
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
        return None

    @app.post("/__sim/faults")
    def set_faults():
        body = request.get_json(silent=True) or {}
        app.config["SIM_FAULTS"] = {k: body[k] for k in ("delay", "down") if k in body}
        return _reply(app.config["SIM_FAULTS"])

    @app.delete("/__sim/faults")
    def clear_faults():
        app.config["SIM_FAULTS"] = {}
        return _reply({})

    @app.post(API + "/authentication")
    def authentication():
        body = request.get_json(silent=True) or {}
        user = body.get("username") or request.args.get("username")
        pwd = body.get("password") or request.args.get("password")
        if (user, pwd) != tuple(app.config["SIM_CREDENTIALS"]):
            return _reply({"developerMessage": "Invalid authentication details were passed in api request.",
                           "httpStatusCode": "401", "defaultUserMessage": "Unauthenticated. Please login.",
                           "userMessageGlobalisationCode": "error.msg.not.authenticated", "errors": []}, 401)
        return _reply({
            "username": user, "userId": 1,
            "base64EncodedAuthenticationKey": base64.b64encode(f"{user}:{pwd}".encode()).decode(),
            "authenticated": True, "officeId": 1, "officeName": "Head Office",
            "roles": [{"id": 1, "name": "Super user", "description": "This role provides all application permissions.",
                       "disabled": False}],
            "permissions": ["ALL_FUNCTIONS"], "shouldRenewPassword": False,
            "isTwoFactorAuthenticationRequired": False,
        })

    @app.get(API + "/search")
    def search():
        query = request.args.get("query", "")
        resources = {r.strip() for r in request.args.get("resource", "clients").split(",")}
        exact = request.args.get("exactMatch", "false").lower() == "true"
        if not query or "clients" not in resources:
            return _reply([])
        rows = [search_row(c) for c in data()["clients"].values() if _matches(c, query, exact)]
        return _reply(rows)

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
        acc = data()["savings"].get(savings_id)
        if acc is None:
            return _not_found("Savings account", "error.msg.saving.account.id.invalid", savings_id)
        offset = max(0, request.args.get("offset", 0, type=int))
        limit = max(1, request.args.get("limit", 50, type=int))
        rows = acc.get("transactions") or []
        return _reply({"total": len(rows), "content": rows[offset:offset + limit]})

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

    return app


def _basic_auth() -> tuple[str, str] | None:
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return None
    return auth.username, auth.password


def main(host: str = "127.0.0.1", port: int = 8443, today: date | None = None) -> None:
    """Run the simulator with werkzeug (threaded) and print the demo phones."""
    from werkzeug.serving import run_simple

    print(f"Fineract simulator on http://{host}:{port}{API}  (user mifos / password password, tenant default)")
    for phone, what in seed.DEMO_PHONES:
        print(f"  {phone:<16} {what}")
    run_simple(host, port, create_sim_app(today=today), threaded=True)


if __name__ == "__main__":
    main()
