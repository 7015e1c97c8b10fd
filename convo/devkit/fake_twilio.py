"""A local fake of Twilio's Messaging API and webhooks, for tests and the demo.

Sending: ``POST /2010-04-01/Accounts/<AccountSid>/Messages.json`` (form ``To``, ``From`` or
``MessagingServiceSid``, ``Body``, ``StatusCallback``; HTTP Basic auth ``AccountSid:AuthToken``) answered
201 with the Message resource as JSON (``sid`` ``SM`` + 32 hex, ``status`` ``queued``, ``num_segments``...).
Errors are Twilio's JSON ``{"code", "message", "more_info", "status"}`` with the HTTP status Twilio uses
(400 for 21211/21610/21614..., 401 for 20003, 429 for 20429), or a bare 5xx.

Webhooks the fake sends (form-encoded, signed ``X-Twilio-Signature`` = base64 HMAC-SHA1 with the auth
token of the URL followed by each parameter name and value sorted by name - Twilio's algorithm, written
here independently of the SDK so the gateway's validation is tested against it):

* :meth:`FakeTwilio.text` - an incoming SMS to ``sms_url`` (Twilio's incoming-message parameters);
* :meth:`FakeTwilio.report` - a status callback to the message's ``StatusCallback``.

Knobs: ``errors`` ``{"+1500...": 21211}`` per recipient, ``http_error`` (``http_error_count``).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import threading
import uuid
from dataclasses import dataclass, field

import requests
from flask import Flask, Response, jsonify, request
from requests import Response as HttpResponse  # the class's ``requests`` field hides the module

from convo.devkit.devserver import FakeServer

__all__ = ["FakeTwilio", "create_fake_twilio_app", "start_fake_twilio", "twilio_signature"]

ERROR_TEXT = {
    20003: (401, "Authenticate"),
    20429: (429, "Too Many Requests"),
    21211: (400, "The 'To' number is not a valid phone number."),
    21408: (400, "Permission to send an SMS has not been enabled for the region indicated by the 'To' number"),
    21610: (400, "Attempt to send to unsubscribed recipient"),
    21614: (400, "'To' number is not a valid mobile number"),
    21635: (400, "'To' number cannot be a landline"),
    30003: (400, "Unreachable destination handset"),
    30005: (400, "Unknown destination handset"),
    30008: (400, "Unknown error"),
    30500: (400, "Network error"),
}


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """``X-Twilio-Signature`` for a POST of ``params`` to ``url`` (Twilio's documented algorithm)."""
    s = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), s.encode(), hashlib.sha1).digest()).decode()


def _segments(text: str) -> int:
    try:
        from convo.text.sms import sms_info

        return sms_info(text).segments
    except Exception:
        return 1


@dataclass
class FakeTwilio:
    account_sid: str = "AC" + "0" * 32
    auth_token: str = "fake-auth-token"
    sms_url: str | None = None              #: where :meth:`text` posts (the gateway's /gateways/<name>/sms?token=)
    errors: dict[str, int] = field(default_factory=dict)
    http_error: int | None = None
    http_error_count: int | None = None
    messages: list[dict] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)
    callbacks: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.lock = threading.Lock()
        self._n = itertools.count(1)

    def accepted(self) -> list[dict]:
        with self.lock:
            return [m for m in self.messages if m["status"] == "queued"]

    # -- webhooks the fake sends
    def _post(self, url: str, params: dict[str, str], signature: str | None = "good",
              sign_url: str | None = None) -> HttpResponse:
        """POST ``params`` to ``url``; ``sign_url`` is the URL Twilio signs when it differs (a proxy in front)."""
        headers = {}
        if signature == "good":
            headers["X-Twilio-Signature"] = twilio_signature(self.auth_token, sign_url or url, params)
        elif signature:
            headers["X-Twilio-Signature"] = signature
        r = requests.post(url, data=params, headers=headers, timeout=10)
        with self.lock:
            self.callbacks.append({"url": url, "params": params, "status": r.status_code, "body": r.text})
        return r

    def text(self, from_: str, body: str, to: str = "+15005550006", *, sid: str | None = None,
             signature: str | None = "good", url: str | None = None, sign_url: str | None = None,
             **extra) -> HttpResponse:
        """An SMS from ``from_`` arriving at Twilio: the incoming-message webhook, as Twilio posts it."""
        sid = sid or "SM" + uuid.uuid4().hex
        params = {"ToCountry": "US", "ToState": "CA", "SmsMessageSid": sid, "NumMedia": "0", "ToCity": "",
                  "FromZip": "", "SmsSid": sid, "FromState": "", "SmsStatus": "received", "FromCity": "",
                  "Body": body, "FromCountry": "UG", "To": to, "ToZip": "", "NumSegments": str(_segments(body)),
                  "MessageSid": sid, "AccountSid": self.account_sid, "From": from_, "ApiVersion": "2010-04-01",
                  **extra}
        target = url or self.sms_url
        assert target is not None, "pass url= or set FakeTwilio.sms_url first"
        return self._post(target, params, signature, sign_url)

    def report(self, sid: str, status: str, error_code: int | None = None, *,
               signature: str | None = "good") -> HttpResponse:
        """A status callback for message ``sid`` to the ``StatusCallback`` it was sent with."""
        with self.lock:
            m = next(m for m in self.messages if m["sid"] == sid)
        params = {"AccountSid": self.account_sid, "ApiVersion": "2010-04-01", "From": m["from"] or "",
                  "MessageSid": sid, "MessageStatus": status, "SmsSid": sid, "SmsStatus": status, "To": m["to"]}
        if m.get("messaging_service_sid"):
            params["MessagingServiceSid"] = m["messaging_service_sid"]
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        return self._post(m["status_callback"], params, signature)

    # -- the REST API
    def create_message(self, account: str) -> Response:
        auth = request.authorization
        with self.lock:
            self.requests.append({"form": dict(request.form), "account": account})
            if self.http_error and (self.http_error_count is None or self.http_error_count > 0):
                if self.http_error_count is not None:
                    self.http_error_count -= 1
                return Response("<html>Service Unavailable</html>", status=self.http_error, content_type="text/html")
        if auth is None or auth.username != self.account_sid or auth.password != self.auth_token \
                or account != self.account_sid:
            return self._error(20003)
        f = request.form
        to, body = f.get("To"), f.get("Body")
        if not to:
            return self._error(21604, 400, "A 'To' phone number is required.")
        if not f.get("From") and not f.get("MessagingServiceSid"):
            return self._error(21603, 400, "A 'From' phone number is required.")
        if not body:
            return self._error(21602, 400, "Message body is required.")
        code = self.errors.get(to)
        if code is not None:
            return self._error(code)
        sid = "SM" + uuid.uuid4().hex
        msg = {"sid": sid, "account_sid": self.account_sid, "to": to, "from": f.get("From"),
               "messaging_service_sid": f.get("MessagingServiceSid"), "body": body, "status": "queued",
               "num_segments": str(_segments(body)), "num_media": "0", "direction": "outbound-api",
               "api_version": "2010-04-01", "price": None, "price_unit": "USD", "error_code": None,
               "error_message": None, "uri": f"/2010-04-01/Accounts/{account}/Messages/{sid}.json",
               "date_created": "Mon, 30 Nov 2026 10:00:00 +0000", "date_updated": "Mon, 30 Nov 2026 10:00:00 +0000",
               "date_sent": None,
               "subresource_uris": {"media": f"/2010-04-01/Accounts/{account}/Messages/{sid}/Media.json"}}
        with self.lock:
            self.messages.append({**msg, "status_callback": f.get("StatusCallback"), "seq": next(self._n)})
        resp = jsonify(msg)
        resp.status_code = 201
        return resp

    def _error(self, code: int, status: int | None = None, message: str | None = None) -> Response:
        st, text = ERROR_TEXT.get(code, (status or 400, message or "Error"))
        resp = jsonify({"code": code, "message": message or text,
                        "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status or st})
        resp.status_code = status or st
        return resp


def create_fake_twilio_app(**settings) -> Flask:
    fake = FakeTwilio(**settings)
    app = Flask("convo.devkit.fake_twilio")
    app.fake = fake  # type: ignore[attr-defined]

    @app.post("/2010-04-01/Accounts/<account>/Messages.json")
    def create(account):
        return fake.create_message(account)

    return app


class FakeTwilioServer(FakeServer):
    fake: FakeTwilio


def start_fake_twilio(**settings) -> FakeTwilioServer:
    """The fake on a free local port, in a thread (``url``, ``fake``, ``stop()``)."""
    return FakeTwilioServer(create_fake_twilio_app(**settings))
