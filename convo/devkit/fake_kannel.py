"""A local fake of Kannel's smsbox, for tests and demos: sendsms in, delivery reports and MO messages out.

Wire format from Kannel's source and user guide (``gw/smsbox.c`` smsbox_req_sendsms / the ACK switch,
``gw/urltrans.c`` urltrans_fill_escape_codes, ``doc/userguide/userguide.xml``):

* ``GET``/``POST /cgi-bin/sendsms`` with CGI variables ``username`` (``user``), ``password`` (``pass``),
  ``from``, ``to``, ``text``, ``charset``, ``coding``, ``smsc``, ``dlr-mask``, ``dlr-url``. Answers
  (``Content-type: text/html``): ``202 0: Accepted for delivery``, ``202 3: Queued for later delivery``,
  ``403 Authorization failed for sendsms``, ``403 Not routable. Do not try again.``,
  ``503 Temporal failure, try again later.``, ``400 Missing receiver number, rejected``.
* :meth:`FakeKannel.dlr` fetches a message's ``dlr-url`` (if its ``dlr-mask`` has that bit) with the
  escape codes filled as urltrans does: ``%d`` type, ``%A`` SMSC reply, ``%T`` epoch, ``%I`` id,
  ``%p``/``%P`` numbers, ``%%``; an unknown escape stays as it is.
* :meth:`FakeKannel.mo` fetches the sms-service ``get_url`` for a message from a phone: ``%p`` the
  client's phone, ``%P`` the number it texted (urltrans fills ``%p`` from ``sms.receiver``, but smsbox's
  obey_request_thread has swapped sender and receiver before, so ``%p`` is the client), ``%a`` words
  squeezed, ``%b`` the message bytes (UTF-8, or UTF-16BE for coding 2),
  ``%C`` charset, ``%c`` coding, ``%I`` a UUID, ``%T``/``%t`` time, ``%k`` keyword. A non-empty answer
  is what Kannel would send back to the phone as an SMS (recorded in ``replies``).

Knobs: ``acks`` ``{"+2567...": "buffered"|"failed"|"failed_tmp"}`` per recipient (default success).
"""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote_from_bytes

import requests
from flask import Flask, Response, request
from requests import Response as HttpResponse  # the class's ``requests`` field hides the module

from convo.devkit.devserver import FakeServer

__all__ = ["FakeKannel", "create_fake_kannel_app", "fill_escape_codes", "start_fake_kannel"]

ACKS = {
    "success": (202, "0: Accepted for delivery"),
    "buffered": (202, "3: Queued for later delivery"),
    "failed": (403, "Not routable. Do not try again."),
    "failed_tmp": (503, "Temporal failure, try again later."),
}


def _enc(b: bytes | str) -> str:
    """octstr_url_encode: everything but alphanumerics and a few marks percent-encoded, space as %20."""
    return quote_from_bytes(b.encode() if isinstance(b, str) else b, safe="-_.!~*'()")


def fill_escape_codes(pattern: str, msg: dict) -> str:
    """urltrans_fill_escape_codes for the codes the fake knows; others stay as they are (``%x``)."""
    out, i = [], 0
    words = msg.get("text", "").split()
    while i < len(pattern):
        c = pattern[i]
        if c != "%" or i + 1 >= len(pattern):
            out.append(c)
            i += 1
            continue
        code = pattern[i + 1]
        if code == "p":
            out.append(_enc(msg.get("sender", "")))
        elif code == "P":
            out.append(_enc(msg.get("receiver", "")))
        elif code == "a":
            out.append("+".join(_enc(w) for w in words))
        elif code == "k":
            out.append(_enc(words[0]) if words else "")
        elif code == "b":
            out.append(_enc(msg.get("bytes", b"")))
        elif code == "c":
            out.append(str(msg.get("coding", 0)))
        elif code == "C":
            out.append(msg.get("charset", "UTF-8"))
        elif code == "d":
            out.append(str(msg.get("dlr", "")))
        elif code == "A":
            out.append(_enc(msg.get("answer", "")))
        elif code == "I":
            out.append(msg.get("uuid", ""))
        elif code == "T":
            out.append(str(int(msg.get("time", time.time()))))
        elif code == "t":
            out.append(time.strftime("%Y-%m-%d+%H:%M:%S", time.gmtime(msg.get("time", time.time()))))
        elif code == "%":
            out.append("%")
        else:
            out.append("%" + code)
        i += 2
    return "".join(out)


@dataclass
class FakeKannel:
    username: str = "convo"
    password: str = "kannel-pass"
    get_url: str | None = None                   #: the sms-service get-url (MO messages)
    acks: dict[str, str] = field(default_factory=dict)
    messages: list[dict] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)
    fetched: list[dict] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.lock = threading.Lock()

    def accepted(self) -> list[dict]:
        with self.lock:
            return [m for m in self.messages if m["ack"] in ("success", "buffered")]

    def sendsms(self) -> Response:
        args = request.values
        with self.lock:
            self.requests.append(dict(args))
        user = args.get("username") or args.get("user")
        pw = args.get("password") or args.get("pass")
        if user != self.username or pw != self.password:
            return self._reply(403, "Authorization failed for sendsms")
        to = args.get("to")
        if to is None:
            return self._reply(400, "Missing receiver number, rejected")
        if to == "":
            return self._reply(400, "Empty receiver number not allowed, rejected")
        ack = self.acks.get(to, "success")
        text = args.get("text", "")
        msg = {"to": to, "from": args.get("from"), "text": text, "charset": args.get("charset"),
               "coding": args.get("coding"), "smsc": args.get("smsc"), "dlr_mask": int(args.get("dlr-mask") or 0),
               "dlr_url": args.get("dlr-url"), "ack": ack, "uuid": str(uuid.uuid4())}
        with self.lock:
            self.messages.append(msg)
        return self._reply(*ACKS[ack])

    @staticmethod
    def _reply(status: int, body: str) -> Response:
        return Response(body, status=status, headers={"Content-type": "text/html", "Pragma": "no-cache",
                                                      "Cache-Control": "no-cache"})

    def dlr(self, to: str, dlr_type: int, answer: str = "", *, index: int = -1) -> HttpResponse | None:
        """The SMSC reported on the message to ``to`` (the last one by default): fetch its dlr-url."""
        m = [m for m in self.messages if m["to"] == to][index]
        if not m["dlr_url"] or not (m["dlr_mask"] & dlr_type):
            return None
        if not answer:
            stat = {1: "DELIVRD", 2: "UNDELIV", 16: "REJECTD"}.get(dlr_type, "ENROUTE")
            answer = f"id:{m['uuid'][:10]} sub:001 dlvrd:00{int(dlr_type == 1)} stat:{stat} err:000 text:"
        url = fill_escape_codes(m["dlr_url"], {"dlr": dlr_type, "answer": answer, "uuid": m["uuid"],
                                               "sender": m["to"], "receiver": m["from"] or ""})
        r = requests.get(url, timeout=10)
        with self.lock:
            self.fetched.append({"url": url, "status": r.status_code, "body": r.text})
        return r

    def mo(self, sender: str, text: str, receiver: str = "22384", *, coding: int = 0, mo_recode: bool = True,
           mo_uuid: str | None = None) -> HttpResponse:
        """A phone texts ``receiver`` over the operator's bind: Kannel fetches the get-url.

        ``coding=2`` is a UCS-2 message; with ``mo_recode`` (smsbox ``mo-recode = true``) Kannel recodes it
        to UTF-8 (coding 0, charset UTF-8) before filling the URL, else ``%b`` carries UTF-16BE bytes."""
        if coding == 2 and mo_recode:
            coding = 0
        data = text.encode("utf-16-be") if coding == 2 else text.encode("utf-8")
        msg = {"sender": sender, "receiver": receiver, "text": text, "bytes": data, "coding": coding,
               "charset": "UTF-16BE" if coding == 2 else "UTF-8", "uuid": mo_uuid or str(uuid.uuid4()),
               "time": time.time()}
        assert self.get_url is not None, "set FakeKannel.get_url (the sms-service get-url) first"
        url = fill_escape_codes(self.get_url, msg)
        r = requests.get(url, timeout=10)
        with self.lock:
            self.fetched.append({"url": url, "status": r.status_code, "body": r.text})
            if r.status_code == 200 and r.text:
                self.replies.append(r.text)            # Kannel would text this back to the phone
        return r


def create_fake_kannel_app(**settings) -> Flask:
    fake = FakeKannel(**settings)
    app = Flask("convo.devkit.fake_kannel")
    app.fake = fake  # type: ignore[attr-defined]
    app.add_url_rule("/cgi-bin/sendsms", "sendsms", fake.sendsms, methods=["GET", "POST"])
    return app


class FakeKannelServer(FakeServer):
    fake: FakeKannel

    def __init__(self, app: Flask):
        super().__init__(app)
        self.sendsms_url = f"{self.url}/cgi-bin/sendsms"


def start_fake_kannel(**settings) -> FakeKannelServer:
    """The fake smsbox on a free local port, in a thread (``url``, ``sendsms_url``, ``fake``, ``stop()``)."""
    return FakeKannelServer(create_fake_kannel_app(**settings))
