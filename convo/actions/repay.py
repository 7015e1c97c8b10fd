"""Actions of the repay-from-savings dialog (flows/repay.yaml).

The dialog asks the PIN before it shows any figure (``pin_required``), then
says exactly what will happen and moves nothing until the client picks
"1. Confirm". Even then it never moves money itself: :func:`request_repayment`
records the request (see :mod:`convo.jobs.transfers`) and the worker does the
transfer after the session, then texts the outcome.
"""
from __future__ import annotations

import secrets
from decimal import Decimal

from convo.actions import Context, action, on
from convo.actions.mifos import offer, slim_account

#: ``DepositAccountType.SAVINGS_DEPOSIT`` (apache/fineract
#: fineract-core/src/main/java/org/apache/fineract/portfolio/savings/DepositAccountType.java). The client's
#: accounts overview lists fixed (200) and recurring (300) deposits among ``savingsAccounts`` too, and
#: Fineract refuses to debit them; only plain savings pay a loan.
SAVINGS_DEPOSIT = 100

#: set on the hop's Context by repay_check: the confirmation screen made on this very hop
_SHOWN_NOW = "_repay_screen_made_now"

_ACCOUNT = {"id", "kind", "account_no", "product", "currency"}


@action("repay_sources", outcomes=("one", "many", "none", "unavailable"), needs=("account", "client"),
        provides={"loan": _ACCOUNT, "sources": on(("one", "many", "none"), [_ACCOUNT]),
                  "source": on("one", _ACCOUNT)})
def repay_sources(ctx: Context) -> str:
    """Keep the chosen loan as ``loan`` and list the savings accounts it can be paid from.

    Sets ``loan`` (the chosen ``account``), ``sources`` (active savings accounts,
    ``depositType`` 100, in the loan's currency, debits not blocked; never a
    fixed or recurring deposit) and, when there is exactly one, ``source``. Read fresh from Mifos X,
    never from a cache: money is about to move.

    ```yaml
    sources:
      do: repay_sources
      on: {one: figures, many: choose_source, none: no_savings, unavailable: mifos_down}
    ```
    """
    from convo.mifos.client import MifosError, accounts_from_overview
    from convo.mifos.notify_reads import client_savings_rows

    ctx.vars["loan"] = ctx.vars["account"]
    try:
        rows = client_savings_rows(ctx.services.mifos, int(ctx.vars["client"]["id"]))
    except MifosError:
        return "unavailable"
    savings = [a for a in rows
               if (a.get("depositType") or {}).get("id") == SAVINGS_DEPOSIT and not _debits_blocked(a)]
    loan_cur = ctx.vars["loan"]["currency"]["code"]
    accounts = [slim_account(a) for a in accounts_from_overview({"savingsAccounts": savings})]
    return offer(ctx, [a for a in accounts if a["currency"]["code"] == loan_cur], "sources", "source")


def _debits_blocked(overview_row: dict) -> bool:
    """``subStatus`` block or blockDebit: Fineract refuses every debit (``SavingsAccount.validateForAccountBlock``,
    ``validateForDebitBlock``, called first by ``SavingsAccountDomainServiceJpa.handleWithdrawal``)."""
    sub = overview_row.get("subStatus") or {}
    return bool(sub.get("block") or sub.get("blockDebit"))


@action("repay_figures", outcomes=("ok", "nothing_due", "unavailable"), needs=("loan", "source"),
        provides={"due": on(("ok", "nothing_due"), {"amount": "amount", "outstanding": "amount", "date": "date?",
                                                   "as_of": "time?"}),
                  "available": on(("ok", "nothing_due"), "amount")})
def repay_figures(ctx: Context) -> str:
    """Fresh figures for the repayment: ``due`` on the ``loan`` and ``available`` in the ``source``.

    Never from the last-good cache: money is about to move.

    ```yaml
    figures:
      do: repay_figures
      on: {ok: amount, nothing_due: paid_up, unavailable: mifos_down}
    ```
    """
    from convo.mifos.client import MifosError

    s = ctx.services
    try:
        d = s.mifos.loan_due(ctx.vars["loan"]["id"], ctx.today)
        b = s.mifos.savings_balance(ctx.vars["source"]["id"])
    except MifosError:
        return "unavailable"
    ctx.vars["due"] = {"amount": str(d.amount_due), "outstanding": str(d.outstanding),
                       "date": d.next_due_date.isoformat() if d.next_due_date else None, "as_of": None}
    ctx.vars["available"] = str(b.available_balance)
    return "ok" if d.outstanding > 0 else "nothing_due"


@action("repay_check", outcomes=("ok", "over_savings", "over_loan", "over_cap", "too_precise"),
        needs=("amount", "loan", "available", "due"),
        provides={"cap": on("over_cap", "amount"), "repay_ref": on("ok", "text")})
def repay_check(ctx: Context) -> str:
    """Check the ``amount`` the client typed before the confirmation screen.

    At most the savings ``available``, the loan's ``due.outstanding`` and the
    cap per repayment (``CONVO_REPAY_MAX_AMOUNT``, kept as ``cap``); no more
    decimals than the loan's currency has (``too_precise``: 500.50 XOF). On
    ``ok`` it sets ``repay_ref``, the request's reference for this confirmation.

    ```yaml
    check:
      do: repay_check
      on: {ok: confirm, over_savings: amount_over_savings, over_loan: amount_over_loan,
           over_cap: amount_over_cap, too_precise: amount_again}
    ```
    """
    amount = Decimal(ctx.vars["amount"])
    currency = ctx.vars["loan"]["currency"]
    places = currency.get("decimal_places")
    if places is not None and amount != amount.quantize(Decimal(1).scaleb(-int(places))):
        return "too_precise"
    if amount > Decimal(ctx.vars["available"]):
        return "over_savings"
    if amount > Decimal(ctx.vars["due"]["outstanding"]):
        return "over_loan"
    cap = ctx.services.settings.repay_cap(currency["code"])
    if cap is not None and amount > cap:
        ctx.vars["cap"] = str(cap)
        return "over_cap"
    ctx.vars["repay_ref"] = ref = secrets.token_hex(8)
    setattr(ctx, _SHOWN_NOW, ref)     # this hop made the screen: it cannot also be its answer
    return "ok"


@action("request_repayment", outcomes=("queued", "not_shown", "unavailable"),
        needs=("repay_ref", "loan", "amount", "client", "source"), provides={})
def request_repayment(ctx: Context) -> str:
    """Record the repayment (``amount`` from ``source`` to ``loan``); the worker makes it and texts the result.

    Reached only from the confirmation screen's "1. Confirm". The request's
    idempotency key comes from that screen (``repay_ref``), so a repeated or
    duplicated confirmation can never move money twice. ``not_shown``: the
    "1" came in the same USSD callback as the amount (a shortcut dial such as
    ``*384*12*7*2468*500*1#``), so the client never saw the screen; show it.

    ```yaml
    submit:
      do: request_repayment
      on: {queued: queued, not_shown: confirm, unavailable: mifos_down}
    ```
    """
    from convo.store.transfers import request_transfer

    v = ctx.vars
    if getattr(ctx, _SHOWN_NOW, None) == v["repay_ref"]:
        return "not_shown"
    # one reference per confirmation screen (set by repay_check): a repeated or retried "1. Confirm"
    # is the same request; the next repayment, even of the same amount in the same SMS thread, is not
    key = f"repay:{ctx.channel}:{v['repay_ref']}:{v['loan']['id']}:{v['amount']}"
    try:
        request_transfer(ctx.services.db, idempotency_key=key, phone=ctx.phone, lang=ctx.lang,
                         client_id=v["client"]["id"], office_id=v["client"].get("office_id"),
                         savings_id=v["source"]["id"], loan_id=v["loan"]["id"], amount=Decimal(v["amount"]),
                         currency=v["loan"]["currency"],
                         loan_label=f"{v['loan']['product']} *{v['loan']['account_no'][-4:]}")
    except Exception:  # noqa: BLE001 - the database is down: say so, move nothing
        import logging

        logging.getLogger(__name__).exception("could not record a repayment request")
        return "unavailable"
    return "queued"
