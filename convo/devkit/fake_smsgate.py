"""A local fake of SMS Gateway for Android's local server (capcom6/android-sms-gateway), for tests and demos.

Speaks the app's API as its source defines it (``modules/localserver/WebService.kt``, ``routes/
MessagesRoutes.kt``, ``routes/WebhooksRoutes.kt``, ``modules/webhooks``):

* ``POST /messages`` (or ``/message``), HTTP Basic auth (401 otherwise): ``PostMessageRequest`` JSON,
  validated like ``PostMessageRequest.validate()`` (400 ``{"message": ...}``), 409 when the ``id`` exists,
  else 202 with the ``Message`` (``id``, ``deviceId``, ``state`` ``Pending``, ``recipients``, ``states``);
* ``GET/POST /webhooks``, ``DELETE /webhooks/<id>``: ``WebHookDTO`` ``{"id", "url", "event"}``; the url
  must be ``https://`` or ``http://127.0.0.1`` (``WebHooksService.replace``), events from ``WebHookEvent``;
* webhooks out: JSON ``WebHookEventDTO`` ``{"id", "webhookId", "event", "deviceId", "payload"}`` signed
  with ``X-Signature`` (hex HMAC-SHA256 of body + ``X-Timestamp``), as ``PayloadSingingPlugin`` does.

Drive it from tests: :meth:`FakeSmsGate.receive` (a client texts the phone), :meth:`FakeSmsGate.report`
(``sms:sent``/``sms:delivered``/``sms:failed`` for a sent message), :meth:`FakeSmsGate.redeliver` (the
app retrying the last webhook with the same event id). ``http_error`` makes sends answer that status.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import requests
from flask import Flask, Response, jsonify, request

from convo.devkit.devserver import FakeServer

__all__ = ["FakeSmsGate", "create_fake_smsgate_app", "start_fake_smsgate"]

EVENTS = {"sms:received", "sms:sent", "sms:delivered", "sms:failed", "system:ping", "sms:data-received",
          "mms:received", "mms:downloaded", "app:started", "sms:cancelled"}


def _nanoid() -> str:
    return secrets.token_urlsafe(16)[:21]


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + "000+00:00"


@dataclass
class FakeSmsGate:
    username: str = "sms"
    password: str = "phone-pass"
    signing_key: str = "signkey1"
    device_id: str = "fakeDevice0000000000"
    http_error: int | None = None
    messages: list[dict] = field(default_factory=list)
    webhooks: list[dict] = field(default_factory=list)
    sent_hooks: list[dict] = field(default_factory=list)
    clock_skew: float = 0.0                 #: seconds added to X-Timestamp (stale webhooks)

    def __post_init__(self):
        self.lock = threading.Lock()

    # -- webhooks out
    def _emit(self, event: str, payload: dict, *, signature: str | None = "good", event_id: str | None = None):
        out = []
        for hook in [h for h in self.webhooks if h["event"] == event]:
            dto = {"id": event_id or _nanoid(), "webhookId": hook["id"], "event": event, "deviceId": self.device_id,
                   "payload": payload}
            out.append(self._post(hook["url"], json.dumps(dto, ensure_ascii=False).encode(), signature))
        return out

    def _post(self, url: str, body: bytes, signature: str | None = "good", timestamp: str | None = None):
        ts = timestamp or str(int(time.time() + self.clock_skew))
        headers = {"Content-Type": "application/json", "User-Agent": "me.capcom.smsgateway/fake"}
        if signature == "good":
            headers["X-Signature"] = hmac.new(self.signing_key.encode(), body + ts.encode(), hashlib.sha256).hexdigest()
            headers["X-Timestamp"] = ts
        elif signature:
            headers["X-Signature"], headers["X-Timestamp"] = signature, ts
        r = requests.post(url, data=body, headers=headers, timeout=10)
        with self.lock:
            self.sent_hooks.append({"url": url, "body": body, "headers": headers, "status": r.status_code})
        return r

    def redeliver(self) -> requests.Response:
        """The app retrying the last webhook: same body (same event ``id``), signed again with a new timestamp."""
        last = self.sent_hooks[-1]
        return self._post(last["url"], last["body"])

    def receive(self, sender: str, text: str, **kw) -> list[requests.Response]:
        """A client's SMS arrives on the phone: ``sms:received`` to every webhook registered for it."""
        payload = {"messageId": _nanoid(), "sender": sender, "recipient": None, "simNumber": 1,
                   "phoneNumber": sender, "message": text, "receivedAt": _now()}
        return self._emit("sms:received", payload, **kw)

    def report(self, message_id: str, event: str, reason: str = "RESULT_ERROR_GENERIC_FAILURE", **kw):
        """The phone's radio sent / the network delivered / sending failed for message ``message_id``."""
        m = next(m for m in self.messages if m["id"] == message_id)
        to = m["phoneNumbers"][0]
        payload = {"messageId": message_id, "sender": None, "recipient": to, "simNumber": 1, "phoneNumber": to}
        if event == "sms:sent":
            payload.update(partsCount=1, sentAt=_now())
        elif event == "sms:delivered":
            payload.update(deliveredAt=_now())
        elif event == "sms:failed":
            payload.update(failedAt=_now(), reason=reason)
        return self._emit(event, payload, **kw)

    # -- the app's local server
    def _auth_ok(self) -> bool:
        a = request.authorization
        return a is not None and a.username == self.username and a.password == self.password

    def post_message(self) -> Response | tuple[Response, int]:
        if not self._auth_ok():
            return Response("", status=401, headers={"WWW-Authenticate": 'Basic realm="Access to SMS Gateway"'})
        if self.http_error:
            return jsonify({"message": "Internal error"}), self.http_error
        b = request.get_json(silent=True)
        if not isinstance(b, dict):
            return jsonify({"message": "Failed to convert request body"}), 400
        kinds = [k for k in ("textMessage", "dataMessage", "message") if b.get(k) is not None]
        if not kinds:
            return jsonify({"message": "Must specify exactly one of: textMessage, dataMessage, or message"}), 400
        if len(kinds) > 1:
            return jsonify({"message": "Cannot specify multiple message types simultaneously"}), 400
        text = (b.get("textMessage") or {}).get("text") if b.get("textMessage") else b.get("message")
        if text == "":
            return jsonify({"message": "Text message is empty"}), 400
        numbers = b.get("phoneNumbers") or []
        if not numbers:
            return jsonify({"message": "Empty phone numbers list"}), 400
        mid = b.get("id") or _nanoid()
        with self.lock:
            if any(m["id"] == mid for m in self.messages):
                return jsonify({"message": f"Message with id {mid} already exists"}), 409
            self.messages.append({"id": mid, "phoneNumbers": numbers, "text": text,
                                  "withDeliveryReport": b.get("withDeliveryReport", True),
                                  "simNumber": b.get("simNumber")})
        return jsonify({"id": mid, "deviceId": self.device_id, "state": "Pending", "isHashed": False,
                        "isEncrypted": False, "scheduleAt": None, "textMessage": {"text": text}, "dataMessage": None,
                        "hashedMessage": None,
                        "recipients": [{"phoneNumber": n, "state": "Pending", "error": None} for n in numbers],
                        "states": {"Pending": _now()}}), 202

    def post_webhook(self) -> Response | tuple[Response, int]:
        if not self._auth_ok():
            return Response("", status=401, headers={"WWW-Authenticate": 'Basic realm="Access to SMS Gateway"'})
        b = request.get_json(silent=True) or {}
        url, event = str(b.get("url") or ""), b.get("event")
        if not (url.startswith("https://") or url.startswith("http://127.0.0.1")):
            return jsonify({"message": "url must start with https:// or http://127.0.0.1"}), 400
        if event not in EVENTS:
            return jsonify({"message": "Failed to convert request body"}), 400
        hook = {"id": b.get("id") or _nanoid(), "deviceId": None, "url": url, "event": event, "source": "Local"}
        with self.lock:
            self.webhooks[:] = [h for h in self.webhooks if h["id"] != hook["id"]] + [hook]
        return jsonify(hook), 201


def create_fake_smsgate_app(**settings) -> Flask:
    fake = FakeSmsGate(**settings)
    app = Flask("convo.devkit.fake_smsgate")
    app.fake = fake  # type: ignore[attr-defined]
    for path in ("/message", "/messages"):
        app.add_url_rule(path, f"post{path}", fake.post_message, methods=["POST"])
    for path in ("/webhook", "/webhooks"):
        app.add_url_rule(path, f"hook{path}", fake.post_webhook, methods=["POST"])
        app.add_url_rule(path, f"list{path}", lambda: jsonify(fake.webhooks) if fake._auth_ok()
                         else Response("", status=401), methods=["GET"])
    return app


class FakeSmsGateServer(FakeServer):
    fake: FakeSmsGate


def start_fake_smsgate(**settings) -> FakeSmsGateServer:
    """The fake phone on a free local port, in a thread (``url``, ``fake``, ``stop()``)."""
    return FakeSmsGateServer(create_fake_smsgate_app(**settings))
