"""A local fake of Africa's Talking's SMS API, for tests, benchmarks and the demo.

It speaks the bulk/premium send endpoint exactly as the official SDK calls it
(``POST /version1/messaging``, form-encoded, ``apiKey`` header) and answers
with AT's JSON (``SMSMessageData.Recipients[]``: statusCode, number, status,
cost, messageId, messageParts), content type ``application/json``, HTTP 201.
Point the gateway at it with ``CONVO_AT_BASE_URL=http://127.0.0.1:PORT``.

What it got is kept in :class:`FakeAT` (``app.fake``) and served at
``GET /__fake/messages`` (``DELETE`` clears). Misbehaviour on demand, from
Python or ``POST /__fake/config`` (JSON with the same names):

* ``status_codes``: ``{"+254700000403": 403}`` - per-number statusCode;
* ``http_error``: ``500`` - answer every send with that HTTP status
  (``http_error_count``: only the next N sends);
* ``delay``: seconds to sleep before answering;
* ``dlr_statuses``: statuses to report per accepted message (default
  ``["Success"]``; ``["Sent", "Buffered", "Failed"]``...);
  ``dlr_duplicate``/``dlr_shuffle``: post each report twice / out of order.

Delivery reports are POSTed form-encoded like AT's (id, status, phoneNumber,
networkCode, retryCount, failureReason) to ``delivery_url`` from a background
thread; :meth:`FakeAT.wait_reports` waits until they are all out.

SIM swaps (Insights API, ``POST /v1/sim-swap`` as the SDK's ``InsightService``
calls it): ``sim_swaps``: ``{"+254700000101": "2026-11-20"}`` - last swap date
per number; other numbers answer ``NotSwapped``.

Run alone: ``python -m convo.devkit.fake_at --port 8089 --delivery-url http://127.0.0.1:8000/gateways/africastalking/delivery``.
"""
from __future__ import annotations

import argparse
import itertools
import queue
import random
import threading
import time
import uuid
from dataclasses import dataclass, field

from flask import Flask, Response, jsonify, request

__all__ = ["FakeAT", "FakeATServer", "create_fake_at_app", "main", "start_fake_at"]

STATUS_NAMES = {
    100: "Processed", 101: "Success", 102: "Queued", 401: "RiskHold", 402: "InvalidSenderId",
    403: "InvalidPhoneNumber", 404: "UnsupportedNumberType", 405: "InsufficientBalance",
    406: "UserInBlacklist", 407: "CouldNotRoute", 409: "DoNotDisturbRejection",
    500: "InternalServerError", 501: "GatewayError", 502: "RejectedByGateway",
}
NETWORK_CODE = "63902"  # Safaricom


def _segments(text: str) -> int:
    try:
        from convo.text.sms import sms_info

        return sms_info(text).segments
    except Exception:  # the fake must answer even if render is broken
        return max(1, -(-len(text) // 153)) if len(text) > 160 else 1


@dataclass
class FakeAT:
    """State of one fake server: configuration knobs and everything it received."""

    delivery_url: str | None = None
    api_key: str | None = None  #: when set, requests with another apiKey get 401
    status_codes: dict[str, int] = field(default_factory=dict)
    default_status_code: int = 101
    http_error: int | None = None
    http_error_count: int | None = None
    delay: float = 0.0
    dlr_statuses: list[str] = field(default_factory=lambda: ["Success"])
    dlr_duplicate: bool = False
    dlr_shuffle: bool = False
    record_reports: bool = True
    sim_swaps: dict[str, str] = field(default_factory=dict)  #: phone -> last SIM swap (ISO date)
    sim_swap_queries: list[str] = field(default_factory=list)
    messages: list[dict] = field(default_factory=list)  #: one entry per recipient accepted or refused
    requests: list[dict] = field(default_factory=list)  #: one entry per HTTP send request
    reports_sent: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.lock = threading.Lock()
        self._ids = itertools.count(1)
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    # -- control

    def configure(self, **kw) -> None:
        with self.lock:
            for k, v in kw.items():
                if k not in {"status_codes", "default_status_code", "http_error", "http_error_count", "delay",
                             "dlr_statuses", "dlr_duplicate", "dlr_shuffle", "delivery_url", "api_key",
                             "sim_swaps"}:
                    raise ValueError(f"unknown fake setting {k!r}")
                setattr(self, k, v)

    def reset(self) -> None:
        with self.lock:
            self.messages.clear()
            self.requests.clear()
            self.reports_sent.clear()

    def accepted(self) -> list[dict]:
        """Recipients the fake accepted (status code 1xx)."""
        with self.lock:
            return [m for m in self.messages if m["statusCode"] < 200]

    def wait_reports(self, timeout: float = 10.0) -> bool:
        """Block until every queued delivery report has been posted."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    # -- delivery reports

    def _queue_reports(self, accepted: list[dict]) -> None:
        if not self.delivery_url or not accepted:
            return
        batch = []
        for m in accepted:
            for st in self.dlr_statuses:
                form = {"id": m["messageId"], "status": st, "phoneNumber": m["number"], "networkCode": NETWORK_CODE,
                        "retryCount": "0"}
                if st in ("Failed", "Rejected"):
                    form["failureReason"] = "DeliveryFailure"
                batch.append(form)
                if self.dlr_duplicate:
                    batch.append(dict(form))
        if self.dlr_shuffle:
            random.shuffle(batch)
        for form in batch:
            self._queue.put(form)
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._post_loop, name="fake-at-dlr", daemon=True)
            self._thread.start()

    def _post_loop(self) -> None:
        import requests

        http = requests.Session()
        while True:
            form = self._queue.get()
            code: int | str
            try:
                assert self.delivery_url is not None, "delivery_url was unset after the reports were queued"
                r = http.post(self.delivery_url, data=form, timeout=5)
                code = r.status_code
            except Exception as exc:  # keep going; the record says what happened
                code = f"error: {exc}"
            if self.record_reports:
                with self.lock:
                    self.reports_sent.append({**form, "_response": code})
            self._queue.task_done()

    # -- the send endpoint

    def handle_send(self, form, headers) -> Response:
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            if self.http_error and (self.http_error_count is None or self.http_error_count > 0):
                if self.http_error_count is not None:
                    self.http_error_count -= 1
                self.requests.append({"form": dict(form), "http_status": self.http_error})
                return Response("Internal Server Error" if self.http_error >= 500 else "Request refused",
                                status=self.http_error, content_type="text/plain")
        key = headers.get("apiKey")
        if not key or (self.api_key is not None and key != self.api_key):
            return Response("The supplied authentication is invalid", status=401, content_type="text/plain")
        username, to, message = form.get("username"), form.get("to"), form.get("message")
        if not username:
            return Response("Must have username in your request", status=400, content_type="text/plain")
        if not to:
            return Response("Must have to in your request", status=400, content_type="text/plain")
        if message is None:
            return Response("Must have message in your request", status=400, content_type="text/plain")
        parts = _segments(message)
        recipients, accepted, total = [], [], 0.0
        now = time.time()
        with self.lock:
            self.requests.append({"form": dict(form), "http_status": 201})
            for number in [n.strip() for n in to.split(",") if n.strip()]:
                code = int(self.status_codes.get(number, self.default_status_code))
                ok = code < 200
                pid = f"ATXid_{uuid.uuid4().hex}" if ok else "None"
                cost = 0.8 * parts if ok else 0.0
                total += cost
                r = {"statusCode": code, "number": number, "status": STATUS_NAMES.get(code, "Failed"),
                     "cost": f"KES {cost:.4f}" if ok else "0", "messageId": pid, "messageParts": parts if ok else 0}
                recipients.append(r)
                self.messages.append({**r, "message": message, "from": form.get("from"), "linkId": form.get("linkId"),
                                      "bulkSMSMode": form.get("bulkSMSMode"), "username": username, "at": now,
                                      "seq": next(self._ids)})
                if ok:
                    accepted.append(r)
        self._queue_reports(accepted)
        n_ok = len(accepted)
        body = {"SMSMessageData": {"Message": f"Sent to {n_ok}/{len(recipients)} Total Cost: KES {total:.4f}",
                                   "Recipients": recipients}}
        resp = jsonify(body)
        resp.status_code = 201
        resp.headers["Content-Type"] = "application/json"  # the SDK parses JSON only for this exact value
        return resp


def create_fake_at_app(delivery_url: str | None = None, **settings) -> Flask:
    """Flask app of the fake; its state is ``app.fake`` (a :class:`FakeAT`)."""
    fake = FakeAT(delivery_url=delivery_url)
    fake.configure(**settings)
    app = Flask("convo.devkit.fake_at")
    app.fake = fake  # type: ignore[attr-defined]
    app.extensions["fake_at"] = fake

    @app.post("/version1/messaging")
    def messaging():
        return fake.handle_send(request.form, request.headers)

    @app.post("/v1/sim-swap")
    def sim_swap():
        if not request.headers.get("apiKey"):
            return Response("The supplied authentication is invalid", status=401, content_type="text/plain")
        body = request.get_json(silent=True) or {}
        numbers = body.get("phoneNumbers")
        if not isinstance(numbers, list) or not body.get("username"):
            return Response("Must have username and phoneNumbers in your request", status=400,
                            content_type="text/plain")
        rows = []
        with fake.lock:
            for n in numbers:
                fake.sim_swap_queries.append(str(n))
                swapped = fake.sim_swaps.get(str(n))
                date = "-".join(reversed(swapped.split("-"))) if swapped else "01-01-1900"
                rows.append({"phoneNumber": {"number": n, "numberType": "Mobile"}, "provider": "Safaricom",
                             "status": "Swapped" if swapped else "NotSwapped", "lastSimSwapDate": date,
                             "requestId": f"ATSwpid_{uuid.uuid4().hex}"})
        return jsonify({"status": "Processed", "totalCost": f"KES {0.5 * len(rows):.4f}",
                        "requestId": f"ATSwpid_{uuid.uuid4().hex}", "responses": rows})

    @app.get("/__fake/messages")
    def messages():
        with fake.lock:
            return jsonify({"messages": list(fake.messages), "requests": len(fake.requests),
                            "reports_sent": list(fake.reports_sent)})

    @app.delete("/__fake/messages")
    def clear():
        fake.reset()
        return "", 204

    @app.post("/__fake/config")
    def config():
        try:
            fake.configure(**(request.get_json(force=True) or {}))
        except (TypeError, ValueError) as exc:
            return jsonify({"error": str(exc)}), 400
        return jsonify({"ok": True})

    return app


class FakeATServer:
    """The fake served by werkzeug in a background thread (``url``, ``fake``, ``stop()``)."""

    def __init__(self, app: Flask, host: str = "127.0.0.1", port: int = 0):
        from werkzeug.serving import make_server

        self.app = app
        self.fake: FakeAT = app.fake  # type: ignore[attr-defined]
        self.server = make_server(host, port, app, threaded=True)
        self.url = f"http://{host}:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-at", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)

    def __enter__(self) -> "FakeATServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_fake_at(delivery_url: str | None = None, *, host: str = "127.0.0.1", port: int = 0,
                  **settings) -> FakeATServer:
    """Start a fake on ``host:port`` (0 = any free port) in a thread; returns the running server."""
    return FakeATServer(create_fake_at_app(delivery_url, **settings), host, port)


def main(host: str = "127.0.0.1", port: int = 8089, delivery_url: str | None = None) -> None:
    """Serve the fake until interrupted (``convo fake-at`` / ``python -m convo.devkit.fake_at``)."""
    from werkzeug.serving import run_simple

    app = create_fake_at_app(delivery_url)
    print(f"fake Africa's Talking on http://{host}:{port} (CONVO_AT_BASE_URL); delivery reports -> {delivery_url}")
    run_simple(host, port, app, threaded=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="convo.devkit.fake_at", description="local fake Africa's Talking SMS API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8089)
    p.add_argument("--delivery-url", default=None)
    a = p.parse_args()
    main(a.host, a.port, a.delivery_url)
