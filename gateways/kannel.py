"""Kannel (routes-file type ``kannel``): an operator's SMPP bind through Kannel's smsbox HTTP interface.

Every string and code below is Kannel's own (user guide ``doc/userguide/userguide.xml``: "Sending SMS",
"Delivery reports", sms-service escape codes; ``gw/smsbox.c``, ``gw/urltrans.c``):

* send: ``GET {sendsms_url}?username&password&from&to&text&charset=UTF-8&coding&dlr-mask&dlr-url[&smsc]``;
  Kannel answers ``202 "0: Accepted for delivery"`` or ``202 "3: Queued for later delivery"`` (sent),
  ``403 "Authorization failed for sendsms"`` / ``403 "Not routable. Do not try again."`` and
  ``503 "Temporal failure, try again later."`` (another gateway may take it), ``400`` (a bad request:
  final). Kannel gives no message id, so the id is ours and travels in the ``dlr-url``.
* delivery reports (``/gateways/<name>/dlr``): Kannel fetches our ``dlr-url`` with ``%d`` (1 delivered,
  2 failed, 4 buffered, 8 submitted, 16 rejected) and ``%A`` (the SMSC's reply) filled in.
* inbound (``/gateways/<name>/sms``): an sms-service whose ``get-url`` is
  ``http://<convo>/gateways/<name>/sms?token=<token>&from=%p&to=%P&text=%b&charset=%C&id=%I&ts=%T``
  (``%b`` is the message as sent, ``%C`` its charset, ``%I`` Kannel's message id: a retry carries the
  same one). We answer an empty body: with ``omit-empty = true`` / ``max-messages = 0`` Kannel sends no
  reply of its own; ours goes through the outbox.

Config keys: ``sendsms_url`` (e.g. ``http://kannel:13013/cgi-bin/sendsms``), ``username``, ``password``,
``from``; optional ``smsc`` (smsc-id), ``dlr_mask`` (default 31 = all of 1+2+4+8+16), ``dlr_url``
(default ``<public_url>/gateways/<name>/dlr?token=<callback_token>``), ``timeout``.
"""
from __future__ import annotations

import codecs
import hashlib
import logging
import re
import time
from typing import Mapping, Sequence
from urllib.parse import parse_qs, quote, urlsplit

from gateways.base import (
    BadCallback,
    ConfigError,
    DeliveryUpdate,
    Gateway,
    InboundSms,
    OutgoingSms,
    SendResult,
    WebRequest,
)

__all__ = ["DLR_STATUS", "KannelGateway"]

#: Kannel's DLR type (%d) -> outbox status (user guide, "Delivery reports"); 32 (intermediate) is recorded only
DLR_STATUS = {1: "delivered", 2: "failed", 4: "buffered", 8: "submitted", 16: "rejected"}
#: characters that may appear in a dlr-url besides Kannel's escape codes: a percent-encoded byte such as
#: ``%C3`` would be read as the escape ``%C`` (gw/urltrans.c, urltrans_fill_escape_codes)
_URL_SAFE = re.compile(r"^[A-Za-z0-9._~-]*$")
MAX_SMS_TEXT = 1600


class KannelGateway(Gateway):
    """Kannel smsbox; see the module docstring."""

    type = "kannel"
    capabilities = frozenset({"sms_in", "sms_out", "delivery"})

    def __init__(self, name: str, config: Mapping | None = None, *, region: str = "KE"):
        super().__init__(name, config, region=region)
        self.sendsms_url = self.require("sendsms_url")
        self.username, self.password = self.require("username"), self.require("password")
        self.from_ = self.require("from")
        self.smsc = self.option("smsc")
        self.dlr_mask = int(self.option("dlr_mask", 31))
        self.timeout = float(self.option("timeout", 10.0))
        self.dlr_url = self.option("dlr_url") or self._default_dlr_url()
        if not self.dlr_url:
            logging.getLogger(__name__).warning("gateway %r: no public_url (or dlr_url): Kannel will not report "
                                                "delivery, messages stay 'sent'", name)
        self._id_prefix = re.sub(r"[^A-Za-z0-9._~-]", "_", name)
        self._http = None

    def _default_dlr_url(self) -> str | None:
        base = self.option("public_url")
        if not base:
            return None
        token = str(self.option("callback_token") or "")
        if not _URL_SAFE.match(token):
            raise ConfigError(f"gateway {self.name!r} (type kannel): the callback token must be URL-safe "
                              "(letters, digits, . _ ~ -) to travel in a Kannel dlr-url, or set 'dlr_url'")
        return f"{str(base).rstrip('/')}/gateways/{self.name}/dlr?" + (f"token={token}&" if token else "")

    # -- outbound
    @property
    def http(self):
        if self._http is None:
            import requests

            self._http = requests.Session()
        return self._http

    def message_id(self, m: OutgoingSms) -> str:
        """Our id for ``m`` (Kannel has none): URL-safe, so it can sit in the dlr-url as is."""
        h = hashlib.sha256((m.idempotency_key or str(m.id)).encode()).hexdigest()[:8]
        return f"{self._id_prefix}.{m.id}.{h}"

    def send(self, messages: Sequence[OutgoingSms], *, deadline: float | None = None) -> list[SendResult]:
        return [SendResult.retry("not sent: lease deadline")
                if deadline is not None and time.monotonic() >= deadline else self._send_one(m)
                for m in messages]

    def _send_one(self, m: OutgoingSms) -> SendResult:
        import requests

        pid = self.message_id(m)
        params = {"username": self.username, "password": self.password, "from": m.sender_id or self.from_,
                  "to": m.to, "text": m.body, "charset": "UTF-8", "coding": "2" if m.encoding == "UCS-2" else "0"}
        if self.smsc:
            params["smsc"] = self.smsc
        if self.dlr_url and self.dlr_mask:
            sep = "" if self.dlr_url.endswith(("?", "&")) else ("&" if "?" in self.dlr_url else "?")
            params["dlr-mask"] = str(self.dlr_mask)
            params["dlr-url"] = f"{self.dlr_url}{sep}id={pid}&status=%d&answer=%A&ts=%T"
        try:
            r = self.http.get(self.sendsms_url, params=params, timeout=self.timeout)
        except requests.RequestException as e:
            return SendResult.retry(f"Kannel unreachable: {type(e).__name__}", failover=True)
        text = r.text.strip()[:200]
        if r.status_code in (200, 202):
            queued = text.startswith("3:")
            return SendResult("sent", provider_id=pid, parts=m.segments, provider_status=(text or "Accepted")[:40],
                              status_code=3 if queued else 0)
        if r.status_code == 400:                                   # "Missing receiver number, rejected"...
            return SendResult.failed(f"Kannel {r.status_code}: {text}", status_code=r.status_code)
        # 403 authorization / not routable, 5xx temporal failure or "Sending failed.": another route may do
        return SendResult.retry(f"Kannel {r.status_code}: {text}", status_code=r.status_code, failover=True)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    # -- inbound
    def inbound(self):
        return {"sms": self._sms, "dlr": self._dlr}

    def methods(self, event: str) -> tuple[str, ...]:
        """Kannel fetches get-url and dlr-url with GET (POST accepted too)."""
        return ("GET", "POST")

    def ack(self, event: str, parsed) -> tuple[str, str]:
        return "", "text/plain"           # an empty answer: Kannel sends no SMS of its own (omit-empty)

    @staticmethod
    def _params(req: WebRequest) -> dict[str, bytes]:
        """Query (or form) parameters as raw bytes: ``%b`` may be UTF-16BE, so nothing is decoded as UTF-8 yet."""
        out: dict[str, bytes] = {}
        # the URL may come back as an IRI (percent-encoded UTF-8 shown as characters): encode those again
        query = quote(urlsplit(req.url).query, safe="!#$%&'()*+,/:;=?@[]~")
        for k, vs in parse_qs(query, keep_blank_values=True, encoding="latin-1").items():
            out[k] = vs[0].encode("latin-1")
        for source in (req.form, req.args):
            for k in source:
                if k not in out:
                    v = source.get(k)
                    out[k] = v.encode("utf-8") if isinstance(v, str) else bytes(v or b"")
        return out

    def _sms(self, req: WebRequest):
        from convo.text.phone import InvalidPhone, normalize

        p = self._params(req)
        mid = p.get("id", b"").decode("latin-1").strip()
        if not mid or len(mid) > 100:
            raise BadCallback("missing field 'id' (get-url: id=%I)")
        try:
            phone = normalize(p.get("from", b"").decode("utf-8", "replace"), req.region)
        except InvalidPhone as e:
            raise BadCallback(f"field 'from' is not a phone number: {e}") from None
        charset = (p.get("charset", b"").decode("latin-1").strip() or "UTF-8").upper()
        if charset == "GSM":
            charset = "gsm03.38"                                   # older Kannel names 7-bit "GSM"
        try:
            codecs.lookup(charset)
            text = p.get("text", b"").decode(charset)
        except (LookupError, UnicodeDecodeError, ValueError) as e:
            raise BadCallback(f"field 'text' is not {charset}: {e}") from None
        if len(text) > MAX_SMS_TEXT:
            raise BadCallback(f"field 'text' is longer than {MAX_SMS_TEXT} characters")
        to = p.get("to", b"").decode("utf-8", "replace").strip()[:32] or None
        return InboundSms(id=mid, phone=phone, text=text, gateway=self.name, to=to,
                          date=p.get("ts", b"").decode("latin-1")[:40] or None)

    def _dlr(self, req: WebRequest):
        p = self._params(req)
        pid = p.get("id", b"").decode("latin-1").strip()
        if not pid or len(pid) > 100 or not _URL_SAFE.match(pid):
            raise BadCallback("missing or malformed field 'id'")
        raw = p.get("status", b"").decode("latin-1").strip()
        if not raw.isdigit():
            raise BadCallback("field 'status' must be Kannel's DLR type (%d)")
        code = int(raw)
        answer = p.get("answer", b"").decode("utf-8", "replace")[:300] or None
        status = DLR_STATUS.get(code)
        return DeliveryUpdate(gateway=self.name, provider_id=pid, provider_status=str(code), status=status,
                              failure_reason=answer if status in ("failed", "rejected") else None,
                              raw={"status": code, "answer": answer})
