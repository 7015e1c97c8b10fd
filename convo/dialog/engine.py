"""One inbound message -> one reply.

The engine is the only place that walks flows. Per hop it: takes the
conversation's lock and state from Redis (one round trip), reduces the
gateway's input to what is new, feeds it to the current ``menu``/``ask``
state, runs automatic states (``do``, ``route``, ``flow``, ``return``) until
the dialog waits for input or ends, renders the screen, and saves (one more
round trip). Transitions fire on the flow version's shared ``transitions``
machine with a plain :class:`Conversation` as the model.

Answers to ``ask`` states marked ``secret`` (PINs) live only for the hop that
received them: they are dropped from the variables before anything is saved.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from jinja2 import TemplateError as JinjaError
from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError as DatabaseUnavailable
from sqlalchemy.exc import TimeoutError as DatabasePoolTimeout

from convo import security, stats

from convo.text import render
from convo.actions import Context
from convo.budget import hop_budget
from convo.flowlang.compiler import NAV_BACK, NAV_MORE, CompiledFlow, FlowSet
from convo.flowlang.spec import State
from convo.dialog.sessions import SessionBusy
from convo.flowlang.validators import validate

log = logging.getLogger(__name__)

MAX_AUTO_HOPS = 32
#: actions that read a client's data from Mifos X: every call is written to the audit log
AUDITED_ACTION_MODULES = frozenset({"convo.actions.mifos", "convo.actions.repay"})
UNAUDITED_ACTIONS = frozenset({"identify_caller"})    # every dial identifies the caller; reveals nothing
USSD_LIMIT = 160


def _menu_number(raw: str) -> int:
    """A menu answer as a number: ASCII digits only (``"١"``, ``"１"`` and ``"²"`` pass
    ``str.isdigit`` but are not what the screen offered), at most 3 digits; else 0."""
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 3 else 0


@dataclass(frozen=True)
class Inbound:
    channel: str              # "ussd" | "sms"
    gateway: str              # "africastalking", "sim", ...
    session_id: str           # gateway session id (USSD); for SMS the engine keys by phone
    phone: str                # E.164
    text: str                 # USSD: the gateway's cumulative text; SMS: the message
    service_code: str | None = None


@dataclass(frozen=True)
class Reply:
    text: str
    end: bool
    #: USSD: positions of secret (PIN) inputs in the cumulative text, for redacting it (convo.security)
    secret_positions: tuple = ()


#: the text added to the last SMS of a dialog in which the client texted a PIN
PIN_ADVICE = "sms.pin_delete"
#: conversation variable: a PIN came by SMS in this dialog
PIN_BY_SMS = "_pin_by_sms"


class Conversation:
    """The model the shared machines act on: plain data, rebuilt every hop."""

    __slots__ = ("flow", "_state", "vars", "lang", "page", "pages", "stack", "secrets", "trail")

    def __init__(self, flow: str, state: str, vars: dict, lang: str, page: int = 0, stack=None, pages: int = 1):
        self.flow, self._state, self.vars, self.lang, self.page = flow, state, vars, lang, page
        self.pages = pages                 # screens the current state's text was split into
        self.stack: list[list[str]] = stack or []
        self.secrets: set[str] = set()
        self.trail: list[tuple[str, str]] = []     # (flow, state) entered this hop, for convo.stats

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        self.trail.append((self.flow, value))
        self._state = value


class FlowRuntimeError(Exception):
    pass


def _first_position(text: str, consumed: int | None) -> int:
    """Index (in ``text.split('*')``) of the first input this hop takes from ``text``."""
    if not consumed:
        return 0
    return text[:consumed].count("*") + 1


def reduce_ussd_text(text: str, consumed: int | None) -> list[str] | None:
    """What is new in Africa's Talking's cumulative ``text`` (``1*2*1234``).

    ``consumed`` is how many characters of it earlier hops used (None for a new
    session). Returns the new inputs in order, ``[]`` for a fresh dial, or None
    when the callback repeats one already answered.
    """
    if consumed is None:                       # first hop: "" or a shortcut dial like *384*12*1#
        return [p for p in text.split("*")] if text else []
    if len(text) == consumed:
        return None
    if len(text) > consumed:
        rest = text[consumed:]
        if consumed:
            if not rest.startswith("*"):
                return [text.rsplit("*", 1)[-1]]   # history rewritten by the gateway: take the newest part
            rest = rest[1:]
        return [rest]
    return [text.rsplit("*", 1)[-1]]


class Engine:
    def __init__(self, services):
        self.services = services
        self.settings = services.settings

    # ------------------------------------------------------------------ entry point
    def handle(self, msg: Inbound) -> Reply:
        """One hop. Redis or the database unreachable (refused, or Redis silent past
        ``CONVO_REDIS_TIMEOUT``): a USSD caller gets ``common.unavailable`` and the session ends; an
        SMS raises on, answered 503 so the gateway delivers it again later (:mod:`convo.web.ops`)."""
        try:
            return self._handle(msg)
        except (RedisError, DatabaseUnavailable, DatabasePoolTimeout) as e:
            if msg.channel != "ussd":
                raise
            log.warning("%s unavailable, USSD hop answered 'unavailable': %s",
                        "Redis" if isinstance(e, RedisError) else "database", str(e).splitlines()[0][:300])
            lang = self.services.country_language(msg.phone)      # their own choice is cached in Redis
            return Reply(self._common_or(self.services.flows.current, "common.unavailable", "common.error", lang),
                         True)

    def _handle(self, msg: Inbound) -> Reply:
        lib = self.services.flows
        lib.maybe_reload()
        sid = self._session_key(msg)
        store = self.services.sessions
        try:
            data, token = store.acquire(sid)
        except SessionBusy:
            data = store.peek(sid)
            if data and "r" in data:
                return Reply(data["r"], data["e"], tuple(data.get("sp", ())))
            return Reply(self._common(lib.current, "common.error", self.settings.default_language), True)
        saved = False
        try:
            with hop_budget(self.settings.hop_budget_seconds):
                reply, data = self._hop(msg, data)
            if data is not None:
                counts = data.pop("_counts", None)      # drop-offs (convo.stats), no Redis command
                saved = store.save(sid, token, data, self._ttl(msg), counts and self._count_call(*counts))
                if not saved:
                    log.warning("session %s: lock expired before save; reply not stored", sid)
            return reply
        finally:
            if not saved:
                store.release(sid, token)

    @staticmethod
    def _session_key(msg: Inbound) -> str:
        """USSD: the gateway's session id *and* the phone, so a callback with another phone number and
        the same ``sessionId`` is another, new session: it never continues this one, never gets its
        stored reply, never takes its lock. SMS: channel and phone."""
        if msg.channel == "ussd":
            return f"ussd:{msg.gateway}:{msg.session_id}:{msg.phone}"
        return f"{msg.channel}:{msg.phone}"

    def _ttl(self, msg: Inbound) -> int:
        return self.settings.ussd_session_ttl if msg.channel == "ussd" else self.settings.sms_session_timeout

    # ------------------------------------------------------------------ one hop
    def _hop(self, msg: Inbound, data: dict | None) -> tuple[Reply, dict | None]:
        lib = self.services.flows
        if msg.channel == "ussd":
            inputs = reduce_ussd_text(msg.text, None if data is None else data.get("n", 0))
            if data is not None and (inputs is None or data.get("e")):
                return Reply(data["r"], data["e"], tuple(data.get("sp", ()))), None          # repeated callback / ended: same answer
            if data is None:
                fs = lib.current
                if not security.hit(self.services.redis, "ussd", msg.phone, self.settings.ussd_sessions_per_hour):
                    text = self._common_or(fs, "security.rate_limited", "common.error",
                                           self.services.language_for(msg.phone))
                    return Reply(text, True), {"v": fs.version, "r": text, "e": True, "n": len(msg.text)}
                conv = self._new(fs, fs.entry_flow("ussd", msg.service_code).name, msg.phone, None)
            else:
                fs = lib.get(data["v"])
                if fs is None:                                   # its flows version is long gone
                    text = self._common(lib.current, "common.expired", data.get("lang", "en"))
                    return Reply(text, True), {**data, "r": text, "e": True, "n": len(msg.text)}
                conv = self._resume(data)
            fresh = data is None
        else:
            if not security.hit(self.services.redis, "sms-in", msg.phone, self.settings.sms_inbound_per_hour):
                log.warning("inbound SMS over the hourly limit: not answered")
                return Reply("", True), None
            fs, conv, fresh = self._sms_start(msg, data)
            if conv is None:
                return Reply("", True), None                      # nothing to say (auto-reply limit)
            inputs = [] if fresh else [msg.text]
        ctx = Context(vars=conv.vars, phone=msg.phone, channel=msg.channel, services=self.services,
                      lang=conv.lang, session_id=msg.session_id)
        secret_positions: list[int] = list((data or {}).get("sp", ())) if msg.channel == "ussd" else []
        began, errored = (conv.flow, conv.state), False
        try:
            error = None
            if fresh:
                self._run_auto(fs, conv, ctx)
            pos = _first_position(msg.text, None if data is None else data.get("n", 0)) \
                if msg.channel == "ussd" else 0
            for i, raw in enumerate(inputs):
                if self._at_end(fs, conv) and conv.pages <= 1:
                    break
                if self._waits_for_secret(fs, conv):
                    secret_positions.append(pos + i)
                    if msg.channel != "ussd":
                        conv.vars[PIN_BY_SMS] = True
                error = self._feed(fs, conv, ctx, raw)
            body, end = self._screen(fs, conv, msg.channel, error)
            if end and body and conv.vars.get(PIN_BY_SMS):   # the PIN stays in the phone's Sent folder: say so
                body += self._pin_advice(fs, conv.lang)
        except (FlowRuntimeError, JinjaError) as e:
            log.error("session %s flow %s state %s: %s", msg.session_id, conv.flow, conv.state, e)
            body, end, errored = self._common(fs, "common.error", conv.lang), True, True
        for name in conv.secrets:
            conv.vars.pop(name, None)
        if ctx.events:
            self._audit(ctx, conv)
        if msg.channel != "ussd" and body and not security.hit(self.services.redis, "sms-out", msg.phone,
                                                               self.settings.sms_replies_per_hour):
            log.warning("SMS replies to one number over the hourly cap: reply dropped")
            body = ""
        state = {"v": fs.version, "f": conv.flow, "s": conv.state, "vars": conv.vars, "lang": conv.lang,
                 "pg": conv.page, "np": conv.pages, "stk": conv.stack, "n": len(msg.text) if msg.channel == "ussd" else 0,
                 "r": body, "e": end, "t": int(time.time())}
        if secret_positions:
            state["sp"] = secret_positions
        if self.settings.flow_stats:
            state["_counts"] = (fs.version, stats.hop_fields(fs, began, conv.trail, fresh, end, errored,
                                                                   conv.stack))
        return Reply(body, end, tuple(secret_positions)), state

    def _count_call(self, version: str, counts) -> tuple | None:
        if counts:                                  # counted in this process, written each second (convo.stats)
            stats.PENDING.add(self.services.redis, version, counts, self.settings.flow_stats_days)
        return None

    @staticmethod
    def _pin_advice(fs: FlowSet, lang: str) -> str:
        """``sms.pin_delete`` (if the locale files have it), added to the last SMS of a dialog in which the
        client texted a PIN."""
        from convo.notify.messages import render_text

        if not any(fs.locales.has(code, PIN_ADVICE) for code in fs.locales.languages):
            return ""
        return "\n" + render_text(fs.locales, PIN_ADVICE, lang, {})

    @staticmethod
    def _waits_for_secret(fs: FlowSet, conv: Conversation) -> bool:
        st = fs.flows[conv.flow].state(conv.state)
        return st.kind == "ask" and st.secret

    def _common_or(self, fs: FlowSet, key: str, fallback: str, lang: str) -> str:
        return (fs.common.get(key) or fs.common[fallback]).render(lang, {"lang": lang})

    def _audit(self, ctx: Context, conv: Conversation) -> None:
        """Queue the hop's audit rows (who asked for which data); written in batches off the hop path."""
        cid = (conv.vars.get("client") or {}).get("id")
        self.services.audit.add([{"actor": "client", "channel": ctx.channel, "phone": ctx.phone, "client_id": cid,
                                  **e} for e in ctx.events])

    def _new(self, fs: FlowSet, flow: str, phone: str, lang: str | None) -> Conversation:
        return Conversation(flow, fs.flows[flow].spec.start, {"phone": phone},
                            lang or self.services.language_for(phone))

    @staticmethod
    def _resume(data: dict) -> Conversation:
        return Conversation(data["f"], data["s"], data["vars"], data["lang"], data.get("pg", 0), data.get("stk"),
                            data.get("np", 1))

    def _sms_start(self, msg: Inbound, data: dict | None) -> tuple[FlowSet, Conversation | None, bool]:
        """An SMS either starts a keyword's flow, answers the open dialog, or gets the fallback flow."""
        lib = self.services.flows
        fs = lib.current
        kw = fs.keywords.match(msg.text)
        if kw:                                                   # a keyword always starts over, in the alias's
            return fs, self._new(fs, kw.flow, msg.phone, kw.lang), True     # language or the subscriber's own
        if data and not data.get("e") and lib.get(data["v"]):
            return lib.get(data["v"]), self._resume(data), False
        table = fs.keywords
        if not table.otherwise or not self._allow_auto_reply(msg.phone, table.auto_replies_per_hour):
            return fs, None, True
        return fs, self._new(fs, table.otherwise, msg.phone, (data or {}).get("lang")), True

    def _allow_auto_reply(self, phone: str, per_hour: int) -> bool:
        key = f"convo:auto-reply:{{{phone}}}:{int(time.time() // 3600)}"
        pipe = self.services.redis.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, 3700)
        count, _ = pipe.execute()
        return count <= per_hour

    def _at_end(self, fs: FlowSet, conv: Conversation) -> bool:
        return fs.flows[conv.flow].state(conv.state).kind == "end"

    # ------------------------------------------------------------------ input
    def _feed(self, fs: FlowSet, conv: Conversation, ctx: Context, raw: str) -> str | None:
        """Apply one input; returns an error text key/override to show, or None."""
        cf = fs.flows[conv.flow]
        st = cf.state(conv.state)
        raw = raw.strip()
        if conv.pages > 1:                                          # paging through a long screen
            if raw == NAV_MORE and conv.page < conv.pages - 1:
                conv.page += 1
                return None
            if raw == NAV_BACK and conv.page > 0:
                conv.page -= 1
                return None
            if st.kind == "end" and conv.page == conv.pages - 1:    # anything else on its last screen: done
                conv.page = conv.pages
                return None
        tctx = self._tctx(conv)
        if st.kind == "menu":
            if st.choose:
                items = conv.vars.get(st.choose.source) or []
                n = _menu_number(raw)
                if not 1 <= n <= len(items):
                    return self._error(cf, st)
                self._fire(cf, conv, "choose", var=st.choose.save, value=items[n - 1], ctx=tctx)
            else:
                visible = self._visible_options(cf, st, tctx)
                n = _menu_number(raw)
                if not 1 <= n <= len(visible):
                    return self._error(cf, st)
                self._fire(cf, conv, f"opt{visible[n - 1]}", ctx=tctx)
        elif st.kind == "ask":
            ok, value = validate(st.validate, raw)
            if not ok:
                return self._error(cf, st)
            if st.secret:
                conv.secrets.add(st.save)
            self._fire(cf, conv, "answer", var=st.save, value=value, ctx=tctx)
        else:
            return None
        conv.page, conv.pages = 0, 1
        self._run_auto(fs, conv, ctx)
        return None

    def _error(self, cf: CompiledFlow, st: State) -> str:
        if (st.name, "error") in cf.texts:
            return f"state:{st.name}"
        return "common.invalid_choice" if st.kind == "menu" else "common.invalid_input"

    # ------------------------------------------------------------------ automatic states
    def _run_auto(self, fs: FlowSet, conv: Conversation, ctx: Context) -> None:
        for _ in range(MAX_AUTO_HOPS):
            cf = fs.flows[conv.flow]
            st = cf.state(conv.state)
            if st.kind == "do":
                a = cf.actions[st.name]
                ctx.lang = conv.lang
                outcome = a.fn(ctx, **cf.bind(st, self._tctx(conv)))
                conv.lang = ctx.lang
                if a.fn.__module__ in AUDITED_ACTION_MODULES and a.name not in UNAUDITED_ACTIONS:
                    acc = conv.vars.get("account")
                    ctx.events.append({"action": f"data.{a.name}", "outcome": outcome,
                                       "detail": {"flow": conv.flow,
                                                  "account": acc.get("id") if isinstance(acc, dict) else None}})
                if outcome not in st.on:
                    raise FlowRuntimeError(f"action {a.name} returned unknown outcome {outcome!r}")
                self._fire(cf, conv, outcome)
            elif st.kind == "route":
                self._fire(cf, conv, "route", ctx=self._tctx(conv))
            elif st.kind == "flow":
                conv.stack.append([conv.flow, conv.state])
                conv.vars.update(cf.bind(st, self._tctx(conv)))
                conv.flow = st.subflow
                conv.state = fs.flows[st.subflow].spec.start
            elif st.kind == "return":
                if not conv.stack:
                    raise FlowRuntimeError(f"flow {conv.flow} returned with no caller")
                conv.flow, conv.state = conv.stack.pop()
                self._fire(fs.flows[conv.flow], conv, st.outcome)
            else:
                conv.page = 0
                return
        raise FlowRuntimeError(f"more than {MAX_AUTO_HOPS} automatic steps without input (loop?)")

    @staticmethod
    def _fire(cf: CompiledFlow, conv: Conversation, trigger: str, **kwargs) -> None:
        try:
            event = cf.machine.events[trigger]
        except KeyError:
            raise FlowRuntimeError(f"flow {cf.name} has no event {trigger!r}") from None
        if not event.trigger(conv, **kwargs):
            raise FlowRuntimeError(f"flow {cf.name}: {trigger!r} did not move state {conv.state!r}")

    # ------------------------------------------------------------------ rendering
    @staticmethod
    def _tctx(conv: Conversation) -> dict[str, Any]:
        ctx = dict(conv.vars)
        ctx["lang"] = conv.lang
        return ctx

    def _common(self, fs: FlowSet, key: str, lang: str) -> str:
        return fs.common[key].render(lang, {"lang": lang})

    def _visible_options(self, cf: CompiledFlow, st: State, tctx: dict) -> list[int]:
        out = []
        for i, _ in enumerate(st.options, 1):
            cond = cf.conditions.get((st.name, i))
            if cond is None or cond(**tctx):
                out.append(i)
        return out

    def _pages(self, fs: FlowSet, cf: CompiledFlow, st: State, conv: Conversation, channel: str,
               error: str | None) -> list[str]:
        tctx = self._tctx(conv)
        lang = conv.lang
        problem = None
        if error:
            problem = (cf.texts[(st.name, "error")].render(lang, tctx) if error.startswith("state:")
                       else self._common(fs, error, lang))
        more = f"{NAV_MORE}. {self._common(fs, 'common.more', lang)}"
        back = f"{NAV_BACK}. {self._common(fs, 'common.back', lang)}"
        text = cf.texts.get((st.name, "text"))
        body = text.render(lang, tctx) if text else ""
        if problem and channel != "ussd":
            body, problem = problem + "\n" + body, None
        if st.kind == "menu":
            if st.choose:
                label = cf.texts[(st.name, "choose")]
                items = conv.vars.get(st.choose.source) or []
                lines = [f"{i}. {label.render(lang, {**tctx, 'item': it})}" for i, it in enumerate(items, 1)]
            else:
                lines = [f"{n}. {cf.texts[(st.name, f'opt{i}')].render(lang, tctx)}"
                         for n, i in enumerate(self._visible_options(cf, st, tctx), 1)]
            if channel != "ussd":
                hint = fs.common.get("sms.reply_number")
                tail = [hint.render(lang, tctx)] if hint else []
                return ["\n".join([body] + lines + tail)]
            return render.paginate_menu(body, lines, limit=USSD_LIMIT, more_label=more, back_label=back,
                                        error=problem)
        if channel != "ussd":
            return [body]
        return render.paginate_text(body, limit=USSD_LIMIT, more_label=more, back_label=back, error=problem,
                                    heading=st.kind == "end")

    def _screen(self, fs: FlowSet, conv: Conversation, channel: str, error: str | None) -> tuple[str, bool]:
        cf = fs.flows[conv.flow]
        st = cf.state(conv.state)
        pages = self._pages(fs, cf, st, conv, channel, error)
        if error:
            conv.page = 0
        closing = conv.page >= len(pages)           # an answer on the last screen of a long end text
        conv.page = min(conv.page, len(pages) - 1)
        conv.pages = len(pages)
        # a long end text keeps "0. Back" on its last screen; any other answer there closes the session
        end = st.kind == "end" and conv.page == len(pages) - 1 and (len(pages) == 1 or closing)
        body = pages[conv.page]
        if end and len(pages) > 1:                  # the session closes: no "0. Back" on the last screen
            body = body.rsplit("\n", 1)[0]
        return body, end
