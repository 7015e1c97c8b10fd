"""Gateway callbacks: ``/gateways/<gateway>/...``. Parse and hand to the engine.

Authentication (IP allow-list, ``?token=``) runs before every ``/gateways/`` request in
:func:`convo.web._protect_callbacks`.
"""
from __future__ import annotations

import json
import logging
import time

from flask import Blueprint, request
from redis.exceptions import RedisError

from convo import metrics
from convo.engine import Inbound
from convo.security import redact_ussd_text
from convo.web import plain, services
from gateways import africastalking as at_in
from gateways.base import BadCallback

log = logging.getLogger(__name__)
bp = Blueprint("gateways", __name__, url_prefix="/gateways")
_AT_USSD = {True: metrics.HOPS.labels("ussd", "africastalking", "end"),
            False: metrics.HOPS.labels("ussd", "africastalking", "continue")}
_USSD_SECONDS = metrics.HOP_SECONDS.labels("ussd")


@bp.errorhandler(BadCallback)
def _bad_callback(e: BadCallback):
    metrics.BAD_REQUESTS.labels(request.endpoint or "?", "400").inc()
    return plain(f"bad request: {e}", 400)


@bp.post("/africastalking/ussd")
def at_ussd_session():
    started = time.perf_counter()
    s = services()
    req = at_in.parse_ussd(request.form, s.settings.default_region)
    reply = s.engine.handle(Inbound("ussd", "africastalking", req.session_id, req.phone, req.text,
                                    req.service_code))
    if log.isEnabledFor(logging.DEBUG):                     # PINs redacted by their position in `text`
        log.debug("ussd hop %s text=%r", req.session_id, redact_ussd_text(req.text, reply.secret_positions))
    _AT_USSD[reply.end].inc()
    _USSD_SECONDS.observe(time.perf_counter() - started)
    return plain(at_in.render_ussd(reply.text, reply.end))


@bp.post("/africastalking/ussd/events")
def at_ussd_event():
    s = services()
    ev = at_in.parse_ussd_event(request.form, s.settings.default_region)
    metrics.USSD_EVENTS.labels(ev.status).inc()
    record = {k: v for k, v in ev.__dict__.items()}
    record["at"] = int(time.time())
    pipe = s.redis.pipeline(transaction=False)
    pipe.lpush("convo:ussd-events", json.dumps(record))
    pipe.ltrim("convo:ussd-events", 0, 9999)
    pipe.execute()
    log.info("ussd session %s ended: %s after %s hops", ev.session_id, ev.status, ev.hops)
    return plain("OK")


#: seconds an inbound SMS is claimed while it is handled (convo.web.gateways.at_sms_inbound)
SMS_CLAIM_SECONDS = 60


def _retry_later(why: str):
    from convo.web.ops import RETRY_AFTER

    r = plain(f"service unavailable: {why}, try again later", 503)
    r.headers["Retry-After"] = str(RETRY_AFTER)
    return r


@bp.post("/africastalking/sms")
def at_sms_inbound():
    """An incoming SMS: one reply per message id, written to the outbox (never sent inline)."""
    from convo.outbox import enqueue

    s = services()
    sms = at_in.parse_inbound_sms(request.form, s.settings.default_region)
    seen = f"convo:sms-in:{{{sms.id}}}"
    # claimed for SMS_CLAIM_SECONDS while handled, "done" for two days after: a claim left by an attempt
    # that broke off (Redis or the database gone mid-request) runs out, and AT's next retry is answered
    if not s.redis.set(seen, "handling", nx=True, ex=SMS_CLAIM_SECONDS):
        if s.redis.get(seen) == b"handling":               # another attempt is on it, or broke off: 503
            return _retry_later("this message is being handled")
        return plain("OK (duplicate)")                      # AT delivered this message before
    try:
        reply = s.engine.handle(Inbound("sms", "africastalking", sms.id, sms.phone, sms.text))
        if reply.text:
            enqueue(s.db, idempotency_key=f"reply:at-sms:{sms.id}", to=sms.phone, body=reply.text,
                    kind="reply", link_id=sms.link_id, sender_id=(sms.to or None) if sms.link_id else None,
                    requested_by_client=True,
                    region=s.settings.default_region)
        s.redis.set(seen, "done", ex=2 * 86400)
    except BaseException:
        try:
            s.redis.delete(seen)                            # let AT's retry try again
        except RedisError:
            pass                                            # the claim runs out by itself
        raise
    metrics.HOPS.labels("sms", "africastalking", "reply" if reply.text else "silent").inc()
    return plain("OK")


@bp.post("/africastalking/delivery")
def at_delivery_report():
    from convo.outbox import apply_delivery_report
    from gateways.africastalking import parse_delivery_report

    result = apply_delivery_report(services().db, parse_delivery_report(request.form))
    return plain("OK (unknown id, recorded)" if result.outcome == "unknown" else "OK")


@bp.post("/africastalking/optout")
def at_optout():
    from convo.outbox import apply_opt_out
    from gateways.africastalking import parse_optout

    s = services()
    apply_opt_out(s.db, parse_optout(request.form, region=s.settings.default_region))
    return plain("OK")
