"""Actions that need no outside system."""
from __future__ import annotations

from convo.actions import Context, action


@action("set_language", outcomes=("ok",), provides={})
def set_language(ctx: Context, lang: str) -> str:
    """Switch the conversation to another language, and remember it for the caller's later dialogs and SMS.

    ```yaml
    to_swahili:
      do: set_language
      with: {lang: sw}
      on: {ok: menu}
    ```
    """
    langs = ctx.services.flows.current.languages
    if lang in langs:
        ctx.lang = lang
        ctx.services.remember_language(ctx.phone, lang)
    return "ok"


@action("opt_out", outcomes=("ok",), provides={})
def opt_out(ctx: Context) -> str:
    """STOP: the caller's number gets no more reminders or notices (answers it asks for still come).

    ```yaml
    opt_out:
      do: opt_out
      on: {ok: done}
    ```
    """
    from convo.notify.outbox import set_opt_out

    set_opt_out(ctx.services.db, ctx.phone, True, source=ctx.channel)
    return "ok"


@action("opt_in", outcomes=("ok",), provides={})
def opt_in(ctx: Context) -> str:
    """START: the caller's number gets reminders and notices again.

    ```yaml
    opt_in:
      do: opt_in
      on: {ok: done}
    ```
    """
    from convo.notify.outbox import set_opt_out

    set_opt_out(ctx.services.db, ctx.phone, False, source=ctx.channel)
    return "ok"


@action("which_channel", outcomes=("ussd", "sms"), provides={})
def which_channel(ctx: Context) -> str:
    """Go on by the channel of the conversation: ``ussd`` or ``sms`` (any text channel), e.g. to ask
    for a PIN in words that suit an SMS reply.

    ```yaml
    how:
      do: which_channel
      on: {ussd: ask, sms: ask_sms}
    ```
    """
    return "ussd" if ctx.channel == "ussd" else "sms"

