"""Actions that read the caller's accounts from Mifos X.

Every answer is cached (see :mod:`convo.cache`): the phone -> client mapping
for ``client_cache_ttl`` seconds, figures for ``figures_cache_ttl``. When
Mifos X cannot answer, an action returns ``unavailable`` and the flow decides
what to say.
"""
from __future__ import annotations

import logging
from decimal import Decimal

from convo.actions import Context, action
from convo.cache import MISSING
from convo.services import client_key

log = logging.getLogger(__name__)

_NOBODY = {"id": None}


def _slim_account(a) -> dict:
    c = a.currency
    return {"id": a.id, "kind": a.kind, "account_no": a.account_no, "product": a.product_name,
            "currency": {"code": c.code, "decimal_places": c.decimal_places, "in_multiples_of": c.in_multiples_of}}


@action("identify_caller", outcomes=("found", "unknown", "unavailable"))
def identify_caller(ctx: Context) -> str:
    """Find the caller in Mifos X by phone number (all the formats MFIs store).

    Sets ``client`` (``id``, ``name``, ``first_name``). Unknown numbers are remembered briefly too.

    ```yaml
    identify:
      do: identify_caller
      on: {found: menu, unknown: unknown_caller, unavailable: mifos_down}
    ```
    """
    from convo.mifos.client import MifosError

    if ctx.vars.get("client"):
        return "found"                              # already identified earlier in this dialog
    s = ctx.services
    key = client_key(ctx.phone)
    hit = s.cache.get(key, ctx.prefetched.get(key, MISSING))
    if hit is None:
        try:
            ref = s.mifos.find_client_by_phone(ctx.phone)
        except MifosError as e:
            log.warning("client lookup failed: %s", type(e).__name__)
            return "unavailable"
        hit = ({"id": ref.id, "name": ref.display_name, "first_name": ref.display_name.split()[0]}
               if ref else _NOBODY)
        s.cache.put(key, hit, s.settings.client_cache_ttl if ref else 60)
    if hit.get("id") is None:
        return "unknown"
    ctx.vars["client"] = hit
    return "found"


@action("load_accounts", outcomes=("none", "one", "many", "unavailable"))
def load_accounts(ctx: Context, kind: str) -> str:
    """List the caller's active accounts of one kind (``savings`` or ``loan``).

    Sets ``accounts`` (each: ``id``, ``account_no``, ``product``, ``currency``)
    and, when there is exactly one, ``account``.

    ```yaml
    savings:
      do: load_accounts
      with: {kind: savings}
      on: {none: no_savings, one: show_balance, many: pick_savings, unavailable: mifos_down}
    ```
    """
    from convo.mifos.client import MifosError

    s = ctx.services
    cid = ctx.vars["client"]["id"]
    key = f"convo:accounts:{cid}"
    accounts = s.cache.get(key)
    if accounts is None:
        try:
            accounts = [_slim_account(a) for a in s.mifos.client_accounts(cid)]
        except MifosError as e:
            log.warning("accounts lookup failed: %s", type(e).__name__)
            return "unavailable"
        s.cache.put(key, accounts, s.settings.client_cache_ttl)
    mine = [a for a in accounts if a["kind"] == kind]
    ctx.vars["accounts"] = mine
    if not mine:
        return "none"
    if len(mine) == 1:
        ctx.vars["account"] = mine[0]
        return "one"
    return "many"


@action("savings_balance", outcomes=("ok", "unavailable"))
def savings_balance(ctx: Context) -> str:
    """Fetch the balance of the chosen savings ``account``.

    Sets ``balance`` (``total``, ``available``).

    ```yaml
    show_balance:
      do: savings_balance
      on: {ok: balance_text, unavailable: mifos_down}
    ```
    """
    from convo.mifos.client import MifosError

    s = ctx.services
    acc = ctx.vars["account"]
    key = f"convo:savings:{acc['id']}"
    bal = s.cache.get(key)
    if bal is None:
        try:
            b = s.mifos.savings_balance(acc["id"])
        except MifosError as e:
            log.warning("savings lookup failed: %s", type(e).__name__)
            return "unavailable"
        bal = {"total": str(b.account_balance), "available": str(b.available_balance)}
        s.cache.put(key, bal, s.settings.figures_cache_ttl)
    ctx.vars["balance"] = bal
    return "ok"


@action("loan_due", outcomes=("due", "paid_up", "unavailable"))
def loan_due(ctx: Context) -> str:
    """Fetch what is due on the chosen loan ``account``: overdue plus the next installment.

    Sets ``due`` (``amount``, ``overdue``, ``date`` (ISO or null), ``outstanding``).

    ```yaml
    show_due:
      do: loan_due
      on: {due: due_text, paid_up: nothing_due, unavailable: mifos_down}
    ```
    """
    from convo.mifos.client import MifosError

    s = ctx.services
    acc = ctx.vars["account"]
    key = f"convo:loan:{acc['id']}:{ctx.today.isoformat()}"
    due = s.cache.get(key)
    if due is None:
        try:
            d = s.mifos.loan_due(acc["id"], ctx.today)
        except MifosError as e:
            log.warning("loan lookup failed: %s", type(e).__name__)
            return "unavailable"
        due = {"amount": str(d.amount_due), "overdue": str(d.overdue), "outstanding": str(d.outstanding),
               "date": d.next_due_date.isoformat() if d.next_due_date else None}
        s.cache.put(key, due, s.settings.figures_cache_ttl)
    ctx.vars["due"] = due
    return "due" if Decimal(due["amount"]) > 0 else "paid_up"
