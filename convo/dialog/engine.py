"""One step of a dialog: a conversation and the caller's inputs -> the new conversation and its screen.

:func:`step` is pure dialog logic: it feeds each input to the state waiting for it (``menu``/``ask``),
runs the states that move on by themselves (``do``, ``route``, ``flow``, ``return``) until the dialog
waits for input or ends, and renders the screen for the channel. What each kind does lives in its
module (:mod:`convo.flowlang.kinds`); what differs by channel in :mod:`convo.dialog.channels`. The step
reads and writes no session store, takes no lock, writes no audit row and counts no rate limit:
:mod:`convo.dialog.hop` does that around it (``Engine.handle``). Actions it runs reach Mifos X through
their :class:`convo.actions.Context`, as always. Transitions fire on the flow version's shared
``transitions`` machine with a plain :class:`Conversation` as the model.

Answers to ``ask`` states marked ``secret`` (PINs) live only for the step that received them: they are
dropped from the variables the step returns.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from jinja2 import TemplateError as JinjaError

from convo.actions import Context
from convo.dialog.channels import Channel, first_position, reduce_ussd_text  # noqa: F401 - importable from here as before
from convo.dialog.channels import channel as channel_named
from convo.dialog.conversation import Conversation
from convo.flowlang.compiler import NAV_BACK, NAV_MORE, CompiledFlow, FlowSet
from convo.flowlang.kinds import REGISTRY as KINDS
from convo.flowlang.kinds import FlowRuntimeError
from convo.flowlang.spec import State

log = logging.getLogger(__name__)

MAX_AUTO_HOPS = 32
#: the text added to the last SMS of a dialog in which the client texted a PIN
PIN_ADVICE = "sms.pin_delete"
#: conversation variable: a PIN came by SMS in this dialog
PIN_BY_SMS = "_pin_by_sms"


@dataclass
class Step:
    """What one step produced."""

    conversation: Conversation
    #: the screen to send (may be "" when there is nothing to say)
    text: str
    #: the dialog is over (a USSD session closes)
    end: bool
    #: the flows failed at run time (the caller got ``common.error``)
    errored: bool = False
    #: positions (in the channel's input, see :meth:`Channel.first_position`) of secret answers taken
    secret_positions: list[int] = field(default_factory=list)
    #: audit rows the actions asked for (who read which data); the caller writes them
    events: list = field(default_factory=list)


def step(flows: FlowSet, conversation: Conversation, inputs: list[str], channel: Channel | str,
         context: Context, *, fresh: bool = False, first_input: int = 0) -> Step:
    """Advance ``conversation`` by ``inputs`` on ``flows``; render its screen for ``channel``.

    ``fresh``: a conversation just started (its start states run before any input). ``first_input``: the
    position of ``inputs[0]`` in the channel's input (:meth:`Channel.first_position`). ``context`` is what
    the actions see; the step points its variables at the new conversation's. ``conversation`` itself is
    not changed. A flow failing at run time (:class:`FlowRuntimeError`, a template error) ends the dialog
    with ``common.error``; anything else raises."""
    ch = channel_named(channel) if isinstance(channel, str) else channel
    conv = conversation.copy()
    context.vars = conv.vars
    turn = Turn(flows, conv, context)
    positions: list[int] = []
    errored = False
    try:
        error = None
        if fresh:
            turn.run_auto()
        for i, raw in enumerate(inputs):
            if turn.kind().ends_dialog and conv.pages <= 1:
                break
            st = turn.current()
            if KINDS[st.kind].secret(st):
                positions.append(first_input + i)
                if ch.secret_stays_on_phone:
                    conv.vars[PIN_BY_SMS] = True
            error = turn.feed(raw)
        body, end = turn.screen(ch, error)
        if end and body and conv.vars.get(PIN_BY_SMS):   # the PIN stays in the phone's Sent folder: say so
            body += pin_advice(flows, conv.lang)
    except (FlowRuntimeError, JinjaError) as e:
        log.error("session %s flow %s state %s: %s", context.session_id, conv.flow, conv.state, e)
        body, end, errored = common_text(flows, "common.error", conv.lang), True, True
    for name in conv.secrets:
        conv.vars.pop(name, None)
    return Step(conv, body, end, errored, positions, context.events)


def common_text(fs: FlowSet, key: str, lang: str, fallback: str | None = None) -> str:
    """A shared text (``common.*``), or ``fallback``'s when the locales lack ``key``."""
    return (fs.common.get(key) or fs.common[fallback or key]).render(lang, {"lang": lang})


def pin_advice(fs: FlowSet, lang: str) -> str:
    """``sms.pin_delete`` (if the locale files have it), added to the last SMS of a dialog in which the
    client texted a PIN."""
    from convo.notify.messages import render_text

    if not any(fs.locales.has(code, PIN_ADVICE) for code in fs.locales.languages):
        return ""
    return "\n" + render_text(fs.locales, PIN_ADVICE, lang, {})


class Turn:
    """One step's walk through the flows: what a kind's ``feed``/``run`` (convo.flowlang.kinds) acts on."""

    def __init__(self, fs: FlowSet, conv: Conversation, ctx: Context):
        self.fs, self.conv, self.ctx = fs, conv, ctx

    def current(self) -> State:
        return self.fs.flows[self.conv.flow].state(self.conv.state)

    def kind(self):
        return KINDS[self.current().kind]

    def tctx(self) -> dict[str, Any]:
        """What texts and conditions see: the variables and ``lang``."""
        ctx = dict(self.conv.vars)
        ctx["lang"] = self.conv.lang
        return ctx

    def fire(self, cf: CompiledFlow, trigger: str, **kwargs) -> None:
        """Fire ``trigger`` on ``cf``'s machine; it must move the conversation."""
        try:
            event = cf.machine.events[trigger]
        except KeyError:
            raise FlowRuntimeError(f"flow {cf.name} has no event {trigger!r}") from None
        if not event.trigger(self.conv, **kwargs):
            raise FlowRuntimeError(f"flow {cf.name}: {trigger!r} did not move state {self.conv.state!r}")

    def error(self, cf: CompiledFlow, st: State) -> str:
        """The error for an answer ``st`` refuses: its own ``error:`` text, else its kind's common one."""
        if (st.name, "error") in cf.texts:
            return f"state:{st.name}"
        return KINDS[st.kind].invalid_text

    def feed(self, raw: str) -> str | None:
        """Apply one input; returns an error text key/override to show, or None."""
        conv = self.conv
        cf = self.fs.flows[conv.flow]
        st = cf.state(conv.state)
        kind = KINDS[st.kind]
        raw = raw.strip()
        if conv.pages > 1:                                          # paging through a long screen
            if raw == NAV_MORE and conv.page < conv.pages - 1:
                conv.page += 1
                return None
            if raw == NAV_BACK and conv.page > 0:
                conv.page -= 1
                return None
            if kind.ends_dialog and conv.page == conv.pages - 1:    # anything else on its last screen: done
                conv.page = conv.pages
                return None
        if not kind.waits_for_input:
            return None
        error = kind.feed(self, cf, st, raw)
        if error is not None:
            return error
        conv.page, conv.pages = 0, 1
        self.run_auto()
        return None

    def run_auto(self) -> None:
        """Run the states that move on by themselves until the dialog waits for input or ends."""
        conv = self.conv
        for _ in range(MAX_AUTO_HOPS):
            cf = self.fs.flows[conv.flow]
            st = cf.state(conv.state)
            if not KINDS[st.kind].run(self, cf, st):
                conv.page = 0
                return
        raise FlowRuntimeError(f"more than {MAX_AUTO_HOPS} automatic steps without input (loop?)")

    def screen(self, channel: Channel, error: str | None) -> tuple[str, bool]:
        """The page of the current state's screen to show, and whether the dialog ends with it."""
        conv = self.conv
        cf = self.fs.flows[conv.flow]
        st = cf.state(conv.state)
        kind = KINDS[st.kind]
        pages = kind.render(Screen(self.fs, cf, st, conv, channel, error), cf, st)
        if error:
            conv.page = 0
        closing = conv.page >= len(pages)           # an answer on the last screen of a long end text
        conv.page = min(conv.page, len(pages) - 1)
        conv.pages = len(pages)
        # a long end text keeps "0. Back" on its last screen; any other answer there closes the session
        end = kind.ends_dialog and conv.page == len(pages) - 1 and (len(pages) == 1 or closing)
        body = pages[conv.page]
        if end and len(pages) > 1:                  # the session closes: no "0. Back" on the last screen
            body = body.rsplit("\n", 1)[0]
        return body, end


class Screen:
    """One state's screen being rendered: its text (``body``), the problem to show (``problem``), and the
    channel's paging (``menu_pages``/``text_pages``), for a kind's ``render``."""

    def __init__(self, fs: FlowSet, cf: CompiledFlow, st: State, conv: Conversation, channel: Channel,
                 error: str | None):
        self.fs, self.conv, self.channel, self.lang = fs, conv, channel, conv.lang
        self.tctx = tctx = {**conv.vars, "lang": conv.lang}
        self.problem = None
        if error:
            self.problem = (cf.texts[(st.name, "error")].render(self.lang, tctx) if error.startswith("state:")
                            else common_text(fs, error, self.lang))
        text = cf.texts.get((st.name, "text"))
        self.body = text.render(self.lang, tctx) if text else ""

    def nav_labels(self) -> tuple[str, str]:
        """``98. More`` and ``0. Back`` in the conversation's language."""
        return (f"{NAV_MORE}. {common_text(self.fs, 'common.more', self.lang)}",
                f"{NAV_BACK}. {common_text(self.fs, 'common.back', self.lang)}")

    def menu_pages(self, lines: list[str]) -> list[str]:
        return self.channel.menu_pages(self, lines)

    def text_pages(self, heading: bool = False) -> list[str]:
        return self.channel.text_pages(self, heading)


def __getattr__(name: str):
    """``Engine``, ``Inbound`` and ``Reply`` live in :mod:`convo.dialog.hop` (imported here on first use)."""
    if name in ("Engine", "Inbound", "Reply"):
        from convo.dialog import hop

        return getattr(hop, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
