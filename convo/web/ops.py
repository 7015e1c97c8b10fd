"""Operations endpoints: health and Prometheus metrics."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from convo.web import services

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz():
    s = services()
    try:
        s.redis.ping()
        redis_ok = True
    except Exception:  # noqa: BLE001 - health reports, never raises
        redis_ok = False
    lib = s.flows
    body = {"ok": redis_ok, "redis": redis_ok, "flows_version": lib.current.version,
            "flows_error": str(lib.last_error) if lib.last_error else None}
    return jsonify(body), 200 if redis_ok else 503


@bp.get("/metrics")
def metrics():
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
