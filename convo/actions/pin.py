"""PIN actions: is a PIN set, check it, set a new one (entered, then repeated).

The PIN itself is the answer of an ``ask`` with ``validate: pin``; the engine
drops it from the conversation before anything is saved, so the action that
uses it must come directly after that ``ask`` (``next: <the do state>``; the
compiler checks this). These actions also drop it as soon as they have used
it. Only argon2id hashes reach the database (:mod:`convo.store.subscribers`).

A PIN belongs to the caller's phone *and* the client chosen in this dialog
(``client.id``, set by ``identify_caller``): on a shared phone each client has
their own, and one never opens another. The lock is per phone.

``_pin_ok`` in the conversation marks a dialog whose PIN was confirmed (or
just set), for the client it was confirmed for; a flow variable cannot be
named with a leading ``_``, so no ``ask`` or ``choose`` can forge it.
"""
from __future__ import annotations

import logging

from convo.actions import Context, action, on
from convo.security import PinHasher, weak_pin_reason
from convo.store import subscribers

log = logging.getLogger(__name__)

CONFIRMED = "_pin_ok"


def _hasher(ctx: Context) -> PinHasher:
    return PinHasher.from_settings(ctx.services.settings)


def _client_id(ctx: Context) -> int:
    """The client this dialog is for; PIN actions run only after ``identify_caller`` found one."""
    cid = (ctx.vars.get("client") or {}).get("id")
    if cid is None:
        raise RuntimeError("PIN action before the caller was identified (flow 'identify' first)")
    return int(cid)


def _confirmed(ctx: Context) -> bool:
    """The PIN was confirmed earlier in this dialog, for the client the dialog is for now."""
    return ctx.vars.get(CONFIRMED) is not None and ctx.vars.get(CONFIRMED) == _client_id(ctx)


def _audit(ctx: Context, what: str, outcome: str | None = None, **detail) -> None:
    subscribers.audit(ctx.services.db, what, actor="client", channel=ctx.channel, phone=ctx.phone,
                      client_id=(ctx.vars.get("client") or {}).get("id"), outcome=outcome, detail=detail)


def _take(ctx: Context, var: str) -> str:
    value = ctx.vars.pop(var, None)
    return value if isinstance(value, str) else ""


@action("pin_status", outcomes=("none", "set", "confirmed", "locked", "hold"), provides={})
def pin_status(ctx: Context) -> str:
    """Where the caller stands: no PIN yet, a PIN to ask for, already confirmed in this dialog, locked,
    or on hold after a recent SIM swap (``CONVO_SIMSWAP_HOLD_DAYS``).

    ```yaml
    check:
      do: pin_status
      on: {none: set_first, set: ask_pin, confirmed: ok, locked: locked, hold: simswap_hold}
    ```
    """
    s = ctx.services
    st = subscribers.status(s.db, ctx.phone, _client_id(ctx), ctx.now)
    if st.state == "locked":
        return "locked"
    if _confirmed(ctx):
        return "confirmed"
    if s.settings.simswap_hold_days > 0 and not ctx.vars.get("_simswap_ok"):
        from convo.security.simswap import on_hold

        if on_hold(s, ctx.phone, ctx.today):
            _audit(ctx, "simswap.hold", "refused", days=s.settings.simswap_hold_days)
            return "hold"
        ctx.vars["_simswap_ok"] = True
    return "set" if st.state == "set" else "none"


@action("verify_pin", outcomes=("ok", "wrong", "locked", "none"), provides={"pin_attempts_left": "int"})
def verify_pin(ctx: Context, var: str = "pin") -> str:
    """Check the PIN just entered (the variable ``var``, default ``pin``) against the PIN of this phone and
    client. Wrong PINs are counted per phone, across its clients, USSD and SMS; the last allowed one locks
    the phone (``CONVO_PIN_MAX_ATTEMPTS``).
    Sets ``pin_attempts_left``.

    ```yaml
    ask_pin:
      ask: pin.enter
      validate: pin
      save: pin
      next: verify
    verify:
      do: verify_pin
      on: {ok: ok, wrong: ask_again, locked: locked, none: set_first}
    ```
    """
    s = ctx.services
    pin = _take(ctx, var)
    check = subscribers.verify(s.db, _hasher(ctx), ctx.phone, _client_id(ctx), pin,
                               max_attempts=s.settings.pin_max_attempts, lock_minutes=s.settings.pin_lock_minutes,
                               now=ctx.now)
    ctx.vars["pin_attempts_left"] = check.attempts_left
    if check.outcome == "ok":
        ctx.vars[CONFIRMED] = _client_id(ctx)
    elif check.outcome == "wrong":
        _audit(ctx, "pin.failed", "wrong", attempts_left=check.attempts_left)
    elif check.just_locked:
        _audit(ctx, "pin.failed", "wrong", attempts_left=0)
        _audit(ctx, "pin.locked", "locked", minutes=s.settings.pin_lock_minutes)
        _alert_staff(ctx)
    return check.outcome


def _alert_staff(ctx: Context) -> None:
    """The ``pin_locked`` alert rules of flows/alerts.yaml (convo.notify.messages); never fails the dialog."""
    try:
        from convo.notify import messages as notify

        client = ctx.vars.get("client") or {}
        st = subscribers.status(ctx.services.db, ctx.phone, now=ctx.now)
        until = st.locked_until
        notify.alert(ctx.services, event="pin_locked",
                     key=f"pin_locked:{ctx.phone}:{until.isoformat() if until else ''}",
                     phone=ctx.phone, client_id=client.get("id"), client_name=client.get("name"),
                     office_id=client.get("office_id"), channel=ctx.channel,
                     locked_until=("until a staff reset" if until and until.year >= 9000
                                   else until.strftime("%Y-%m-%d %H:%M") if until else None))
    except Exception as e:  # noqa: BLE001
        log.error("pin_locked alert failed: %s", type(e).__name__)


def _birth_year(ctx: Context) -> int | None:
    """The client's birth year from Mifos X (``GET /clients/{id}``), when it is known; never cached."""
    cid = _client_id(ctx)
    try:
        from convo.mifos.notify_reads import client_birth_date

        born = client_birth_date(ctx.services.mifos, int(cid))
    except Exception as e:  # noqa: BLE001 - best effort: no year, no birth-year rule
        log.info("birth date lookup failed: %s", type(e).__name__)
        return None
    return born.year if born else None


@action("stage_new_pin", outcomes=("ok", "weak"), provides={"pin_weak_reason": on("weak", "text")})
def stage_new_pin(ctx: Context, var: str = "new_pin") -> str:
    """Take a new PIN (the variable ``var``) the first time it is entered: refuse an easy one (all one
    digit, 1234/4321, common PINs, the birth year, the end of the phone number), else keep its hash
    until it is repeated. Sets ``pin_weak_reason`` when weak.

    ```yaml
    new_pin:
      ask: pin.new
      validate: pin
      save: new_pin
      next: stage
    stage:
      do: stage_new_pin
      on: {ok: repeat, weak: too_easy}
    ```
    """
    pin = _take(ctx, var)
    reason = weak_pin_reason(pin, ctx.phone, _birth_year(ctx))
    if reason:
        ctx.vars["pin_weak_reason"] = reason
        return "weak"
    subscribers.stage_new_pin(ctx.services.db, _hasher(ctx), ctx.phone, _client_id(ctx), pin, now=ctx.now)
    return "ok"


@action("commit_new_pin", outcomes=("done", "mismatch", "expired"), provides={})
def commit_new_pin(ctx: Context, var: str = "new_pin_repeat") -> str:
    """The new PIN repeated (the variable ``var``): when it matches, it becomes the PIN (``done``) and the
    dialog counts as confirmed. Replacing an existing PIN needs the old one confirmed earlier in the
    same dialog (``verify_pin``); otherwise nothing changes (``expired``).

    ```yaml
    repeat:
      ask: pin.repeat
      validate: pin
      save: new_pin_repeat
      next: commit
    commit:
      do: commit_new_pin
      on: {done: saved, mismatch: new_pin, expired: new_pin}
    ```
    """
    pin = _take(ctx, var)
    result = subscribers.commit_new_pin(ctx.services.db, _hasher(ctx), ctx.phone, _client_id(ctx), pin,
                                        replace_allowed=_confirmed(ctx), now=ctx.now)
    if result in ("set", "changed"):
        ctx.vars[CONFIRMED] = _client_id(ctx)
        _audit(ctx, f"pin.{result}", "ok")
        return "done"
    if result == "refused":
        log.warning("PIN change refused: the old PIN was not confirmed in this dialog")
        _audit(ctx, "pin.changed", "refused")
        return "expired"
    if result == "locked":                          # the phone was locked meanwhile: nothing changes
        return "expired"
    return result
