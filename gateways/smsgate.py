"""An Android phone as gateway: SMS Gateway for Android (routes-file type ``smsgate``).

`capcom6/android-sms-gateway <https://github.com/capcom6/android-sms-gateway>`_ (Apache-2.0) turns a
phone with a SIM into an SMS gateway: for MFIs without a short code, or where a local SIM is the
cheapest route. Its local server (or the self-hosted/cloud server, same API) is used as follows; every
shape below is from the app's source (``modules/localserver``, ``modules/webhooks``):

* send: ``POST {url}/messages`` with HTTP Basic auth and JSON ``{"id", "phoneNumbers": [...],
  "textMessage": {"text": ...}, "withDeliveryReport": true}`` (``PostMessageRequest.kt``), answered
  ``202`` with the message (``id``, ``state``, ``recipients``); ``409`` when a message with that ``id``
  exists (``ConflictException``) - we send our own stable ``id``, so a retry after a lost answer is
  not sent twice;
* webhooks (``POST /gateways/<name>/webhook``): JSON ``{"id", "webhookId", "event", "deviceId",
  "payload"}`` (``WebHookEventDTO.kt``) for ``sms:received`` (payload ``messageId``, ``sender``,
  ``message``, ``receivedAt``), ``sms:sent`` (``partsCount``), ``sms:delivered``, ``sms:failed``
  (``reason``); signed ``X-Signature`` = hex HMAC-SHA256 with the app's signing key of the raw body
  followed by ``X-Timestamp`` (Unix seconds; ``PayloadSingingPlugin.kt``). Requests without a valid
  signature, or whose timestamp is more than :data:`MAX_SKEW` seconds away, are refused (403); the app
  retries a webhook with the same event ``id`` until it gets a 2xx, and an incoming SMS is answered
  once per ``messageId``.

Config keys: ``url`` (e.g. ``http://10.0.0.5:8080``), ``username``, ``password``, ``signing_key``;
optional ``sim_number``, ``timeout`` (s).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Mapping, Sequence

from gateways.base import (
    BadCallback,
    DeliveryUpdate,
    Gateway,
    InboundSms,
    OutgoingSms,
    SendResult,
    Unauthorized,
    WebRequest,
)

__all__ = ["EVENT_STATUS", "MAX_SKEW", "SmsGateGateway", "sign"]

#: seconds an X-Timestamp may be away from our clock
MAX_SKEW = 300
#: webhook event -> outbox status
EVENT_STATUS = {"sms:sent": "submitted", "sms:delivered": "delivered", "sms:failed": "failed",
                "sms:cancelled": "failed"}
MAX_SMS_TEXT = 1600


def sign(signing_key: str, body: bytes, timestamp: str) -> str:
    """The app's ``X-Signature``: hex HMAC-SHA256 of the raw body followed by the timestamp."""
    return hmac.new(signing_key.encode(), body + timestamp.encode(), hashlib.sha256).hexdigest()


class SmsGateGateway(Gateway):
    """SMS Gateway for Android; see the module docstring."""

    type = "smsgate"
    capabilities = frozenset({"sms_in", "sms_out", "delivery"})

    def __init__(self, name: str, config: Mapping | None = None, *, region: str = "KE"):
        super().__init__(name, config, region=region)
        self.url = self.require("url").rstrip("/")
        self.auth = (self.require("username"), self.require("password"))
        self.signing_key = self.require("signing_key")
        self.sim_number = self.option("sim_number")
        self.timeout = float(self.option("timeout", 10.0))
        self._http = None

    # -- outbound
    @property
    def http(self):
        if self._http is None:
            import requests

            self._http = requests.Session()
            self._http.auth = self.auth
        return self._http

    def message_id(self, m: OutgoingSms) -> str:
        """Our id for ``m`` at the phone: stable for the outbox row, so a resend is refused (409), not sent twice."""
        h = hashlib.sha256((m.idempotency_key or str(m.id)).encode()).hexdigest()[:10]
        return f"convo-{m.id}-{h}"

    def send(self, messages: Sequence[OutgoingSms], *, deadline: float | None = None) -> list[SendResult]:
        return [SendResult.retry("not sent: lease deadline")
                if deadline is not None and time.monotonic() >= deadline else self._send_one(m)
                for m in messages]

    def _send_one(self, m: OutgoingSms) -> SendResult:
        import requests

        mid = self.message_id(m)
        body = {"id": mid, "phoneNumbers": [m.to], "textMessage": {"text": m.body}, "withDeliveryReport": True}
        if self.sim_number:
            body["simNumber"] = int(self.sim_number)
        try:
            r = self.http.post(f"{self.url}/messages", json=body, timeout=self.timeout)
        except requests.RequestException as e:       # the phone is off, out of Wi-Fi, asleep: another route
            return SendResult.retry(f"phone unreachable: {type(e).__name__}", failover=True)
        if r.status_code == 409:                       # we sent this id before and the phone has it
            return SendResult("sent", provider_id=mid, provider_status="Conflict (already queued)")
        try:
            data = r.json()
        except ValueError:
            data = {}
        why = (data.get("message") if isinstance(data, dict) else None) or r.text[:200]
        if r.status_code in (200, 201, 202):
            state = data.get("state") if isinstance(data, dict) else None
            rec = (data.get("recipients") or [{}])[0] if isinstance(data, dict) else {}
            if state == "Failed" or rec.get("state") == "Failed":
                return SendResult.retry(f"phone: {rec.get('error') or 'Failed'}", provider_id=mid, failover=True)
            return SendResult("sent", provider_id=str(data.get("id") or mid), provider_status=state)
        if r.status_code == 400:                       # IllegalArgumentException: bad number, empty text...
            return SendResult.failed(f"phone refused: {why}", status_code=400)
        return SendResult.retry(f"phone answered {r.status_code}: {why}", status_code=r.status_code, failover=True)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    # -- inbound
    def inbound(self):
        return {"webhook": self._webhook}

    def verify(self, req: WebRequest) -> None:
        sig = req.headers.get("X-Signature")
        ts = req.headers.get("X-Timestamp")
        if not sig or not ts:
            raise Unauthorized("missing X-Signature or X-Timestamp")
        if not ts.isdigit() or len(ts) > 12:
            raise Unauthorized("X-Timestamp is not Unix seconds")
        if abs(req.now - int(ts)) > MAX_SKEW:
            raise Unauthorized(f"X-Timestamp is more than {MAX_SKEW} s away from our clock (replayed or stale)")
        if not hmac.compare_digest(sign(self.signing_key, req.body, ts), sig.strip().lower()):
            raise Unauthorized("bad X-Signature")

    def _webhook(self, req: WebRequest):
        from convo.text.phone import InvalidPhone, normalize

        self.verify(req)
        data = req.json()
        if not isinstance(data, dict) or not isinstance(data.get("payload"), dict):
            raise BadCallback("expected {\"event\": ..., \"payload\": {...}}")
        event, p = data.get("event"), data["payload"]
        mid = p.get("messageId")
        phone: str | None
        if event == "sms:received":
            if not isinstance(mid, str) or not mid or len(mid) > 100:
                raise BadCallback("payload.messageId is missing or too long")
            raw = p.get("sender") or p.get("phoneNumber")
            try:
                phone = normalize(raw, req.region)
            except InvalidPhone as e:
                raise BadCallback(f"payload.sender is not a phone number: {e}") from None
            text = p.get("message")
            if not isinstance(text, str) or len(text) > MAX_SMS_TEXT:
                raise BadCallback(f"payload.message must be text of at most {MAX_SMS_TEXT} characters")
            to = p.get("recipient")
            # messageId is a 32-bit hashCode of (sender, date, SIM, text) (modules/receiver/ReceiverService.kt,
            # receiver/data/InboxMessage.kt): two clients' messages can share one. Our id adds a strong hash of
            # what identifies the message, so retries (same payload) match and strangers never do.
            digest = hashlib.sha256(json.dumps([raw, p.get("receivedAt"), p.get("simNumber"), text]).encode())
            return InboundSms(id=f"{mid}-{digest.hexdigest()[:20]}", phone=phone, text=text, gateway=self.name,
                              to=str(to)[:32] if to else None, date=str(p.get("receivedAt") or "")[:40] or None)
        if event in EVENT_STATUS:
            if not isinstance(mid, str) or not mid or len(mid) > 100:
                raise BadCallback("payload.messageId is missing or too long")
            raw_phone = p.get("recipient") or p.get("phoneNumber")
            try:
                phone = normalize(raw_phone, req.region) if raw_phone else None
            except InvalidPhone:
                phone = None
            reason = p.get("reason") if event == "sms:failed" else None
            return DeliveryUpdate(gateway=self.name, provider_id=mid, provider_status=event,
                                  status=EVENT_STATUS[event], phone=phone,
                                  failure_reason=str(reason)[:200] if reason else None,
                                  raw={"event": event, "id": data.get("id"), "partsCount": p.get("partsCount")})
        return None                                    # system:ping, mms:*, app:started...: acknowledged
