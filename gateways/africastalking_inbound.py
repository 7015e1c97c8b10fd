"""Africa's Talking inbound callbacks: USSD sessions and their end-of-session events, incoming SMS.

(Outbound SMS, delivery reports and opt-outs are in :mod:`gateways.africastalking`.)

AT POSTs form fields ``sessionId``, ``serviceCode``, ``phoneNumber``,
``networkCode`` and ``text`` (every input of the session so far, joined with
``*``) and expects ``text/plain`` starting ``CON `` (wait for more input) or
``END `` (close the session). When the session closes AT may POST a
notification (``sessionId``, ``status``, ``input``, ``hopsCount``, ...);
its ``input`` repeats everything the caller typed, PINs included, so it is
never stored.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

from gateways.base import BadCallback

MAX_TEXT = 500          # characters of cumulative input a session may carry
_SESSION_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
_CODE_RE = re.compile(r"^[*#0-9]{1,32}$")
_NETWORK_RE = re.compile(r"^[0-9]{0,10}$")
EVENT_STATUSES = {"Success", "Incomplete", "Failed"}


@dataclass(frozen=True)
class UssdRequest:
    session_id: str
    service_code: str
    phone: str            # E.164
    network_code: str
    text: str


@dataclass(frozen=True)
class UssdEvent:
    session_id: str
    status: str
    phone: str | None
    service_code: str | None
    network_code: str | None
    hops: int | None
    duration_ms: int | None
    cost: str | None
    error: str | None


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
    try:
        return int(str(v))
    except ValueError:
        raise BadCallback(f"field '{name}' must be a whole number") from None


def parse_ussd(form: Mapping, region: str = "KE") -> UssdRequest:
    """Validate one session callback; raises :class:`BadCallback` with the reason."""
    from convo.phone import InvalidPhone, normalize

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
    from convo.phone import InvalidPhone, normalize

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
    return UssdEvent(sid, status, phone or None, _get(form, "serviceCode", required=False),
                     _get(form, "networkCode", required=False), _int(form, "hopsCount"),
                     _int(form, "durationInMillis"), (_get(form, "cost", required=False) or None),
                     error[:200] if error else None)


@dataclass(frozen=True)
class InboundSms:
    id: str               # AT's message id: the same id twice is one message delivered twice
    phone: str            # E.164 of the sender
    to: str               # the short code or number it was sent to
    text: str
    link_id: str | None   # premium (on-demand) services: reply with this linkId
    network_code: str
    date: str | None


MAX_SMS_TEXT = 1600       # 10 concatenated segments; longer is not a real SMS


def parse_inbound_sms(form: Mapping, region: str = "KE") -> InboundSms:
    """Validate an incoming SMS callback (from, to, text, date, id, linkId, networkCode)."""
    from convo.phone import InvalidPhone, normalize

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
    if link and len(link) > 128:
        raise BadCallback("field 'linkId' is too long")
    network = (_get(form, "networkCode", required=False) or "").strip()
    if not _NETWORK_RE.match(network):
        raise BadCallback("field 'networkCode' must be digits")
    date = _get(form, "date", required=False)
    return InboundSms(mid, phone, to, text, link, network, date[:40] if date else None)
