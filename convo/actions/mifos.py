"""Actions that read the caller's accounts from Mifos X.

Every answer is cached (see :mod:`convo.mifos.cache`): the phone -> client mapping
for ``client_cache_ttl`` seconds, figures for ``figures_cache_ttl``. Each
good answer is also kept for ``last_good_ttl`` so that when Mifos X is slow or
down the dialog can still answer with the last known figures, marked
``as_of`` (a display time); only when there are none does an action return
``unavailable`` and the flow says "try again later".
"""
from __future__ import annotations

import logging
from datetime import datetime
from decimal import Decimal
from typing import Any, Callable
from zoneinfo import ZoneInfo

from convo.actions import Context, action, on
from convo.mifos import keys
from convo.mifos.notify_reads import loan_with_schedule
from convo.notify.recipients import office_regions

log = logging.getLogger(__name__)

#: seconds an unknown number is remembered (a client registered meanwhile gets in that soon)
UNKNOWN_CALLER_TTL = 60


class _Unavailable(Exception):
    pass


def _as_of(ctx: Context, stamp: str) -> str:
    """'27 Nov 2026 14:05' in the MFI's time zone and the conversation's language."""
    from convo.text.formats import format_date

    when = datetime.fromisoformat(stamp).astimezone(ZoneInfo(ctx.services.settings.timezone))
    return f"{format_date(when.date(), 'medium', ctx.lang)} {when:%H:%M}"


def _fetch(ctx: Context, key: str, load: Callable[[], Any], ttl: int | Callable[[Any], int]) -> Any:
    """Cached answer, else a fresh one from Mifos X, else the last good one (with ``as_of``).

    ``ttl`` may depend on the answer (a function of it)."""
    from convo.mifos.client import MifosError

    s = ctx.services
    hit = s.cache.get(key)
    if hit is not None:
        return {**hit, "as_of": None} if isinstance(hit, dict) else hit
    try:
        value = load()
    except MifosError as e:
        log.warning("Mifos X lookup %s failed: %s", key.split(":")[1], type(e).__name__)
        last = s.cache.last_good(key)
        if last is None:
            raise _Unavailable from None
        value, stamp = last
        if isinstance(value, dict):
            value = {**value, "as_of": _as_of(ctx, stamp)}
        return value
    s.cache.remember(key, value, ttl(value) if callable(ttl) else ttl, s.settings.last_good_ttl, ctx.now.isoformat())
    return {**value, "as_of": None} if isinstance(value, dict) else value


def slim_account(a) -> dict:
    c = a.currency
    return {"id": a.id, "kind": a.kind, "account_no": a.account_no, "product": a.product_name,
            "currency": {"code": c.code, "decimal_places": c.decimal_places, "in_multiples_of": c.in_multiples_of}}


def _choice_labels(clients: list[dict]) -> None:
    """``label`` of each client on the "choose your name" menu: the first name, or as many of
    the names as it takes to tell two apart (families share last names, rarely first and middle
    names). Names only: never an id or a figure."""
    words = [c["name"].split() or [c["first_name"]] for c in clients]
    for n in range(1, max(len(w) for w in words) + 1):
        labels = [" ".join(w[:n]) for w in words]
        if len(set(labels)) == len(labels):
            break
    for c, label in zip(clients, labels):
        c["label"] = label


_CLIENT = {"id", "name", "first_name", "office_id"}
_OFFERED = [{"id": "int", "name": "name", "first_name": "word", "office_id": "int", "label": "name"}]


@action("identify_caller", outcomes=("found", "many", "unknown", "unavailable"),
        provides={"client": on("found", _CLIENT), "clients": on("many", _OFFERED)})
def identify_caller(ctx: Context) -> str:
    """Find the caller in Mifos X by phone number (all the formats MFIs store).

    A client counts only when the number stored in Mifos X, read in the
    client's own country (see :func:`convo.notify.recipients.office_regions`), is the caller's E.164
    number. Active clients win over pending ones. One client: sets ``client``
    (``id``, ``name``, ``first_name``, ``office_id``), outcome ``found``.
    Several (a family's shared phone): sets ``clients`` (each also with a
    ``label``: the first name, more names where two are the same) for the
    caller to choose from, outcome ``many``; nobody is picked for them.
    Unknown numbers are remembered for a minute, clients for
    ``client_cache_ttl``.

    ```yaml
    lookup:
      do: identify_caller
      on: {found: found, many: choose, unknown: unknown_caller, unavailable: mifos_down}
    ```
    """
    if ctx.vars.get("client"):
        return "found"                              # already identified earlier in this dialog
    s = ctx.services

    def load() -> dict:
        refs = s.mifos.clients_by_phone(ctx.phone, office_regions(s))
        live = [r for r in refs if r.active] or refs
        return {"clients": [{"id": r.id, "name": r.display_name, "first_name": (r.display_name.split() or [""])[0],
                             "office_id": r.office_id} for r in live]}

    key = keys.client(ctx.phone)
    ttl = s.settings.client_cache_ttl
    ttl_of = lambda v: ttl if v["clients"] else min(ttl, UNKNOWN_CALLER_TTL)  # noqa: E731 - a newcomer gets in soon
    try:
        hit = _fetch(ctx, key, load, ttl_of)
        if "clients" not in hit:                    # cached by an earlier release: one client, read in the
            s.cache.drop(key)                       # caller's country; never trusted
            hit = _fetch(ctx, key, load, ttl_of)
    except _Unavailable:
        return "unavailable"
    if "clients" not in hit:
        return "unavailable"
    clients = [dict(c) for c in hit["clients"]]
    if not clients:
        return "unknown"
    if len(clients) == 1:
        ctx.vars["client"] = clients[0]
        return "found"
    _choice_labels(clients)
    ctx.vars["clients"] = clients
    return "many"


@action("take_client", outcomes=("ok", "refused"), needs=("picked", "clients"),
        provides={"client": on("ok", _CLIENT)})
def take_client(ctx: Context) -> str:
    """The caller chose ``picked`` from ``clients`` (the "who is calling" menu): it becomes ``client``.

    Refuses anything that is not one of the offered clients; the offer is
    dropped either way, so ``client`` is all the rest of the dialog sees.

    ```yaml
    chosen:
      do: take_client
      on: {ok: found, refused: unknown_caller}
    ```
    """
    picked = ctx.vars.pop("picked", None)
    offered = {c["id"]: c for c in ctx.vars.pop("clients", None) or []}
    if not isinstance(picked, dict) or picked.get("id") not in offered:
        return "refused"
    ctx.vars["client"] = {k: v for k, v in offered[picked["id"]].items() if k != "label"}
    return "ok"


def client_accounts(ctx: Context) -> list[dict]:
    """The identified client's active accounts (cached; raises _Unavailable)."""
    s = ctx.services
    cid = ctx.vars["client"]["id"]
    return _fetch(ctx, keys.accounts(cid), lambda: [slim_account(a) for a in s.mifos.client_accounts(cid)],
                  s.settings.client_cache_ttl)


_ACCOUNT = {"id", "kind", "account_no", "product", "currency"}


@action("load_accounts", outcomes=("none", "one", "many", "unavailable"), needs=("client",),
        provides={"accounts": on(("none", "one", "many"), [_ACCOUNT]), "account": on("one", _ACCOUNT)})
def load_accounts(ctx: Context, kind: str) -> str:
    """List the caller's active accounts of one kind (``savings``, ``loan``, or ``any``).

    Sets ``accounts`` (each: ``id``, ``account_no``, ``product``, ``currency``)
    and, when there is exactly one, ``account``.

    ```yaml
    savings:
      do: load_accounts
      with: {kind: savings}
      on: {none: no_savings, one: show_balance, many: pick_savings, unavailable: mifos_down}
    ```
    """
    try:
        accounts = client_accounts(ctx)
    except _Unavailable:
        return "unavailable"
    return offer(ctx, [a for a in accounts if kind == "any" or a["kind"] == kind], "accounts", "account")


def offer(ctx: Context, items: list, list_var: str, one_var: str) -> str:
    """Keep ``items`` as ``list_var`` (and the only one as ``one_var``): outcome none, one or many."""
    ctx.vars[list_var] = items
    if not items:
        return "none"
    if len(items) == 1:
        ctx.vars[one_var] = items[0]
        return "one"
    return "many"


@action("savings_balance", outcomes=("ok", "unavailable"), needs=("account",),
        provides={"balance": on("ok", {"total", "available", "as_of"})})
def savings_balance(ctx: Context) -> str:
    """Fetch the balance of the chosen savings ``account``.

    Sets ``balance`` (``total``, ``available``, and ``as_of`` when Mifos X
    could not answer and these are the last known figures).

    ```yaml
    show_balance:
      do: savings_balance
      on: {ok: balance_text, unavailable: mifos_down}
    ```
    """
    s = ctx.services
    acc = ctx.vars["account"]

    def load() -> dict:
        b = s.mifos.savings_balance(acc["id"])
        return {"total": str(b.account_balance), "available": str(b.available_balance)}

    try:
        ctx.vars["balance"] = _fetch(ctx, keys.savings(acc["id"]), load, s.settings.figures_cache_ttl)
    except _Unavailable:
        return "unavailable"
    return "ok"


def local_today(ctx: Context):
    """Today in the MFI's time zone (``CONVO_TIMEZONE``), not the server's: "due today" means the client's day."""
    return ctx.now.astimezone(ZoneInfo(ctx.services.settings.timezone)).date()


def _overdue_since(body: dict, today) -> Any:
    """Due date of the oldest installment still unpaid before ``today`` (None when nothing is overdue)."""
    from convo.mifos.client import parse_date, period_outstanding

    for p in (body.get("repaymentSchedule") or {}).get("periods") or []:
        if p.get("period") is None or p.get("complete") is True or period_outstanding(p) <= 0:
            continue
        due = parse_date(p.get("dueDate"))
        if due is not None and due < today:
            return due
    return None


_DUE = {"amount": "amount", "overdue": "amount", "overdue_since": "date?", "overdue_days": "int",
        "next_amount": "amount", "date": "date?", "today": "date", "outstanding": "amount", "as_of": "time?"}


@action("loan_due", outcomes=("due", "paid_up", "unavailable"), needs=("account",),
        provides={"due": on(("due", "paid_up"), _DUE)})
def loan_due(ctx: Context) -> str:
    """Fetch what is due on the chosen loan ``account``: what is overdue, the next installment, the total.

    Sets ``due``: ``overdue`` (unpaid on installments due before today, 0 when
    none), ``overdue_since`` (the oldest such due date, ISO, or null) and
    ``overdue_days``; ``next_amount`` and ``date`` (the next installment due
    today or later, ISO or null); ``amount`` (overdue plus next installment);
    ``outstanding`` (all still owed); ``today`` (the MFI's date, for
    ``{{ due.date | day(due.today) }}``: today, tomorrow, on 18 Dec 2026); and
    ``as_of`` for last known figures.

    ```yaml
    show_due:
      do: loan_due
      on: {due: due_text, paid_up: nothing_due, unavailable: mifos_down}
    ```
    """
    from convo.mifos.client import loan_due_from_loan

    s = ctx.services
    acc = ctx.vars["account"]
    today = local_today(ctx)

    def load() -> dict:
        body = loan_with_schedule(s.mifos, int(acc["id"]))
        d = loan_due_from_loan(body, today)
        since = _overdue_since(body, today) if d.overdue > 0 else None
        return {"amount": str(d.amount_due), "overdue": str(d.overdue), "outstanding": str(d.outstanding),
                "next_amount": str(d.next_installment),
                "overdue_since": since.isoformat() if since else None,
                "overdue_days": (today - since).days if since else 0,
                "date": d.next_due_date.isoformat() if d.next_due_date else None}

    try:
        due = _fetch(ctx, keys.loan_due(acc["id"], today), load, s.settings.figures_cache_ttl)
    except _Unavailable:
        return "unavailable"
    due = {**due, "today": today.isoformat()}
    due.setdefault("next_amount", due["amount"])              # figures cached by an earlier release
    due.setdefault("overdue_since", None)
    due.setdefault("overdue_days", 0)
    ctx.vars["due"] = due
    return "due" if Decimal(due["amount"]) > 0 else "paid_up"


_KINDS = {"deposit": "deposit", "withdrawal": "withdrawal", "interest posting": "interest",
          "repayment": "repayment", "disbursement": "disbursement", "pay charge": "fee",
          "annual fee": "fee", "withdrawal fee": "fee", "waive charges": "fee",
          "transfer": "transfer", "approve transfer": "transfer", "withdraw transfer": "transfer",
          "initiate transfer": "transfer"}


def _kind_code(value: str) -> str:
    v = value.strip().lower()
    if v in _KINDS:
        return _KINDS[v]
    return next((code for word, code in _KINDS.items() if word in v), "other")


_ROW = {"date": "date", "kind": "word", "label": "word", "amount": "amount", "credit": "bool", "sign": "code",
        "balance": "amount?"}


@action("mini_statement", outcomes=("ok", "empty", "unavailable"), needs=("account",),
        provides={"transactions": [_ROW], "closing_balance": "amount?", "statement_as_of": "time?"})
def mini_statement(ctx: Context, limit: int = 5) -> str:
    """The last transactions of the chosen ``account`` (savings or loan), newest first.

    Sets ``transactions`` (each: ``date``, ``kind`` (a code: deposit,
    withdrawal, interest, fee, payment (a loan repayment), disbursement,
    transfer, other), ``label`` (the text ``mini.kind.<code>`` in the
    conversation's language), ``amount``, ``credit`` (money in for the client),
    ``sign`` (``+``/``-`` on savings; empty on a loan, where a payment lowers
    what is owed), ``balance``) and ``closing_balance`` (the balance after the
    newest row: the savings balance, or what is still owed on a loan; null
    when Mifos X gives none). Reversed entries and loan accruals are never listed.

    ```yaml
    fetch:
      do: mini_statement
      with: {limit: 5}
      on: {ok: show, empty: nothing_yet, unavailable: mifos_down}
    ```
    """
    s = ctx.services
    acc = ctx.vars["account"]
    limit = max(1, min(int(limit), keys.STATEMENT_LIMITS[-1]))   # a repayment drops each of these lengths
    loan = acc["kind"] != "savings"

    def load() -> dict:
        get = s.mifos.loan_transactions if loan else s.mifos.savings_transactions
        rows = get(acc["id"], limit=limit)
        return {"rows": [{"date": t.date.isoformat(), "kind": _kind_code(t.kind), "amount": str(t.amount),
                          "credit": t.credit,
                          "balance": None if t.running_balance is None else str(t.running_balance)}
                         for t in rows]}

    try:
        got = _fetch(ctx, keys.statement(acc["kind"], acc["id"], limit), load, s.settings.figures_cache_ttl)
    except _Unavailable:
        return "unavailable"
    locales = s.flows.current.locales
    rows = []
    for r in got["rows"]:
        kind = "payment" if loan and r["kind"] == "repayment" else r["kind"]
        key = f"mini.kind.{kind}"
        label = locales.source(ctx.lang, key) if locales.has(ctx.lang, key) else kind
        rows.append({**r, "kind": kind, "label": label, "sign": "" if loan else ("+" if r["credit"] else "-")})
    ctx.vars["transactions"] = rows
    ctx.vars["closing_balance"] = rows[0]["balance"] if rows else None
    ctx.vars["statement_as_of"] = got.get("as_of")
    return "ok" if rows else "empty"


@action("next_meeting", outcomes=("found", "none", "unavailable"), needs=("client",),
        provides={"meeting": on("found", {"date", "group", "center", "location", "kind"})})
def next_meeting(ctx: Context) -> str:
    """The caller's next group or center meeting.

    Sets ``meeting`` (``date`` ISO, ``group``, ``center`` or null,
    ``location`` or null, ``kind`` group/center).

    ```yaml
    fetch:
      do: next_meeting
      on: {found: show, none: no_group, unavailable: mifos_down}
    ```
    """
    s = ctx.services
    cid = ctx.vars["client"]["id"]

    def load() -> dict:
        m = s.mifos.next_meeting(cid, ctx.today)
        if m is None:
            return {"date": None}
        return {"date": m.date.isoformat(), "group": m.group_name, "center": m.center_name,
                "location": m.location, "kind": m.kind}

    try:
        got = _fetch(ctx, keys.meeting(cid, ctx.today), load, s.settings.client_cache_ttl)
    except _Unavailable:
        return "unavailable"
    if not got.get("date"):
        return "none"
    ctx.vars["meeting"] = got
    return "found"
