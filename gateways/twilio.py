"""Twilio (routes-file type ``twilio``): SMS both ways through the official ``twilio`` SDK.

Config keys: ``account_sid``, ``auth_token``, ``from`` (a Twilio number) or ``messaging_service_sid``;
optional ``base_url`` (default ``https://api.twilio.com``; tests point it at :mod:`convo.devkit.fake_twilio`),
``timeout`` (s), ``status_callback`` (default ``<public_url>/gateways/<name>/status?token=<callback_token>``
when ``public_url`` is known).

Events (``POST /gateways/<name>/<event>``):

* ``sms`` - Twilio's incoming-message webhook (form fields ``MessageSid``, ``From``, ``To``, ``Body``...),
  verified with ``X-Twilio-Signature`` by the SDK's :class:`~twilio.request_validator.RequestValidator`
  over the public URL Twilio called (``WebRequest.url``: ``CONVO_PUBLIC_URL`` rebuilds it behind a proxy).
  Answered with empty TwiML ``<Response/>``: the reply leaves through the outbox, never inline.
* ``status`` - status callbacks (``MessageSid``, ``MessageStatus``, ``ErrorCode``), same signature.

Send errors (``TwilioRestException.code``, https://www.twilio.com/docs/api/errors) are classified by
:func:`classify`: permanent, opted out (the number is marked, never failed over), or fail over.
"""
from __future__ import annotations

import logging
import time
from typing import Literal, Mapping, Sequence, overload
from urllib.parse import urlencode

from gateways.base import (
    BadCallback,
    DeliveryUpdate,
    Gateway,
    InboundSms,
    OptOutUpdate,
    OutgoingSms,
    SendResult,
    Unauthorized,
    WebRequest,
)

__all__ = ["DELIVERY_STATUS", "FAILOVER_CODES", "OPTED_OUT_CODES", "PERMANENT_CODES", "TwilioGateway", "classify"]

TWILIO_API = "https://api.twilio.com"
#: the number cannot get this message from any gateway: invalid 'To' (21211), not a mobile (21614),
#: not a mobile number / landline (21635), unknown destination handset (30005)
PERMANENT_CODES = frozenset({21211, 21614, 21635, 30005})
#: the recipient texted STOP to this sender (21610): the number is marked opted out, never failed over
OPTED_OUT_CODES = frozenset({21610})
#: another gateway may deliver it now: too many requests (20429), unreachable handset (30003), unknown
#: error (30008), network/carrier error (30500); also any HTTP 5xx, 429 and network errors, and what is
#: wrong with our Twilio account rather than the recipient: authentication (20003), region not enabled
#: (21408), no route from this number (21612)
FAILOVER_CODES = frozenset({20429, 30003, 30008, 30500, 20003, 21408, 21612})
#: Twilio's MessageStatus -> outbox status (forward only; https://www.twilio.com/docs/messaging/api/message-resource)
DELIVERY_STATUS = {
    "accepted": "sent", "scheduled": "sent", "queued": "sent", "sending": "sent",
    "sent": "submitted",                    # handed to the carrier
    "delivered": "delivered", "read": "delivered",
    "undelivered": "failed", "failed": "failed", "canceled": "failed",
    "partially_delivered": None,            # recorded, changes nothing
}
MAX_SMS_TEXT = 1600
#: the SDK logs eight INFO lines per request (URL and headers): WARNING unless an operator sets this logger
_SDK_LOG = logging.getLogger("gateways.twilio.sdk")
if _SDK_LOG.level == logging.NOTSET:
    _SDK_LOG.setLevel(logging.WARNING)


def classify(code: int | None, http_status: int | None) -> str:
    """``"opted_out"``, ``"permanent"``, ``"failover"`` or ``"failed"`` for a Twilio error code / HTTP status."""
    if code in OPTED_OUT_CODES:
        return "opted_out"
    if code in PERMANENT_CODES:
        return "permanent"
    if code in FAILOVER_CODES or (http_status or 0) >= 500 or http_status == 429:
        return "failover"
    return "failed"


@overload
def _field(form: Mapping, name: str, required: Literal[True] = True, limit: int = 200) -> str: ...
@overload
def _field(form: Mapping, name: str, required: bool, limit: int = 200) -> str | None: ...
def _field(form: Mapping, name: str, required: bool = True, limit: int = 200) -> str | None:
    """The form field ``name`` (None when absent and not ``required``); :class:`BadCallback` if too long
    or required and missing."""
    v = form.get(name)
    if v is None or (required and str(v).strip() == ""):
        if required:
            raise BadCallback(f"missing field {name!r}")
        return None
    v = str(v)
    if len(v) > limit:
        raise BadCallback(f"field {name!r} is longer than {limit} characters")
    return v


def _phone(raw: str, region: str, name: str) -> str:
    from convo.text.phone import InvalidPhone, normalize

    try:
        return normalize(raw, region)
    except InvalidPhone as e:
        raise BadCallback(f"field {name!r} is not a phone number: {e}") from None


class TwilioGateway(Gateway):
    """Twilio Programmable Messaging; see the module docstring for config and events."""

    type = "twilio"
    capabilities = frozenset({"sms_in", "sms_out", "delivery", "optout"})

    def __init__(self, name: str, config: Mapping | None = None, *, region: str = "KE", client=None):
        super().__init__(name, config, region=region)
        self.account_sid = self.require("account_sid")
        self.auth_token = self.require("auth_token")
        self.from_ = self.option("from")
        self.messaging_service_sid = self.option("messaging_service_sid")
        if not self.from_ and not self.messaging_service_sid:
            from gateways.base import ConfigError

            raise ConfigError(f"gateway {name!r} (type twilio): missing 'from' (or 'messaging_service_sid')")
        self.base_url = str(self.option("base_url", TWILIO_API)).rstrip("/")
        self.timeout = float(self.option("timeout", 10.0))
        self.status_callback = self.option("status_callback") or self._callback_url("status")
        if not self.status_callback:
            logging.getLogger(__name__).warning("gateway %r: no public_url (or status_callback): Twilio will "
                                                "not report delivery, messages stay 'sent'", name)
        self._client = client
        from twilio.request_validator import RequestValidator

        self.validator = RequestValidator(self.auth_token)

    def _callback_url(self, event: str) -> str | None:
        base = self.option("public_url")
        if not base:
            return None
        token = self.option("callback_token")
        return f"{str(base).rstrip('/')}/gateways/{self.name}/{event}" + (f"?{urlencode({'token': token})}"
                                                                          if token else "")

    @property
    def client(self):
        """The SDK client; its HTTP client sends to ``base_url`` instead of ``api.twilio.com``."""
        if self._client is None:
            from twilio.http.http_client import TwilioHttpClient
            from twilio.rest import Client

            base = self.base_url

            class _BaseUrlHttpClient(TwilioHttpClient):
                def request(self, method, url, *args, **kw):
                    if base != TWILIO_API and url.startswith(TWILIO_API):
                        url = base + url[len(TWILIO_API):]
                    return super().request(method, url, *args, **kw)

            self._client = Client(self.account_sid, self.auth_token,
                                  http_client=_BaseUrlHttpClient(timeout=self.timeout, logger=_SDK_LOG))
        return self._client

    # -- outbound
    def send(self, messages: Sequence[OutgoingSms], *, deadline: float | None = None) -> list[SendResult]:
        return [SendResult.retry("not sent: lease deadline")
                if deadline is not None and time.monotonic() >= deadline else self._send_one(m)
                for m in messages]

    def _send_one(self, m: OutgoingSms) -> SendResult:
        import requests
        from twilio.base.exceptions import TwilioException, TwilioRestException

        kw = {"to": m.to, "body": m.body}
        if self.messaging_service_sid:
            kw["messaging_service_sid"] = self.messaging_service_sid
        else:
            kw["from_"] = self.from_
        if self.status_callback:
            kw["status_callback"] = self.status_callback
        try:
            msg = self.client.messages.create(**kw)
        except TwilioRestException as e:
            code = e.code if isinstance(e.code, int) and e.code >= 1000 else None
            kind = classify(code, e.status)
            err = f"Twilio {e.status} {code or ''}: {e.msg}".strip()[:300]
            if kind == "opted_out":
                return SendResult.failed(err, status_code=code, opted_out=True)
            if kind == "permanent" or kind == "failed":
                return SendResult.failed(err, status_code=code)
            return SendResult.retry(err, status_code=code, failover=True)
        except (requests.RequestException, TwilioException, OSError) as e:
            return SendResult.retry(f"Twilio unreachable: {type(e).__name__}: {e}"[:300], failover=True)
        parts = None
        try:
            parts = int(msg.num_segments) if msg.num_segments is not None else None
        except (TypeError, ValueError):
            pass
        cost = f"{msg.price_unit} {abs(float(msg.price)):.4f}" if msg.price and msg.price_unit else None
        if msg.status == "failed" or msg.error_code:
            kind = classify(msg.error_code, None)
            err = f"Twilio {msg.error_code}: {msg.error_message or msg.status}"
            if kind == "opted_out":
                return SendResult.failed(err, provider_id=msg.sid, status_code=msg.error_code, opted_out=True)
            if kind in ("permanent", "failed"):
                return SendResult.failed(err, provider_id=msg.sid, status_code=msg.error_code)
            return SendResult.retry(err, provider_id=msg.sid, status_code=msg.error_code, failover=True)
        return SendResult("sent", provider_id=msg.sid, parts=parts, cost=cost, provider_status=msg.status)

    # -- inbound
    def inbound(self):
        return {"sms": self._sms, "status": self._status}

    def ack(self, event: str, parsed) -> tuple[str, str]:
        return '<?xml version="1.0" encoding="UTF-8"?><Response/>', "text/xml"

    def verify(self, req: WebRequest) -> None:
        """:class:`Unauthorized` unless ``X-Twilio-Signature`` signs ``req.url`` + the form with our auth token
        and the request is for our account."""
        sig = req.headers.get("X-Twilio-Signature")
        if not sig:
            raise Unauthorized("missing X-Twilio-Signature")
        if not self.validator.validate(req.url, req.form, sig):
            raise Unauthorized("bad X-Twilio-Signature (check CONVO_PUBLIC_URL: Twilio signs the URL it called)")
        if req.form.get("AccountSid") != self.account_sid:
            raise Unauthorized("AccountSid is not this gateway's account")

    def _sms(self, req: WebRequest):
        self.verify(req)
        f = req.form
        sid = _field(f, "MessageSid", limit=64)
        phone = _phone(_field(f, "From", limit=40), req.region, "From")
        to = _field(f, "To", required=False, limit=40)
        body = f.get("Body") or ""
        if len(body) > MAX_SMS_TEXT:
            raise BadCallback(f"field 'Body' is longer than {MAX_SMS_TEXT} characters")
        sms = InboundSms(id=sid, phone=phone, text=body, gateway=self.name, to=to)
        kind = (f.get("OptOutType") or "").upper()        # Advanced Opt-Out: STOP / START / HELP
        if kind in ("STOP", "START"):
            return [sms, OptOutUpdate(gateway=self.name, phone=phone, opted_out=kind == "STOP", sender_id=to,
                                      raw={"OptOutType": kind, "MessageSid": sid})]
        return sms

    def _status(self, req: WebRequest):
        self.verify(req)
        f = req.form
        sid = _field(f, "MessageSid", limit=64)
        word = (_field(f, "MessageStatus", required=False, limit=40) or _field(f, "SmsStatus", limit=40)).lower()
        raw_code = (f.get("ErrorCode") or "").strip()
        code = int(raw_code) if raw_code.isdigit() else None
        to = f.get("To")
        phone = None
        if to:
            try:
                phone = _phone(to, req.region, "To")
            except BadCallback:
                phone = None
        raw = {"MessageStatus": word, "ErrorCode": code}
        if code is not None:
            raw["class"] = classify(code, None)
        update = DeliveryUpdate(gateway=self.name, provider_id=sid, provider_status=word,
                                status=DELIVERY_STATUS.get(word), phone=phone,
                                failure_reason=f"ErrorCode {code}" if code is not None else None, raw=raw)
        if code in OPTED_OUT_CODES and phone:
            return [update, OptOutUpdate(gateway=self.name, phone=phone, opted_out=True, raw=raw)]
        return update
