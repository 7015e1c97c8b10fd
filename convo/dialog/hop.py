"""One inbound message -> one reply: the I/O around a dialog step.

Per hop :class:`Engine` takes the conversation's lock and state from Redis (one round trip), applies
the rate limits, opens or resumes the conversation, runs one pure :func:`convo.dialog.engine.step`,
queues the step's audit rows, and saves the new state with the reply (one more round trip), all within
the hop's time budget; the drop-off statistics are counted in the process and written each second
(:mod:`convo.dialog.stats`). What differs by channel (session key, TTL, input, paging) is in
:mod:`convo.dialog.channels`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import NamedTuple

from redis.exceptions import RedisError
from sqlalchemy.exc import OperationalError as DatabaseUnavailable
from sqlalchemy.exc import TimeoutError as DatabasePoolTimeout

from convo.actions import Context
from convo.budget import hop_budget
from convo.dialog import stats
from convo.dialog.channels import channel
from convo.dialog.conversation import Conversation
from convo.dialog.engine import common_text, step
from convo.dialog.sessions import SessionBusy
from convo.flowlang.compiler import FlowSet
from convo.security import limits

log = logging.getLogger(__name__)


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


class Opened(NamedTuple):
    """A conversation ready for its step."""

    flows: FlowSet
    conversation: Conversation
    fresh: bool
    inputs: list[str]


class Engine:
    """Answers gateways' messages (``handle``): the session, limits and audit around one dialog step."""

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
            if not channel(msg.channel).answers_when_down:
                raise
            log.warning("%s unavailable, USSD hop answered 'unavailable': %s",
                        "Redis" if isinstance(e, RedisError) else "database", str(e).splitlines()[0][:300])
            lang = self.services.country_language(msg.phone)      # their own choice is cached in Redis
            return Reply(common_text(self.services.flows.current, "common.unavailable", lang, "common.error"), True)

    def _handle(self, msg: Inbound) -> Reply:
        lib = self.services.flows
        lib.maybe_reload()
        ch = channel(msg.channel)
        sid = ch.session_key(msg)
        store = self.services.sessions
        try:
            data, token = store.acquire(sid)
        except SessionBusy:
            data = store.peek(sid)
            if data and "r" in data:
                return Reply(data["r"], data["e"], tuple(data.get("sp", ())))
            return Reply(common_text(lib.current, "common.error", self.settings.default_language), True)
        saved = False
        try:
            with hop_budget(self.settings.hop_budget_seconds):
                reply, data = self._hop(msg, data)
            if data is not None:
                counts = data.pop("_counts", None)      # drop-offs (convo.dialog.stats), no Redis command
                if counts and counts[1]:
                    stats.PENDING.add(self.services.redis, counts[0], counts[1], self.settings.flow_stats_days)
                saved = store.save(sid, token, data, ch.ttl(self.settings))
                if not saved:
                    log.warning("session %s: lock expired before save; reply not stored", sid)
            return reply
        finally:
            if not saved:
                store.release(sid, token)

    @staticmethod
    def _session_key(msg: Inbound) -> str:
        """The session store's key of ``msg``'s conversation (:meth:`convo.dialog.channels.Channel.session_key`)."""
        return channel(msg.channel).session_key(msg)

    # ------------------------------------------------------------------ one hop
    def _hop(self, msg: Inbound, data: dict | None) -> tuple[Reply, dict | None]:
        ch = channel(msg.channel)
        opened = self._open_session(msg, data) if ch.cumulative else self._open_message(msg, data)
        if not isinstance(opened, Opened):
            return opened                                # answered without a step
        fs, conv, fresh, inputs = opened
        ctx = Context(vars=conv.vars, phone=msg.phone, channel=msg.channel, services=self.services,
                      lang=conv.lang, session_id=msg.session_id)
        consumed = None if data is None else data.get("n", 0)
        done = step(fs, conv, inputs, ch, ctx, fresh=fresh, first_input=ch.first_position(msg.text, consumed))
        new = done.conversation
        secret_positions = (list((data or {}).get("sp", ())) if ch.cumulative else []) + done.secret_positions
        body = done.text
        if done.events:
            self._audit(ctx, new)
        if not ch.cumulative and body and not limits.allowed(self.services.redis, "sms-out", msg.phone,
                                                           self.settings.sms_replies_per_hour):
            log.warning("SMS replies to one number over the hourly cap: reply dropped")
            body = ""
        state = {"v": fs.version, **new.to_dict(), "n": ch.consumed(msg.text), "r": body, "e": done.end,
                 "t": int(time.time())}
        if secret_positions:
            state["sp"] = secret_positions
        if self.settings.flow_stats:
            state["_counts"] = (fs.version, stats.hop_fields(fs, (conv.flow, conv.state), new.trail, fresh,
                                                             done.end, done.errored, new.stack))
        return Reply(body, done.end, tuple(secret_positions)), state

    def _open_session(self, msg: Inbound, data: dict | None):
        """USSD: a new dial (rate-limited per phone) or the next input of an open session.

        Returns :class:`Opened`, or ``(reply, state to save or None)`` when the
        hop is answered without a step (a repeated callback, an ended session, the limit, a lost version)."""
        lib = self.services.flows
        inputs = channel(msg.channel).inputs(msg.text, None if data is None else data.get("n", 0))
        if data is not None and (inputs is None or data.get("e")):
            # a repeated callback, or an ended session: the same answer
            return Reply(data["r"], data["e"], tuple(data.get("sp", ()))), None
        inputs = inputs or []               # None only for an open session's repeated callback, answered above
        if data is None:
            fs = lib.current
            if not limits.allowed(self.services.redis, "ussd", msg.phone, self.settings.ussd_sessions_per_hour):
                text = common_text(fs, "security.rate_limited", self.services.language_for(msg.phone),
                                   "common.error")
                return Reply(text, True), {"v": fs.version, "r": text, "e": True, "n": len(msg.text)}
            return Opened(fs, self._new(fs, fs.entry_flow("ussd", msg.service_code).name, msg.phone, None), True,
                          inputs)
        fs = lib.get(data["v"])
        if fs is None:                                   # its flows version is long gone
            text = common_text(lib.current, "common.expired", data.get("lang", "en"))
            return Reply(text, True), {**data, "r": text, "e": True, "n": len(msg.text)}
        return Opened(fs, Conversation.from_dict(data), False, inputs)

    def _open_message(self, msg: Inbound, data: dict | None):
        """SMS: a keyword's flow, the answer to the open dialog, or the fallback flow (rate-limited)."""
        if not limits.allowed(self.services.redis, "sms-in", msg.phone, self.settings.sms_inbound_per_hour):
            log.warning("inbound SMS over the hourly limit: not answered")
            return Reply("", True), None
        fs, conv, fresh = self._sms_start(msg, data)
        if conv is None:
            return Reply("", True), None                      # nothing to say (auto-reply limit)
        return Opened(fs, conv, fresh, [] if fresh else channel(msg.channel).inputs(msg.text, None) or [])

    def _audit(self, ctx: Context, conv: Conversation) -> None:
        """Queue the hop's audit rows (who asked for which data); written in batches off the hop path."""
        cid = (conv.vars.get("client") or {}).get("id")
        self.services.audit.add([{"actor": "client", "channel": ctx.channel, "phone": ctx.phone, "client_id": cid,
                                  **e} for e in ctx.events])

    def _new(self, fs: FlowSet, flow: str, phone: str, lang: str | None) -> Conversation:
        return Conversation(flow, fs.flows[flow].spec.start, {"phone": phone},
                            lang or self.services.language_for(phone))

    def _sms_start(self, msg: Inbound, data: dict | None) -> tuple[FlowSet, Conversation | None, bool]:
        """An SMS either starts a keyword's flow, answers the open dialog, or gets the fallback flow."""
        lib = self.services.flows
        fs = lib.current
        kw = fs.keywords.match(msg.text)
        if kw:                                                   # a keyword always starts over, in the alias's
            return fs, self._new(fs, kw.flow, msg.phone, kw.lang), True     # language or the subscriber's own
        if data and not data.get("e") and lib.get(data["v"]):
            return lib.get(data["v"]), Conversation.from_dict(data), False
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
