"""Gateway callbacks: ``/gateways/<gateway>/...``. Parse, authenticate, hand to the engine."""
from __future__ import annotations

import json
import logging
import time

from flask import Blueprint, request

from convo import metrics
from convo.engine import Inbound
from convo.web import check_callback_token, plain, services
from gateways import africastalking_ussd as at_ussd
from gateways.base import BadCallback

log = logging.getLogger(__name__)
bp = Blueprint("gateways", __name__, url_prefix="/gateways")


@bp.before_request
def _authenticate():
    return check_callback_token()


@bp.errorhandler(BadCallback)
def _bad_callback(e: BadCallback):
    metrics.BAD_REQUESTS.labels(request.endpoint or "?", "400").inc()
    return plain(f"bad request: {e}", 400)


@bp.post("/africastalking/ussd")
def at_ussd_session():
    started = time.perf_counter()
    s = services()
    req = at_ussd.parse_ussd(request.form, s.settings.default_region)
    reply = s.engine.handle(Inbound("ussd", "africastalking", req.session_id, req.phone, req.text,
                                    req.service_code))
    metrics.HOPS.labels("ussd", "africastalking", "end" if reply.end else "continue").inc()
    metrics.HOP_SECONDS.labels("ussd").observe(time.perf_counter() - started)
    return plain(at_ussd.render_ussd(reply.text, reply.end))


@bp.post("/africastalking/ussd/events")
def at_ussd_event():
    s = services()
    ev = at_ussd.parse_ussd_event(request.form, s.settings.default_region)
    metrics.USSD_EVENTS.labels(ev.status).inc()
    record = {k: v for k, v in ev.__dict__.items()}
    record["at"] = int(time.time())
    pipe = s.redis.pipeline(transaction=False)
    pipe.lpush("convo:ussd-events", json.dumps(record))
    pipe.ltrim("convo:ussd-events", 0, 9999)
    pipe.execute()
    log.info("ussd session %s ended: %s after %s hops", ev.session_id, ev.status, ev.hops)
    return plain("OK")
