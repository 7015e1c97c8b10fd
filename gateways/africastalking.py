"""Africa's Talking (https://africastalking.com): USSD and SMS in, SMS out, delivery reports, opt-outs.

Two sections: outbound (sending, delivery reports, opt-outs) and inbound
(USSD session callbacks and their end-of-session events, incoming SMS). No
Flask routes here: :mod:`convo.web.gateways` calls these functions.

Outbound goes through the official ``africastalking`` SDK (``SMSService``,
one instance per sender, no module globals), so two configurations can
coexist in one process. ``CONVO_AT_BASE_URL`` points the SDK at another
server (the fake in :mod:`convo.devkit.fake_at`, a proxy); without it the SDK picks
``api.africastalking.com``, or ``api.sandbox.africastalking.com`` for the
username ``sandbox``.
"""
from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Iterable, Literal, Mapping, Sequence, overload

from gateways.base import (
    BadCallback,
    DeliveryUpdate,
    Gateway,
    InboundSms,
    OptOutUpdate,
    OutgoingSms,
    SendResult,
    UssdEvent,
    UssdRequest,
)

__all__ = [
    "AT_DELIVERY_STATUS",
    "AT_STATUS_CODES",
    "AfricasTalkingGateway",
    "AfricasTalkingSender",
    "BadCallback",
    "InboundSms",
    "UssdEvent",
    "UssdRequest",
    "classify_status_code",
    "parse_delivery_report",
    "parse_inbound_sms",
    "parse_optout",
    "parse_ussd",
    "parse_ussd_event",
    "render_ussd",
]

GATEWAY = "africastalking"

# =========================================================================== outbound SMS

#: AT per-recipient ``statusCode`` → (name, outcome). See :func:`classify_status_code`.
AT_STATUS_CODES: dict[int, tuple[str, Literal["sent", "retry", "failed"]]] = {
    100: ("Processed", "sent"),
    101: ("Sent", "sent"),
    102: ("Queued", "sent"),
    401: ("RiskHold", "retry"),
    402: ("InvalidSenderId", "failed"),
    403: ("InvalidPhoneNumber", "failed"),
    404: ("UnsupportedNumberType", "failed"),
    405: ("InsufficientBalance", "retry"),
    406: ("UserInBlacklist", "failed"),
    407: ("CouldNotRoute", "retry"),
    409: ("DoNotDisturbRejection", "failed"),
    500: ("InternalServerError", "retry"),
    501: ("GatewayError", "retry"),
    502: ("RejectedByGateway", "failed"),
}
_CODE_BY_NAME = {name.lower(): code for code, (name, _) in AT_STATUS_CODES.items()}


def _status_name(code: int | None) -> str:
    """The name of an AT ``statusCode`` ("InvalidPhoneNumber"), "?" when it is unknown."""
    return AT_STATUS_CODES[code][0] if code in AT_STATUS_CODES else "?"


def classify_status_code(code: int) -> Literal["sent", "retry", "failed"]:
    """Map an AT per-recipient ``statusCode`` to ``sent`` / ``retry`` / ``failed``.

    ====  =====================  =======  ==============================================
    code  AT name                outcome  why
    ====  =====================  =======  ==============================================
    100   Processed              sent     accepted
    101   Sent                   sent     accepted, handed to the operator
    102   Queued                 sent     accepted, AT queued it (delivery report follows)
    401   RiskHold               retry    account held by AT's risk checks; clears later
    402   InvalidSenderId        failed   sender id / short code not ours; config fix
    403   InvalidPhoneNumber     failed   the number is wrong; never will work
    404   UnsupportedNumberType  failed   e.g. a landline or unsupported network
    405   InsufficientBalance    retry    top-up pending; try again later
    406   UserInBlacklist        failed   the subscriber blocked messages from us
    407   CouldNotRoute          retry    no route right now (operator link down)
    409   DoNotDisturbRejection  failed   subscriber's DND setting; resending won't help
    500   InternalServerError    retry    AT-side fault
    501   GatewayError           retry    operator gateway fault
    502   RejectedByGateway      failed   the operator refused this message
    ====  =====================  =======  ==============================================

    Unknown codes: 1xx sent, 5xx retry, anything else failed. Every retry is
    bounded by the worker's attempt cap, after which the message is ``failed``.
    """
    if code in AT_STATUS_CODES:
        return AT_STATUS_CODES[code][1]
    if 100 <= code < 200:
        return "sent"
    if 500 <= code < 600:
        return "retry"
    return "failed"


_E164 = re.compile(r"^\+\d{1,3}\d{3,}$")  # what the SDK's validate_phone accepts


class AfricasTalkingSender:
    """Sends through the official SDK's ``SMSService``; implements :class:`gateways.base.SmsSender`.

    * A message with ``link_id`` is a premium reply: ``send_premium`` with the
      short code (message ``sender_id`` or the configured one) and ``linkId``.
      Without a short code it falls back to a plain send.
    * Other messages with the same body and sender id go in one bulk request
      (up to ``max_recipients``); requests run on ``concurrency`` threads.
    * Per-recipient results are read from ``SMSMessageData.Recipients``
      (statusCode, messageId, cost, messageParts); see
      :func:`classify_status_code`. A request-level failure (HTTP error,
      timeout, refused connection) is ``retry`` for its messages - note a read
      timeout may mean AT did send (at-least-once).
    """

    name = GATEWAY

    def __init__(
        self,
        username: str,
        api_key: str,
        *,
        sender_id: str | None = None,
        base_url: str | None = None,
        timeout: float = 10.0,
        concurrency: int = 8,
        max_recipients: int = 100,
    ):
        from africastalking.SMS import SMSService

        self.username = username
        self.sender_id = sender_id or None
        self.timeout = (3.05, float(timeout))
        self.concurrency = max(1, int(concurrency))
        self.max_recipients = max(1, int(max_recipients))
        self.service = SMSService(username, api_key)
        if base_url:
            base = base_url.rstrip("/")
            if not base.endswith("/version1"):
                base += "/version1"
            # The SDK builds every URL from these two instance attributes
            # (Service._make_url); setting them here leaves the library untouched.
            self.service._baseUrl = base
            self.service._contentUrl = base
        self._pool = (ThreadPoolExecutor(self.concurrency, thread_name_prefix="at-send") if self.concurrency > 1
                      else None)

    @classmethod
    def from_settings(cls, settings) -> "AfricasTalkingSender":
        return cls(
            settings.at_username,
            settings.at_api_key,
            sender_id=settings.at_sender_id or None,
            base_url=settings.at_base_url or None,
            timeout=settings.at_timeout,
            concurrency=settings.worker_concurrency,   # the worker has at most that many sends in flight
        )

    @property
    def base_url(self) -> str:
        return self.service._baseUrl

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    # -- sending

    def send(self, messages: Sequence[OutgoingSms], *, deadline: float | None = None) -> list[SendResult]:
        results: list[SendResult | None] = [None] * len(messages)
        calls: list[list[int]] = []  # each: indexes into messages, one HTTP request
        bulk: dict[tuple[str, str | None], list[list[int]]] = {}
        for i, m in enumerate(messages):
            if not _E164.match(m.to or ""):
                results[i] = SendResult.failed(f"InvalidPhoneNumber: {m.to!r} is not E.164", status_code=403)
                continue
            if m.link_id and (m.sender_id or self.sender_id):
                calls.append([i])
                continue
            groups = bulk.setdefault((m.body, m.sender_id or self.sender_id), [])
            # one request never lists a number twice, so its result is unambiguous
            for g in groups:
                if len(g) < self.max_recipients and all(messages[j].to != m.to for j in g):
                    g.append(i)
                    break
            else:
                groups.append([i])
        for groups in bulk.values():
            calls.extend(groups)

        def run(idx: list[int]):
            return idx, self._call([messages[i] for i in idx], deadline)

        done: Iterable[tuple[list[int], list[SendResult]]]
        if self._pool is None or len(calls) <= 1:
            done = map(run, calls)
        else:
            done = self._pool.map(run, calls)
        for idx, res in done:
            for i, r in zip(idx, res):
                results[i] = r
        return results  # type: ignore[return-value]

    def _call(self, batch: list[OutgoingSms], deadline: float | None) -> list[SendResult]:
        if deadline is not None and time.monotonic() + sum(self.timeout) > deadline:
            return [SendResult.retry("not sent: worker lease about to expire")] * len(batch)
        first = batch[0]
        sender = first.sender_id or self.sender_id
        try:
            if first.link_id and sender:
                resp = self.service.send_premium(
                    first.body, sender, [first.to], link_id=first.link_id, timeout=self.timeout
                )
            else:
                resp = self.service.send(first.body, [m.to for m in batch], sender_id=sender, timeout=self.timeout)
        except Exception as exc:  # SDK raises AfricasTalkingException(body) on non-2xx; requests errors pass
            return [SendResult.retry(f"{type(exc).__name__}: {str(exc)[:300]}")] * len(batch)
        return _parse_send_response(resp, batch)


def _parse_send_response(resp, batch: list[OutgoingSms]) -> list[SendResult]:
    """Per-recipient results from AT's ``{"SMSMessageData": {"Message", "Recipients": [...]}}``."""
    if isinstance(resp, (str, bytes)):  # the SDK returns text unless content-type is exactly application/json
        try:
            resp = json.loads(resp)
        except ValueError:
            return [SendResult.retry(f"unreadable response: {str(resp)[:200]}")] * len(batch)
    data = (resp or {}).get("SMSMessageData") if isinstance(resp, dict) else None
    if not isinstance(data, dict):
        return [SendResult.retry(f"unexpected response: {str(resp)[:200]}")] * len(batch)
    by_number: dict[str, dict] = {}
    for r in data.get("Recipients") or []:
        if isinstance(r, dict) and r.get("number"):
            by_number.setdefault(str(r["number"]), r)
    message = str(data.get("Message") or "")
    out = []
    for m in batch:
        r = by_number.get(m.to)
        if r is None:
            # Whole request refused (e.g. Message "InvalidSenderId", Recipients []).
            code = _CODE_BY_NAME.get(message.strip().lower())
            outcome: Literal["sent", "retry", "failed"] = classify_status_code(code) if code else "retry"
            if outcome == "sent":
                outcome = "retry"
            out.append(SendResult(outcome, status_code=code, error=f"no result for recipient: {message[:200]}"))
            continue
        try:
            code = int(r["statusCode"])
        except (KeyError, TypeError, ValueError):
            code = None
        status_word = str(r.get("status") or "")
        outcome = classify_status_code(code) if code is not None else "retry"
        pid = r.get("messageId")
        pid = None if pid in (None, "", "None") else str(pid)
        try:
            parts = int(r["messageParts"]) if r.get("messageParts") is not None else None
        except (TypeError, ValueError):
            parts = None
        cost = r.get("cost")
        out.append(
            SendResult(
                outcome,
                provider_id=pid,
                cost=None if cost in (None, "") else str(cost),
                parts=parts,
                status_code=code,
                provider_status=status_word or None,
                error=None if outcome == "sent" else f"{code} {status_word or _status_name(code)}",
            )
        )
    return out


# =========================================================================== delivery reports & opt-out

#: AT delivery report ``status`` → outbox status (None: recorded only).
AT_DELIVERY_STATUS: dict[str, str] = {
    "sent": "sent",
    "submitted": "submitted",
    "buffered": "buffered",
    "success": "delivered",
    "rejected": "rejected",
    "failed": "failed",
    "absentsubscriber": "failed",
    "expired": "failed",
}


@overload
def _field(form: Mapping, name: str, *, required: Literal[True], max_len: int = 100) -> str: ...
@overload
def _field(form: Mapping, name: str, *, required: bool = False, max_len: int = 100) -> str | None: ...
def _field(form: Mapping, name: str, *, required: bool = False, max_len: int = 100) -> str | None:
    value = form.get(name)
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    if value is None or str(value).strip() == "":
        if required:
            raise BadCallback(f"missing field {name!r}")
        return None
    value = str(value).strip()
    if len(value) > max_len:
        raise BadCallback(f"field {name!r} is longer than {max_len} characters")
    return value


#: what of a delivery report is kept as ``raw`` (fields AT may add later included, within these bounds)
MAX_RAW_FIELDS, MAX_RAW_KEY, MAX_RAW_VALUE = 20, 40, 200


def parse_delivery_report(form: Mapping) -> DeliveryUpdate:
    """Parse AT's delivery report callback (form fields) into a :class:`DeliveryUpdate`.

    Fields: ``id`` (the messageId from the send), ``status`` (Sent, Submitted,
    Buffered, Rejected, Success, Failed, AbsentSubscriber, Expired),
    ``phoneNumber``, ``networkCode``, ``failureReason`` (Rejected/Failed:
    InsufficientCredit, UserInBlacklist, DeliveryFailure...), ``retryCount``.
    An unknown status word is kept (``status=None``: recorded, moves nothing).
    Raises :class:`BadCallback` without ``id``/``status`` or with junk values.
    """
    pid = _field(form, "id", required=True)
    word = _field(form, "status", required=True, max_len=40)
    retry_text = _field(form, "retryCount", max_len=10)
    retry: int | None = None
    if retry_text is not None:
        if not (retry_text.isascii() and retry_text.isdigit()):         # "²".isdigit() is True, int("²") fails
            raise BadCallback(f"retryCount must be a whole number, not {retry_text!r}")
        retry = int(retry_text)
    raw = {str(k)[:MAX_RAW_KEY]: str(v[0] if isinstance(v, (list, tuple)) and v else v)[:MAX_RAW_VALUE]
           for k, v in list(dict(form).items())[:MAX_RAW_FIELDS]}
    return DeliveryUpdate(
        gateway=GATEWAY,
        provider_id=pid,
        provider_status=word,
        status=AT_DELIVERY_STATUS.get(word.lower()),
        phone=_field(form, "phoneNumber", max_len=32),
        network_code=_field(form, "networkCode", max_len=16),
        failure_reason=_field(form, "failureReason"),
        retry_count=retry,
        raw=raw,
    )


def parse_optout(form: Mapping, *, region: str = "KE") -> OptOutUpdate:
    """Parse AT's opt-out callback (``senderId``, ``phoneNumber``) into an :class:`OptOutUpdate`.

    Raises :class:`BadCallback` when ``phoneNumber`` is missing or not a phone number.
    """
    from convo.text.phone import InvalidPhone, normalize

    raw_phone = _field(form, "phoneNumber", required=True, max_len=32)
    try:
        phone = normalize(raw_phone, region)
    except InvalidPhone as exc:
        raise BadCallback(f"phoneNumber {raw_phone!r} is not a phone number: {exc}") from None
    return OptOutUpdate(
        gateway=GATEWAY,
        phone=phone,
        opted_out=True,
        sender_id=_field(form, "senderId", max_len=32),
        raw={"senderId": _field(form, "senderId", max_len=32) or "", "phoneNumber": raw_phone},
    )


# =========================================================================== inbound USSD and SMS
# AT POSTs form fields ``sessionId``, ``serviceCode``, ``phoneNumber``,
# ``networkCode`` and ``text`` (every input of the session so far, joined with
# ``*``) and expects ``text/plain`` starting ``CON `` (wait for more input) or
# ``END `` (close the session). When the session closes AT may POST a
# notification (``sessionId``, ``status``, ``input``, ``hopsCount``, ...);
# its ``input`` repeats everything the caller typed, PINs included, so it is
# never stored.

MAX_TEXT = 500          # characters of cumulative input a session may carry
_SESSION_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
_CODE_RE = re.compile(r"^[*#0-9]{1,32}$")
_NETWORK_RE = re.compile(r"^[0-9]{0,10}$")
EVENT_STATUSES = {"Success", "Incomplete", "Failed"}


@overload
def _get(form: Mapping, name: str, required: Literal[True] = True) -> str: ...
@overload
def _get(form: Mapping, name: str, required: bool) -> str | None: ...
def _get(form: Mapping, name: str, required: bool = True) -> str | None:
    value = form.get(name)
    if value is None:
        if required:
            raise BadCallback(f"missing field '{name}'")
        return None
    if not isinstance(value, str):
        raise BadCallback(f"field '{name}' must be text")
    return value


def _int(form: Mapping, name: str) -> int | None:
    v = form.get(name)
    if v in (None, ""):
        return None
    v = str(v).strip()
    if len(v) > 12 or not (v.isascii() and v.isdigit()):
        raise BadCallback(f"field '{name}' must be a whole number of at most 12 digits")
    return int(v)


def parse_ussd(form: Mapping, region: str = "KE") -> UssdRequest:
    """Validate one session callback; raises :class:`BadCallback` with the reason."""
    from convo.text.phone import InvalidPhone, normalize

    sid = _get(form, "sessionId").strip()
    if not _SESSION_RE.match(sid):
        raise BadCallback("field 'sessionId' is empty or has characters a session id never has")
    code = _get(form, "serviceCode").strip()
    if not _CODE_RE.match(code):
        raise BadCallback("field 'serviceCode' must look like *384*12#")
    raw_phone = _get(form, "phoneNumber")
    try:
        phone = normalize(raw_phone, region)
    except InvalidPhone as e:
        raise BadCallback(f"field 'phoneNumber' is not a phone number: {e}") from None
    network = (_get(form, "networkCode", required=False) or "").strip()
    if not _NETWORK_RE.match(network):
        raise BadCallback("field 'networkCode' must be digits")
    text = _get(form, "text")
    if len(text) > MAX_TEXT:
        raise BadCallback(f"field 'text' is longer than {MAX_TEXT} characters")
    if any(ord(c) < 32 for c in text):
        raise BadCallback("field 'text' has control characters")
    return UssdRequest(sid, code, phone, network, text)


def render_ussd(text: str, end: bool) -> str:
    return ("END " if end else "CON ") + text


def parse_ussd_event(form: Mapping, region: str = "KE") -> UssdEvent:
    """Validate an end-of-session notification. Its ``input`` field is deliberately dropped."""
    from convo.text.phone import InvalidPhone, normalize

    sid = _get(form, "sessionId").strip()
    if not _SESSION_RE.match(sid):
        raise BadCallback("field 'sessionId' is empty or malformed")
    status = _get(form, "status").strip()
    if status not in EVENT_STATUSES:
        raise BadCallback(f"field 'status' must be one of {', '.join(sorted(EVENT_STATUSES))}")
    phone = _get(form, "phoneNumber", required=False)
    if phone:
        try:
            phone = normalize(phone, region)
        except InvalidPhone:
            raise BadCallback("field 'phoneNumber' is not a phone number") from None
    error = _get(form, "errorMessage", required=False)
    code = (_get(form, "serviceCode", required=False) or "").strip()
    if code and not _CODE_RE.match(code):
        raise BadCallback("field 'serviceCode' must look like *384*12#")
    network = (_get(form, "networkCode", required=False) or "").strip()
    if not _NETWORK_RE.match(network):
        raise BadCallback("field 'networkCode' must be digits")
    cost = (_get(form, "cost", required=False) or "").strip()
    if len(cost) > 40:
        raise BadCallback("field 'cost' is longer than 40 characters")
    return UssdEvent(sid, status, phone or None, code or None, network or None, _int(form, "hopsCount"),
                     _int(form, "durationInMillis"), cost or None, error[:200] if error else None)


MAX_SMS_TEXT = 1600       # 10 concatenated segments; longer is not a real SMS


def parse_inbound_sms(form: Mapping, region: str = "KE") -> InboundSms:
    """Validate an incoming SMS callback (from, to, text, date, id, linkId, networkCode)."""
    from convo.text.phone import InvalidPhone, normalize

    mid = _get(form, "id").strip()
    if not _SESSION_RE.match(mid):
        raise BadCallback("field 'id' is empty or malformed")
    try:
        phone = normalize(_get(form, "from"), region)
    except InvalidPhone as e:
        raise BadCallback(f"field 'from' is not a phone number: {e}") from None
    to = (_get(form, "to", required=False) or "").strip()
    if len(to) > 32:
        raise BadCallback("field 'to' is too long")
    text = _get(form, "text")
    if len(text) > MAX_SMS_TEXT:
        raise BadCallback(f"field 'text' is longer than {MAX_SMS_TEXT} characters")
    link = (_get(form, "linkId", required=False) or "").strip() or None
    if link and len(link) > 100:                        # outbox.link_id holds 100; AT's are UUIDs
        raise BadCallback("field 'linkId' is longer than 100 characters")
    network = (_get(form, "networkCode", required=False) or "").strip()
    if not _NETWORK_RE.match(network):
        raise BadCallback("field 'networkCode' must be digits")
    date = _get(form, "date", required=False)
    return InboundSms(id=mid, phone=phone, text=text, gateway=GATEWAY, to=to, link_id=link, network_code=network,
                      date=date[:40] if date else None)


# =========================================================================== the gateway (both directions)


class AfricasTalkingGateway(Gateway):
    """Routes-file type ``africastalking``: ``username``, ``api_key``, optional ``sender_id`` (short code),
    ``base_url``, ``timeout`` (s), ``concurrency``.

    Events: ``ussd``, ``ussd/events``, ``sms``, ``delivery``, ``optout``. Every ``retry`` result is a
    failover candidate (AT's 5xx, no credit, no route, risk hold, network errors): another gateway may
    deliver it now.
    """

    type = GATEWAY
    capabilities = frozenset({"ussd", "sms_in", "sms_out", "delivery", "optout"})

    def __init__(self, name: str, config: Mapping | None = None, *, region: str = "KE", sender=None):
        super().__init__(name, config, region=region)
        if sender is None:
            sender = AfricasTalkingSender(
                self.require("username"), self.require("api_key"),
                sender_id=self.option("sender_id"), base_url=self.option("base_url"),
                timeout=float(self.option("timeout", 10.0)), concurrency=int(self.option("concurrency", 8)))
        self.sender = sender
        self.sender_id = getattr(sender, "sender_id", None)
        self.timeout = getattr(sender, "timeout", 0.0)

    @classmethod
    def from_settings(cls, settings, name: str = GATEWAY) -> "AfricasTalkingGateway":
        """The gateway built from ``CONVO_AT_*`` exactly as before routes files existed."""
        return cls(name, {}, region=getattr(settings, "default_region", "KE"),
                   sender=AfricasTalkingSender.from_settings(settings))

    def send(self, messages: Sequence[OutgoingSms], *, deadline: float | None = None) -> list[SendResult]:
        return [replace(r, failover=True) if r.status == "retry" else r
                for r in self.sender.send(messages, deadline=deadline)]

    def close(self) -> None:
        self.sender.close()

    def render_ussd(self, text: str, end: bool) -> str:
        return render_ussd(text, end)

    def inbound(self):
        return {
            "ussd": lambda r: parse_ussd(r.form, r.region),
            "ussd/events": lambda r: parse_ussd_event(r.form, r.region),
            "sms": lambda r: replace(parse_inbound_sms(r.form, r.region), gateway=self.name),
            "delivery": lambda r: replace(parse_delivery_report(r.form), gateway=self.name),
            "optout": lambda r: replace(parse_optout(r.form, region=r.region), gateway=self.name),
        }
