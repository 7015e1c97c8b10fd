"""Gateway callbacks: ``/gateways/<gateway name>/<event>``, one route per event of each configured gateway.

The gateways are the routes file's (``CONVO_ROUTES_FILE``) or, without one, ``africastalking`` from
``CONVO_AT_*`` (:func:`convo.notify.routing.routes_from_settings`). Each gateway's handlers verify and parse a
callback into neutral objects (:mod:`gateways.base`); this module does the same with them for every
gateway: a USSD hop runs the flows and is answered in the gateway's format, an SMS runs the flows once
per ``(gateway, message id)`` and its reply is queued to leave through that same gateway, delivery and
opt-out reports go to :mod:`convo.notify.outbox`.

Authentication (IP allow-list, ``?token=``) runs before every ``/gateways/`` request in
:func:`convo.web._protect_callbacks`; gateways with signatures (Twilio, smsgate) check theirs too.
"""
from __future__ import annotations

import json
import logging
import re
import time
from typing import Mapping, cast

from flask import Blueprint, Response, current_app, request
from redis.exceptions import RedisError

from convo import metrics
from convo.dialog.engine import Inbound
from convo.security import redact_ussd_text
from convo.web import plain, services
from gateways.base import (
    BadCallback,
    DeliveryUpdate,
    Gateway,
    InboundSms,
    OptOutUpdate,
    Unauthorized,
    UssdEvent,
    UssdRequest,
    WebRequest,
)

log = logging.getLogger(__name__)
_USSD_SECONDS = metrics.HOP_SECONDS.labels("ussd")

#: seconds an inbound SMS is claimed while it is handled (see _inbound_sms)
SMS_CLAIM_SECONDS = 60

#: endpoint names of the default Africa's Talking gateway, as before routes files (tests, fuzz, logs)
_AT_ENDPOINTS = {"ussd": "at_ussd_session", "ussd/events": "at_ussd_event", "sms": "at_sms_inbound",
                 "delivery": "at_delivery_report", "optout": "at_optout"}


def endpoint_name(gateway: Gateway, event: str) -> str:
    if gateway.name == "africastalking" and gateway.type == "africastalking" and event in _AT_ENDPOINTS:
        return _AT_ENDPOINTS[event]
    return "gw_" + re.sub(r"[^A-Za-z0-9_]", "_", f"{gateway.name}__{event}")


def blueprint(gateways: dict[str, Gateway]) -> Blueprint:
    """A blueprint with ``POST /gateways/<name>/<event>`` (or the methods the gateway asks for) per event."""
    bp = Blueprint("gateways", __name__, url_prefix="/gateways")
    bp.register_error_handler(BadCallback, _bad_callback)
    bp.register_error_handler(Unauthorized, _unauthorized)
    for name, gw in gateways.items():
        for event in gw.inbound():
            methods = list(getattr(gw, "methods", lambda e: ("POST",))(event))
            bp.add_url_rule(f"/{name}/{event}", endpoint_name(gw, event),
                            _view(name, event), methods=methods)
    return bp


def _bad_callback(e: BadCallback):
    metrics.BAD_REQUESTS.labels(request.endpoint or "?", "400").inc()
    return plain(f"bad request: {e}", 400)


def _unauthorized(e: Unauthorized):
    metrics.BAD_REQUESTS.labels(request.endpoint or "?", "403").inc()
    log.warning("gateway callback refused on %s: %s", request.path, e)
    return plain(f"forbidden: {e}", 403)


def gateways() -> dict[str, Gateway]:
    return current_app.extensions["convo_gateways"]


def web_request(settings) -> WebRequest:
    """The callback as gateway handlers see it; ``url`` rebuilt on ``CONVO_PUBLIC_URL`` when set."""
    form = request.form                      # parses form bodies (then the raw body is not kept)
    body = request.get_data(cache=True)      # JSON and other bodies: the bytes as sent
    if settings.public_url:
        qs = request.query_string.decode("latin-1")
        url = settings.public_url.rstrip("/") + request.path + (f"?{qs}" if qs else "")
    else:
        url = request.url
    return WebRequest(url=url, body=body, form=form, args=request.args,
                      headers=cast(Mapping[str, str], request.headers), method=request.method,
                      region=settings.default_region, remote_addr=request.remote_addr)


def _view(name: str, event: str):
    def view():
        s = services()
        gw = gateways()[name]
        parsed = gw.inbound()[event](web_request(s.settings))
        items = parsed if isinstance(parsed, list) else [parsed]
        note = None
        for item in items:
            if isinstance(item, UssdRequest):
                return _ussd(gw, item)
            got = _apply(gw, item)
            note = "retry" if "retry" in (note, got) else got or note
        body, ctype = gw.ack(event, parsed)
        if note == "retry":
            return _retry_later("this message is being handled")
        if note and ctype == "text/plain" and body == "OK":
            body = f"OK ({note})"
        return Response(body, status=200, mimetype=ctype)

    view.__name__ = re.sub(r"\W", "_", f"{name}_{event}")
    return view


def _apply(gw: Gateway, item) -> str | None:
    """Hand one parsed object on; returns a note for the answer ("duplicate", "unknown id, recorded", "retry")."""
    s = services()
    if item is None:
        return None
    if isinstance(item, InboundSms):
        return _inbound_sms(gw, item)
    if isinstance(item, DeliveryUpdate):
        from convo.notify.outbox import apply_delivery_report

        result = apply_delivery_report(s.db, item)
        return "unknown id, recorded" if result.outcome == "unknown" else None
    if isinstance(item, OptOutUpdate):
        from convo.notify.outbox import apply_opt_out

        apply_opt_out(s.db, item)
        return None
    if isinstance(item, UssdEvent):
        metrics.USSD_EVENTS.labels(item.status).inc()
        record = dict(item.__dict__, at=int(time.time()), gateway=gw.name)
        pipe = s.redis.pipeline(transaction=False)
        pipe.lpush("convo:ussd-events", json.dumps(record))
        pipe.ltrim("convo:ussd-events", 0, 9999)
        pipe.execute()
        log.info("ussd session %s ended: %s after %s hops", item.session_id, item.status, item.hops)
        return None
    raise TypeError(f"gateway {gw.name!r} returned {type(item).__name__}, not a gateways.base object")


def _ussd(gw: Gateway, req: UssdRequest):
    return plain(answer_ussd(services(), gw, req))


def answer_ussd(svc, gw: Gateway, req: UssdRequest) -> str:
    """One USSD hop, answered in the gateway's format: the engine, the DEBUG line (PINs redacted), the
    hop metrics. Shared by the Flask view and the lean entry (:mod:`convo.web.fast`), so both count and
    log a hop alike."""
    started = time.perf_counter()
    reply = svc.engine.handle(Inbound("ussd", gw.name, req.session_id, req.phone, req.text, req.service_code))
    if log.isEnabledFor(logging.DEBUG):                     # PINs redacted by their position in `text`
        log.debug("ussd hop %s text=%r", req.session_id, redact_ussd_text(req.text, reply.secret_positions))
    metrics.HOPS.labels("ussd", gw.name, "end" if reply.end else "continue").inc()
    _USSD_SECONDS.observe(time.perf_counter() - started)
    return gw.render_ussd(reply.text, reply.end)


def _retry_later(why: str):
    from convo.web.ops import RETRY_AFTER

    r = plain(f"service unavailable: {why}, try again later", 503)
    r.headers["Retry-After"] = str(RETRY_AFTER)
    return r


def _inbound_sms(gw: Gateway, sms: InboundSms) -> str | None:
    """An incoming SMS: one reply per (gateway, message id), written to the outbox (never sent inline).

    Returns "duplicate" (answered before), "retry" (another attempt is handling it: 503) or None.
    """
    from convo.notify.outbox import enqueue

    s = services()
    legacy = gw.name == "africastalking"          # keys as before routes files: a deploy does not re-answer
    seen = f"convo:sms-in:{{{sms.id}}}" if legacy else f"convo:sms-in:{{{gw.name}:{sms.id}}}"
    # claimed for SMS_CLAIM_SECONDS while handled, "done" for two days after: a claim left by an attempt
    # that broke off (Redis or the database gone mid-request) runs out, and the gateway's next retry is answered
    if not s.redis.set(seen, "handling", nx=True, ex=SMS_CLAIM_SECONDS):
        if s.redis.get(seen) == b"handling":               # another attempt is on it, or broke off: 503
            return "retry"
        return "duplicate"                                 # the gateway delivered this message before
    try:
        reply = s.engine.handle(Inbound("sms", gw.name, sms.id, sms.phone, sms.text))
        if reply.text:
            key = f"reply:at-sms:{sms.id}" if legacy else f"reply:{gw.name}:{sms.id}"
            enqueue(s.db, idempotency_key=key[:200], to=sms.phone, body=reply.text, kind="reply",
                    link_id=sms.link_id, sender_id=(sms.to or None) if sms.link_id else None,
                    gateway=gw.name, requested_by_client=True, region=s.settings.default_region)
        s.redis.set(seen, "done", ex=2 * 86400)
    except BaseException:
        try:
            s.redis.delete(seen)                            # let the gateway's retry try again
        except RedisError:
            pass                                            # the claim runs out by itself
        raise
    metrics.HOPS.labels("sms", gw.name, "reply" if reply.text else "silent").inc()
    return None
