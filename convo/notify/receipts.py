"""Receipts from Fineract webhook hooks (``POST /hooks/fineract/<token>/``).

What Fineract sends (``WebHookProcessor`` / ``WebHookService``, hook template
"Web", content type json): a POST to the hook's Payload URL with headers
``X-Fineract-Entity`` (``LOAN``, ``SAVINGSACCOUNT``...), ``X-Fineract-Action``
(``REPAYMENT``, ``DEPOSIT``, ``WITHDRAWAL``, ``DISBURSE``...),
``Fineract-Platform-TenantId`` and ``X-Fineract-Endpoint``, and a JSON body.
Fineract 1.9+ (``SynchronousCommandProcessingService.publishHookEvent``)::

    {"entityName": "LOAN", "actionName": "REPAYMENT", "createdBy": 1, "createdByName": "mifos",
     "createdByFullName": "App Administrator", "request": {...the command's JSON...},
     "officeId": 1, "clientId": 1,
     "response": {"officeId": null, "clientId": 1, "loanId": 29, "resourceId": 2915, "changes": {...}},
     "timestamp": "2024-05-01T09:30:00Z"}

and, for a command that failed, ``"status": "Exception"`` with the error as
``response``. Older Fineract posts the bare ``CommandProcessingResult``
(``{"officeId":1,"clientId":1,"loanId":29,"resourceId":2915,"changes":{...}}``).
Both are read. The hook is published when the command has returned, i.e.
after its transaction; a failed command is ignored here, and the receipt is
built from the transaction *as read back from Mifos X* (``GET
/loans/{id}/transactions/{tx}``, ``GET /savingsaccounts/{id}/transactions/{tx}``):
a transaction Mifos X does not have (rolled back) or that is reversed sends nothing.

Handled: LOAN REPAYMENT, LOAN DISBURSE, SAVINGSACCOUNT DEPOSIT,
SAVINGSACCOUNT WITHDRAWAL (each also raises the matching alert event).
Everything else is answered 200 and ignored.

Who gets the receipt: the client who owns the loan or savings account *as read
from Mifos X* (``clientId`` of ``GET /loans/{id}`` or ``GET /savingsaccounts/{id}``),
never the ``clientId`` the hook body names: a forged or mistaken body cannot
send someone's figures to another client. Hooks of another tenant are refused
by the route (:mod:`convo.web.notify_api`).

Idempotency: the hook row's key is ``<tenant>:<entity>:<action>:<account>:<resource>``
(unique), the receipt's outbox key ``receipt:<tenant>:<entity>:<transaction>``:
a replayed hook (or two hooks configured for one event, or a replay naming
another account) sends one receipt per transaction.
When Mifos X cannot be asked the row stays ``pending`` and the worker retries
it (Fineract itself never re-sends a hook): at its next pass, then with backoff
(1 min doubling to 1 h; :func:`retry_pending_hooks`). The row is leased while a
receipt is built (:mod:`convo.store.lease`): the web request and workers never
build one hook's receipt at once, and a taken-over row is not finished by its
old owner.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from convo.mifos.client import MifosNotFound, MifosUnavailable, parse_date, to_decimal
from convo.notify import messages as notify
from convo.store import lease
from convo.store.db import utcnow

log = logging.getLogger("convo.notify.receipts")

__all__ = ["HANDLED", "HookResult", "hook_key", "process", "receive", "retry_pending_hooks"]

#: a receipt being built holds its hook this long (then another process may take it over)
HOOK_LEASE = dt.timedelta(minutes=5)
#: retries of a pending hook: the first at the worker's next pass, then backoff from 1 min doubling to 1 h
RETRY_BASE_SECONDS, RETRY_MAX_SECONDS, MAX_ATTEMPTS = 60.0, 3600.0, 50

#: (entity, action) → (receipt text, alert event)
HANDLED = {
    ("LOAN", "REPAYMENT"): ("notify.receipt.loan_repayment", "loan_repayment"),
    ("LOAN", "DISBURSE"): ("notify.receipt.loan_disbursal", "loan_disbursed"),
    ("SAVINGSACCOUNT", "DEPOSIT"): ("notify.receipt.savings_deposit", "savings_deposit"),
    ("SAVINGSACCOUNT", "WITHDRAWAL"): ("notify.receipt.savings_withdrawal", "savings_withdrawal"),
}


class HookResult(dict):
    """JSON answer: ``status`` (received, done, ignored, pending, duplicate) and ``detail``."""

    @property
    def http_status(self) -> int:
        return 202 if self.get("status") == "pending" else 200


def _ids(body: dict) -> dict:
    response = body.get("response")
    resp = response if isinstance(response, dict) else body
    out = {}
    for k in ("loanId", "savingsId", "resourceId", "clientId", "officeId", "subResourceId", "transactionId"):
        v = resp.get(k)
        if v is None:
            v = body.get(k)
        if v is not None:
            try:
                out[k] = int(v)
            except (TypeError, ValueError):
                pass
    return out


def hook_key(tenant: str, entity: str, action: str, body: dict) -> str:
    ids = _ids(body)
    account = ids.get("loanId") or ids.get("savingsId") or ""
    resource = ids.get("transactionId") or ids.get("resourceId") or ""
    return f"{tenant}:{entity}:{action}:{account}:{resource}"[:200]


def receive(services, *, entity: str, action: str, tenant: str, body: dict) -> HookResult:
    """Record one hook call (once per key) and process it now."""
    from convo.store.notify_models import FineractHook

    entity, action = (entity or "").upper(), (action or "").upper()
    if (entity, action) not in HANDLED:
        return HookResult(status="ignored", detail=f"{entity} {action} is not a receipt")
    if str(body.get("status", "")).lower() == "exception":
        return HookResult(status="ignored", detail="the command failed in Mifos X: no receipt")
    ids = _ids(body)
    if not (ids.get("loanId") or ids.get("savingsId") or (entity == "LOAN" and ids.get("resourceId"))):
        return HookResult(status="ignored", detail="no loanId/savingsId in the hook body")
    key = hook_key(tenant, entity, action, body)
    now = utcnow()
    t = FineractHook.__table__
    with Session(services.db) as s:
        ins = notify.insert_for(s)
        s.execute(ins(t).values(key=key, entity=entity, action=action, tenant=tenant, body=body, status="received",
                                attempts=0, received_at=now, updated_at=now, next_attempt_at=now)
                  .on_conflict_do_nothing(index_elements=["key"]))
        row = s.execute(sa.select(t).where(t.c.key == key)).one()
        s.commit()
    if row.status in ("done", "ignored"):
        return HookResult(status="duplicate", detail=f"already {row.status}", key=key)
    return process(services, row.id)


def _hook_lease(due: str | None = "next_attempt_at"):
    from convo.store.notify_models import FineractHook

    hooks = cast(sa.Table, FineractHook.__table__)  # typed FromClause; it is a Table
    return lease.LeaseTable(hooks, ready=("received", "pending"), leased="processing", due=due)


def _token() -> str:
    return lease.new_token(f"hook:{socket.gethostname()}:{os.getpid()}")


def _claim(services, *, hook_id: int | None = None, limit: int = 1) -> Sequence[sa.Row[Any]]:
    """Lease hooks to build their receipt: the one ``hook_id`` (the web request), or up to ``limit`` due
    ``pending`` ones (the worker's retries)."""
    lt = _hook_lease(None if hook_id is not None else "next_attempt_at")  # a replayed hook: try it now
    t = lt.table
    now = utcnow()
    where = t.c.id == hook_id if hook_id is not None else sa.and_(t.c.status != "received",
                                                                  t.c.attempts < MAX_ATTEMPTS)
    with services.db.begin() as c:
        return lease.claim(c, lt, token=_token(), now=now, lease=HOOK_LEASE, limit=limit, where=where,
                           values={"updated_at": now})


def _finish(services, row, status: str, detail: str | None = None, outbox_id: int | None = None) -> None:
    now = utcnow()
    values = dict(status=status, detail=detail, outbox_id=outbox_id, updated_at=now)
    if status == "pending":  # the first retry at the worker's next pass, then backoff
        values["next_attempt_at"] = now if row.attempts <= 1 else lease.retry_at(
            now, row.attempts - 1, RETRY_BASE_SECONDS, RETRY_MAX_SECONDS)
    with services.db.begin() as c:
        if not lease.finish(c, _hook_lease(), [row.id], row.leased_by, values):
            log.warning("hook %s: lease lost before recording %s (another process took it over)", row.key, status)


def process(services, hook_id: int) -> HookResult:
    """Build and enqueue the receipt of a recorded hook; raise the alert event."""
    rows = _claim(services, hook_id=hook_id)
    if not rows:
        return HookResult(status="duplicate", detail="already handled")
    return _process(services, rows[0])


def _process(services, row) -> HookResult:
    try:
        result = _receipt(services, row)
    except MifosNotFound as e:
        _finish(services, row, "ignored", f"not in Mifos X (rolled back?): {e}")
        return HookResult(status="ignored", detail="transaction not found in Mifos X", key=row.key)
    except MifosUnavailable as e:
        _finish(services, row, "pending", f"Mifos X unavailable: {e}")
        return HookResult(status="pending", detail="Mifos X unavailable; will retry", key=row.key)
    except Exception as e:  # noqa: BLE001 - never a 500 to Fineract, never a lost hook
        log.exception("hook %s failed", row.key)
        _finish(services, row, "pending", f"error: {e}")
        return HookResult(status="pending", detail="error; will retry", key=row.key)
    _finish(services, row, result["status"], result.get("detail"), result.get("outbox_id"))
    result["key"] = row.key
    return result


def _receipt(services, row) -> HookResult:
    from convo.mifos import notify_reads as reads
    from convo.notify.recipients import NoRecipient, client_phone

    body = row.body or {}
    ids = _ids(body)
    entity, action = row.entity, row.action
    template, event = HANDLED[(entity, action)]
    mifos = services.mifos
    if entity == "LOAN":
        loan_id = ids.get("loanId") or ids.get("resourceId")
        if loan_id is None:                              # a LOAN hook naming only a savings account
            return HookResult(status="ignored", detail="no loanId in the hook body")
        loan = reads.loan(mifos, int(loan_id), transactions=action == "DISBURSE")
        currency = reads.loan_currency(loan)
        account_no = str(loan.get("accountNo", loan_id))
        client_id = loan.get("clientId")                 # the loan's owner in Mifos X, not the hook's word
        if action == "DISBURSE":
            txs = [t for t in loan.get("transactions") or []
                   if (t.get("type") or {}).get("disbursement") and not t.get("manuallyReversed")]
            if not txs:
                return HookResult(status="ignored", detail="no disbursement on the loan (undone?)")
            tx = max(txs, key=lambda t: (parse_date(t.get("date")), t["id"]))
            balance = to_decimal((loan.get("summary") or {}).get("totalOutstanding"),
                                 default=to_decimal(tx.get("outstandingLoanBalance")))
            tx_id = tx["id"]
        else:
            tx_id = ids.get("resourceId") or ids.get("transactionId")
            if tx_id is None:
                return HookResult(status="ignored", detail="no transaction id in the hook body")
            tx = reads.loan_transaction(mifos, loan_id, tx_id)
            if tx.get("manuallyReversed") or tx.get("reversed"):
                return HookResult(status="ignored", detail="the transaction was reversed")
            if not _is_kind(tx.get("type"), "repayment"):
                return HookResult(status="ignored", detail=f"transaction {tx_id} is not a repayment")
            balance = to_decimal(tx.get("outstandingLoanBalance"))
        account_key, office_id = f"loan{loan_id}", loan.get("clientOfficeId")
        officer = loan.get("loanOfficerId")
        extra = {"loan_id": loan_id}
    else:
        sid = ids.get("savingsId")
        tx_id = ids.get("resourceId") or ids.get("transactionId")
        if sid is None:                                  # a SAVINGSACCOUNT hook naming only a loan
            return HookResult(status="ignored", detail="no savingsId in the hook body")
        if tx_id is None:
            return HookResult(status="ignored", detail="no transaction id in the hook body")
        tx = reads.savings_transaction(mifos, sid, tx_id)
        if tx.get("reversed"):
            return HookResult(status="ignored", detail="the transaction was reversed")
        if not _is_kind(tx.get("transactionType"), action.lower()):
            return HookResult(status="ignored", detail=f"transaction {tx_id} is not a {action.lower()}")
        acc = reads.savings_account(mifos, sid)          # its clientId: the owner, not the hook's word
        from convo.mifos.client import Currency

        # as reads.loan_currency: no currency anywhere is a receipt without a code, not a retry forever
        currency = Currency.from_fineract(tx.get("currency") or (acc or {}).get("currency")
                                          or {"code": "", "decimalPlaces": 2})
        account_no = str(tx.get("accountNo") or (acc or {}).get("accountNo") or sid)
        balance = to_decimal(tx["runningBalance"]) if tx.get("runningBalance") is not None else \
            to_decimal(((acc or {}).get("summary") or {}).get("accountBalance"))
        client_id = acc.get("clientId")
        account_key, office_id, officer = f"savings{sid}", None, None
        extra = {"savings_id": sid}
    if client_id is None:
        return HookResult(status="ignored", detail="the account has no client in Mifos X (a group account?)")
    if ids.get("clientId") is not None and ids["clientId"] != int(client_id):
        log.warning("hook %s names client %s but %s belongs to client %s: the receipt goes to the owner",
                    row.key, ids["clientId"], account_key, client_id)
    payment = tx.get("paymentDetailData") or {}
    reference = payment.get("receiptNumber") or payment.get("transactionNumber") or str(tx_id)
    amount = to_decimal(tx.get("amount"))
    cur = {"code": currency.code, "decimal_places": currency.decimal_places}
    contact = reads.client_contact(mifos, client_id)
    office_id = office_id or contact.office_id
    facts = {"client_id": client_id, "client_name": contact.display_name, "office_id": office_id,
             "loan_officer_id": officer or contact.staff_id, "amount": amount, "currency": cur,
             "account_no": account_no, "balance": balance, "reference": reference,
             "date": parse_date(tx.get("date")), **extra}
    notify.alert(services, event, key=f"{row.tenant}:{entity}:{tx_id}", **facts)

    cfg = notify.config_for(services)
    if not cfg.receipts or not getattr(services.settings, "receipts_enabled", True):
        return HookResult(status="ignored", detail="receipts are turned off")
    office = cfg.office(office_id)
    try:
        e164, region = client_phone(services, client_id, contact.mobile_no, office_id)
    except NoRecipient as e:
        log.warning("hook %s: no receipt: client %s has no mobile number usable in their country", row.key, client_id)
        return HookResult(status="ignored", detail=str(e))
    variables = {"first_name": contact.first_name, "name": contact.display_name, "amount": amount,
                 "currency": cur, "account_no": account_no, "balance": balance, "reference": reference,
                 "date": facts["date"] or utcnow().date()}
    msg = notify.send_to_client(
        services, client_id=client_id, phone=e164, key=template, variables=variables, kind="receipt",
        idempotency_key=f"receipt:{row.tenant}:{entity}:{tx_id}", sent_by="fineract-hook",
        lang=notify.client_language(services, e164, office.language), region=region,
        requested_by_client=True)  # a receipt for the client's own transaction: sent even after STOP
    return HookResult(status="done", detail=f"receipt {msg.status}", outbox_id=msg.id)


def _is_kind(kind: dict | None, flag: str) -> bool:
    """The transaction is what the hook says (``LoanTransactionEnumData`` / ``SavingsAccountTransactionEnumData``
    booleans): a hook naming another kind of transaction (forged, or mistaken) sends no receipt."""
    return not isinstance(kind, dict) or flag not in kind or kind.get(flag) is True


def retry_pending_hooks(services, limit: int = 50) -> int:
    """Process hooks left ``pending`` (Mifos X was unavailable) that are due. Returns how many were tried."""
    rows = _claim(services, limit=limit)
    for row in rows:
        _process(services, row)
    return len(rows)
