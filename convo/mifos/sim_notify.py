"""Simulator additions for notifications: the loan list, staff, single transactions.

``install(app)`` registers the blueprint on a simulator app made by
:func:`convo.mifos.sim.create_sim_app` and extends its data set
(:func:`extend_seed`): staff with mobile numbers (loan officers, branch
managers); the loan list carries ``loanOfficerId`` (the client's staff member).

Endpoints (Fineract's shapes):

* ``GET /loans?offset=&limit=`` → ``{"totalFilteredRecords": n, "pageItems": [LoanAccountData...]}``
  (no schedule, no transactions: like Fineract's list)
* ``GET /groups?paged=true&offset=&limit=`` → ``{totalFilteredRecords, pageItems}`` (a bare list without ``paged``)
* ``GET /staff/{id}`` → StaffData (``mobileNo``, ``isLoanOfficer``, ``isActive``, office)
* ``GET /loans/{loanId}/transactions/{id}`` → LoanTransactionData
* ``GET /savingsaccounts/{id}/transactions/{id}`` → SavingsAccountTransactionData
"""
from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, request

from convo.mifos import seed
from convo.mifos.sim import API, to_json

__all__ = ["STAFF", "extend_seed", "install"]

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
    data = _data()
    offset = max(0, request.args.get("offset", 0, type=int))
    limit = request.args.get("limit", 200, type=int)
    rows = sorted(data["loans"].values(), key=lambda l: l["id"])
    if request.args.get("sortOrder", "ASC").upper() == "DESC":
        rows.reverse()
    page = rows[offset:] if limit <= 0 else rows[offset:offset + limit]
    return _reply({"totalFilteredRecords": len(rows),
                   "pageItems": [_with_officer(data, l) for l in page]})


@bp.get(API + "/groups")
def groups():
    data = _data()
    offset = max(0, request.args.get("offset", 0, type=int))
    limit = request.args.get("limit", 200, type=int)
    rows = [{k: v for k, v in g.items() if not k.startswith("_")}
            for g in sorted(data.get("groups", {}).values(), key=lambda g: g["id"])]
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


def install(app: Flask) -> Flask:
    """Register the notification endpoints on a simulator app and extend its data set."""
    extend_seed(app.config["SIM_DATA"])
    app.register_blueprint(bp)
    return app
