"""Actions of the repay-from-savings dialog (flows/repay.yaml).

The dialog never moves money itself: :func:`request_repayment` records the
request (see :mod:`convo.transfers`) and the worker does the transfer after
the session, then texts the outcome.
"""
from __future__ import annotations

from decimal import Decimal

from convo.actions import Context, action
from convo.actions.mifos import _Unavailable, client_accounts, offer


@action("repay_sources", outcomes=("one", "many", "none", "unavailable"))
def repay_sources(ctx: Context) -> str:
    """Keep the chosen loan as ``loan`` and list the savings accounts it can be paid from.

    Sets ``loan`` (the chosen ``account``), ``sources`` (savings accounts)
    and, when there is exactly one, ``source``.

    ```yaml
    sources:
      do: repay_sources
      on: {one: figures, many: choose_source, none: no_savings, unavailable: mifos_down}
    ```
    """
    ctx.vars["loan"] = ctx.vars["account"]
    try:
        accounts = client_accounts(ctx)
    except _Unavailable:
        return "unavailable"
    loan_cur = ctx.vars["loan"]["currency"]["code"]
    return offer(ctx, [a for a in accounts if a["kind"] == "savings" and a["currency"]["code"] == loan_cur],
                 "sources", "source")


@action("repay_figures", outcomes=("ok", "nothing_due", "unavailable"))
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


@action("repay_check", outcomes=("ok", "over_savings", "over_loan"))
def repay_check(ctx: Context) -> str:
    """Check the ``amount`` the client typed: at most the savings available and the loan outstanding.

    ```yaml
    check:
      do: repay_check
      on: {ok: confirm, over_savings: amount_over_savings, over_loan: amount_over_loan}
    ```
    """
    amount = Decimal(ctx.vars["amount"])
    if amount > Decimal(ctx.vars["available"]):
        return "over_savings"
    if amount > Decimal(ctx.vars["due"]["outstanding"]):
        return "over_loan"
    return "ok"


@action("request_repayment", outcomes=("queued", "unavailable"))
def request_repayment(ctx: Context) -> str:
    """Record the repayment (``amount`` from ``source`` to ``loan``); the worker makes it and texts the result.

    The request's idempotency key comes from the dialog, so a repeated or
    duplicated request can never move money twice.

    ```yaml
    submit:
      do: request_repayment
      on: {queued: queued, unavailable: mifos_down}
    ```
    """
    from convo.transfers import request_transfer

    v = ctx.vars
    key = f"repay:{ctx.channel}:{ctx.session_id}:{v['loan']['id']}:{v['amount']}"
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
