"""The small interface every outbound SMS gateway implements.

The worker (:mod:`convo.worker`) hands a gateway a list of :class:`OutgoingSms`
and gets back one :class:`SendResult` per message, in the same order:

* ``sent``   - the gateway accepted it (``provider_id`` set when it gave one);
* ``retry``  - not accepted, worth trying again later (network, 5xx, no credit);
* ``failed`` - final, trying again will not help (bad number, blacklisted...).

A sender must never raise for one bad message; it returns ``failed``/``retry``
for that message. Raising from :meth:`SmsSender.send` makes the worker treat the
whole batch as ``retry``.

Delivery reports and opt-out callbacks are parsed by each gateway module into
the neutral :class:`DeliveryUpdate` / :class:`OptOutUpdate`, which
:mod:`convo.outbox` applies. Malformed callbacks raise :class:`BadCallback`
(a ``ValueError``); the web layer answers 400 with ``str(exc)``.
"""
from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Literal, Protocol, Sequence, runtime_checkable

__all__ = [
    "BadCallback",
    "DeliveryUpdate",
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
