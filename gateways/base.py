"""The small interface every outbound SMS gateway implements.

The worker (:mod:`convo.jobs.worker`) hands a gateway a list of :class:`OutgoingSms`
and gets back one :class:`SendResult` per message, in the same order:

* ``sent``   - the gateway accepted it (``provider_id`` set when it gave one);
* ``retry``  - not accepted, worth trying again later (network, 5xx, no credit);
* ``failed`` - final, trying again will not help (bad number, blacklisted...).

A sender must never raise for one bad message; it returns ``failed``/``retry``
for that message. Raising from :meth:`SmsSender.send` makes the worker treat the
whole batch as ``retry``.

Delivery reports and opt-out callbacks are parsed by each gateway module into
the neutral :class:`DeliveryUpdate` / :class:`OptOutUpdate`, which
:mod:`convo.notify.outbox` applies. Malformed callbacks raise :class:`BadCallback`
(a ``ValueError``); the web layer answers 400 with ``str(exc)``.

Gateways for both directions: :class:`Gateway`
-----------------------------------------------
A gateway *type* is one module in ``gateways/`` with one :class:`Gateway`
subclass, registered by type in :data:`gateways.GATEWAY_TYPES` (an explicit
dict; the routes file names a type, never a Python path). The routes file
(``CONVO_ROUTES_FILE``, loaded by :mod:`convo.notify.routing`) gives each configured
gateway a *name* (``phone-gulu``) and a config dict with ``${NAME}`` already
expanded from the environment; ``Type(name, config, region=...)`` builds it and
raises :class:`ConfigError` with a precise message for a missing/bad key.

A subclass declares:

* ``type`` - the registry key (``"twilio"``);
* ``capabilities`` - a subset of :data:`CAPABILITIES` (``ussd``, ``sms_in``,
  ``sms_out``, ``delivery``, ``optout``);
* ``send(messages, *, deadline=None) -> list[SendResult]`` - as
  :class:`SmsSender` below; a result says ``failover=True`` when another gateway
  could deliver this message now (5xx, timeouts, throttling, no credit, no
  route), ``opted_out=True`` (status ``failed``) when the recipient opted out at
  the provider (the number is marked, never failed over); ``timeout`` (seconds
  or a (connect, read) pair) for the worker's lease check;
* ``inbound() -> {event: handler}`` - each handler takes a :class:`WebRequest`
  and returns one neutral object or a list of them (:class:`InboundSms`,
  :class:`DeliveryUpdate`, :class:`OptOutUpdate`, :class:`UssdRequest`,
  :class:`UssdEvent`) or ``None`` (acknowledged, nothing to do). It verifies
  first (signature, timestamp) and raises :class:`Unauthorized` (answered 403)
  or :class:`BadCallback` (400). Routes become ``POST /gateways/<name>/<event>``;
* ``methods(event)`` - HTTP methods of that route (default ``("POST",)``; GET callbacks read ``args``);
* ``ack(event, parsed) -> (body, content_type)`` - the HTTP 200 answer (default
  ``("OK", "text/plain")``; Twilio answers empty TwiML, Kannel an empty body so
  it sends no reply SMS). USSD answers come from ``render_ussd(text, end)``.

The web layer then does the same for every gateway: an :class:`InboundSms` runs
the flows once per ``(gateway name, id)`` and its reply is queued to leave
through the same gateway (``via``); delivery and opt-out updates go to
:mod:`convo.notify.outbox`. ``DeliveryUpdate.gateway``/``OptOutUpdate.gateway`` carry
the configured gateway *name* (``self.name``).
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, ClassVar, Literal, Mapping, Protocol, Sequence, Union, runtime_checkable

__all__ = [
    "CAPABILITIES",
    "BadCallback",
    "ConfigError",
    "Gateway",
    "InboundSms",
    "Parsed",
    "Unauthorized",
    "UssdEvent",
    "UssdRequest",
    "WebRequest",
    "DeliveryUpdate",
    "LogGateway",
    "LogSender",
    "OptOutUpdate",
    "OutgoingSms",
    "SendResult",
    "SmsSender",
    "sender_from_settings",
]

SendStatus = Literal["sent", "retry", "failed"]


class BadCallback(ValueError):
    """A gateway callback (delivery report, opt-out...) is malformed; the message says why."""


class Unauthorized(Exception):
    """A callback's signature/token/timestamp does not verify (answered 403 with ``str(exc)``)."""


class ConfigError(ValueError):
    """A gateway's routes-file config is wrong; the message names the gateway and the key."""


CAPABILITIES = frozenset({"ussd", "sms_in", "sms_out", "delivery", "optout"})


@dataclass(frozen=True)
class OutgoingSms:
    """One message as the worker hands it to a gateway."""

    id: int
    to: str  #: E.164 recipient
    body: str
    sender_id: str | None = None  #: short code / alphanumeric sender id (None = gateway default)
    link_id: str | None = None  #: premium reply to an inbound message (Africa's Talking linkId)
    encoding: str = "GSM-7"
    segments: int = 1
    kind: str = "reply"
    idempotency_key: str = ""
    via: str | None = None  #: gateway name a reply must leave through (the one the client wrote to)


@dataclass(frozen=True)
class SendResult:
    """What the gateway said about one message."""

    status: SendStatus
    provider_id: str | None = None
    cost: str | None = None  #: as the provider wrote it, e.g. ``"KES 0.8000"``
    parts: int | None = None
    status_code: int | None = None  #: provider's per-message code (AT ``statusCode``)
    error: str | None = None  #: human-readable reason for retry/failed
    provider_status: str | None = None  #: provider's status word (AT ``status``)

    #: another gateway could deliver it now (5xx, timeout, throttled, no credit, no route): the router tries
    #: the next gateway of the route before putting it back in the queue
    failover: bool = False
    #: the provider says the recipient opted out (e.g. Twilio 21610): the number is marked, no failover
    opted_out: bool = False
    # set by the router (convo.notify.routing.Router), not by gateways:
    gateway: str | None = None  #: configured name of the gateway that gave this result
    country: str | None = None  #: recipient's region code as routed
    cost_amount: Decimal | None = None  #: the route's price per segment x segments (sent only)
    cost_currency: str | None = None

    @classmethod
    def retry(cls, error: str, **kw) -> "SendResult":
        return cls("retry", error=error, **kw)

    @classmethod
    def failed(cls, error: str, **kw) -> "SendResult":
        return cls("failed", error=error, **kw)


@dataclass(frozen=True)
class DeliveryUpdate:
    """A delivery report, gateway-neutral.

    ``status`` is the outbox status it moves the message to (``sent``,
    ``submitted``, ``buffered``, ``delivered``, ``failed``, ``rejected``) or
    ``None`` when the provider status is unknown (recorded, changes nothing).
    """

    gateway: str
    provider_id: str
    provider_status: str
    status: str | None
    phone: str | None = None
    network_code: str | None = None
    failure_reason: str | None = None
    retry_count: int | None = None
    raw: dict = field(default_factory=dict)


@dataclass(frozen=True)
class OptOutUpdate:
    """A gateway told us a number opted out (or back in)."""

    gateway: str
    phone: str  #: E.164
    opted_out: bool = True
    sender_id: str | None = None
    raw: dict = field(default_factory=dict)


@runtime_checkable
class SmsSender(Protocol):
    """Outbound SMS gateway. ``send`` returns one result per message, same order.

    ``deadline`` (a ``time.monotonic()`` value) is when the worker's lease on
    these rows runs out; a sender that can still be working then must not
    start a new request after it, and returns ``retry`` ("not sent: lease
    deadline") for what it did not hand over.
    """

    name: str

    def send(self, messages: Sequence[OutgoingSms], *, deadline: float | None = None) -> list[SendResult]: ...


class LogSender:
    """The "no provider configured" gateway: prints each message to stdout and calls it sent.

    Used by the demo when ``CONVO_AT_USERNAME`` is empty, so the whole outbox
    path works on a laptop with nothing to pay for. ``sent`` keeps the
    messages for inspection in tests.
    """

    name = "log"

    def __init__(self, stream=None, keep: int = 1000):
        self.stream = stream
        self.keep = keep
        self.sent: list[OutgoingSms] = []
        self._lock = threading.Lock()
        self._n = 0

    def send(self, messages: Sequence[OutgoingSms], *, deadline: float | None = None) -> list[SendResult]:
        out = self.stream or sys.stdout
        results = []
        with self._lock:
            for m in messages:
                self._n += 1
                out.write(f"[sms:log] to={m.to} id={m.id} segments={m.segments} {m.encoding}: {m.body}\n")
                self.sent.append(m)
                results.append(SendResult("sent", provider_id=f"log-{m.id}-{int(time.time())}", parts=m.segments))
            del self.sent[: max(0, len(self.sent) - self.keep)]
            out.flush()
        return results


def sender_from_settings(settings) -> SmsSender:
    """Africa's Talking when ``at_username`` is set, else the stdout :class:`LogSender`."""
    if getattr(settings, "at_username", ""):
        from gateways.africastalking import AfricasTalkingSender

        return AfricasTalkingSender.from_settings(settings)
    return LogSender()


# =========================================================================== both directions


@dataclass(frozen=True)
class WebRequest:
    """An inbound HTTP callback as a gateway handler sees it (no Flask in gateway modules).

    ``url`` is the public URL the provider called (rebuilt from ``CONVO_PUBLIC_URL``
    behind a proxy, query string included) - what Twilio signs. ``body`` is the raw
    body (what smsgate's HMAC covers). ``form``/``args``/``headers`` are mappings
    (``headers`` case-insensitive). ``region`` is the default phonenumbers region for
    national numbers (``CONVO_DEFAULT_REGION``); ``now`` is ``time.time()`` at arrival.
    """

    url: str
    body: bytes = b""
    form: Mapping[str, Any] = field(default_factory=dict)
    args: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = "POST"
    region: str = "KE"
    now: float = field(default_factory=time.time)
    remote_addr: str | None = None

    def json(self) -> Any:
        """The body as JSON; :class:`BadCallback` when it is not."""
        import json

        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadCallback(f"body is not JSON: {exc}") from None


@dataclass(frozen=True)
class InboundSms:
    """An SMS a client sent us, gateway-neutral.

    ``id`` is the provider's message id: the same ``(gateway, id)`` twice is one
    message delivered twice and is answered once. ``to`` is the number/short code
    it was sent to; ``link_id`` a premium reply context (Africa's Talking); both
    go on the reply. ``gateway`` is the configured gateway *name*.
    """

    id: str
    phone: str  #: E.164 of the sender
    text: str
    gateway: str = ""
    to: str | None = None
    link_id: str | None = None
    network_code: str | None = None
    date: str | None = None


@dataclass(frozen=True)
class UssdRequest:
    """One USSD hop: ``text`` is every input of the session so far joined with ``*``."""

    session_id: str
    service_code: str
    phone: str  #: E.164
    network_code: str
    text: str


@dataclass(frozen=True)
class UssdEvent:
    """End-of-session notification (recorded, never stored with the caller's input)."""

    session_id: str
    status: str
    phone: str | None
    service_code: str | None
    network_code: str | None
    hops: int | None
    duration_ms: int | None
    cost: str | None
    error: str | None


Parsed = Union[InboundSms, DeliveryUpdate, OptOutUpdate, UssdRequest, UssdEvent, None]
Handler = Callable[[WebRequest], Union[Parsed, list]]


class Gateway:
    """Base class of a configured gateway (see the module docstring for the contract).

    Subclasses set ``type`` and ``capabilities``, read their keys from ``config``
    in ``__init__`` (use :meth:`require` / :meth:`option`), and implement
    :meth:`send` (when ``sms_out``) and :meth:`inbound`.
    """

    type: ClassVar[str] = ""
    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: seconds one send request may take (number or (connect, read)); the worker's lease check reads it
    timeout: Any = 10.0

    def __init__(self, name: str, config: Mapping[str, Any] | None = None, *, region: str = "KE"):
        self.name = name
        self.config = dict(config or {})
        self.region = region

    # -- config helpers
    def require(self, key: str) -> str:
        """``config[key]`` as text; :class:`ConfigError` naming gateway and key when missing or empty."""
        v = self.config.get(key)
        if v is None or str(v).strip() == "":
            raise ConfigError(f"gateway {self.name!r} (type {self.type}): missing {key!r}")
        return str(v)

    def option(self, key: str, default: Any = None) -> Any:
        v = self.config.get(key)
        return default if v is None or v == "" else v

    # -- outbound
    def send(self, messages: Sequence[OutgoingSms], *, deadline: float | None = None) -> list[SendResult]:
        raise NotImplementedError(f"gateway type {self.type!r} does not send SMS")

    # -- inbound
    def inbound(self) -> Mapping[str, Handler]:
        """``{event: handler}``; each becomes ``POST /gateways/<name>/<event>``."""
        return {}

    def methods(self, event: str) -> tuple[str, ...]:
        """HTTP methods the provider uses for ``event`` (Kannel's get-url and dlr-url call with GET)."""
        return ("POST",)

    def ack(self, event: str, parsed: Any) -> tuple[str, str]:
        """The body and content type of the 200 answer to ``event``."""
        return "OK", "text/plain"

    def render_ussd(self, text: str, end: bool) -> str:
        raise NotImplementedError(f"gateway type {self.type!r} has no USSD")

    def close(self) -> None:
        """Release threads/connections (called when the worker stops)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} type={self.type}>"


class LogGateway(Gateway):
    """Routes-file type ``log``: prints each message and calls it sent (:class:`LogSender`); for demos and tests."""

    type = "log"
    capabilities = frozenset({"sms_out"})
    timeout = 0.0

    def __init__(self, name: str, config: Mapping[str, Any] | None = None, *, region: str = "KE"):
        super().__init__(name, config, region=region)
        self._log = LogSender()
        self.sent = self._log.sent

    def send(self, messages: Sequence[OutgoingSms], *, deadline: float | None = None) -> list[SendResult]:
        return self._log.send(messages, deadline=deadline)
