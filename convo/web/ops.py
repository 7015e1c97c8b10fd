"""Operations endpoints: health and Prometheus metrics; Redis or the database down answered 503, never 500."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from sqlalchemy import exc as sa_exc

from convo.web import plain, services

log = logging.getLogger(__name__)
bp = Blueprint("ops", __name__)

#: seconds a gateway is asked to wait before delivering again a callback we could not take (Redis down)
RETRY_AFTER = 30


def _unavailable(what: str, e: Exception):
    log.warning("%s unavailable on %s: %s", what, request.path, str(e).splitlines()[0][:300])
    r = plain("service unavailable, try again later", 503)
    r.headers["Retry-After"] = str(RETRY_AFTER)
    return r


@bp.app_errorhandler(RedisError)
def _redis_down(e: RedisError):
    """Redis refused or did not answer in time (``CONVO_REDIS_TIMEOUT``) on any endpoint: 503 with
    ``Retry-After``, so Africa's Talking delivers an inbound SMS again later and nothing is lost.
    (A USSD hop never gets here: the engine answers it ``common.unavailable``.)"""
    return _unavailable("Redis", e)


@bp.app_errorhandler(sa_exc.OperationalError)
@bp.app_errorhandler(sa_exc.TimeoutError)
def _database_down(e: Exception):
    """The database refused, dropped the connection or has no free connection: 503, as for Redis."""
    return _unavailable("database", e)


@bp.get("/healthz")
def healthz():
    """200 when every dependency answers, else 503; ``failing`` names the ones that do not.

    ``redis``: reachable; ``database``: reachable and at the schema the code needs
    (``schema.revision`` vs ``schema.head``; behind means ``convo db upgrade`` was not run).
    Mifos X is not a dependency here: when it is down the service still answers (last known
    figures or "try again later").
    """
    s = services()
    failing = []
    try:
        s.redis.ping()
        redis_state = "ok"
    except Exception as e:  # noqa: BLE001 - health reports, never raises
        redis_state = f"unavailable: {type(e).__name__}: {e}"
        failing.append("redis")
    from convo.db import expected_heads, schema_revision

    head = list(expected_heads())
    revision = None
    try:
        revision = list(schema_revision(s.db))
        db_state = "ok" if revision == head else "schema behind: run convo db upgrade"
    except Exception as e:  # noqa: BLE001
        db_state = f"unavailable: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    if db_state != "ok":
        failing.append("database")
    lib = s.flows
    body = {"ok": not failing, "failing": failing, "redis": redis_state, "database": db_state,
            "schema": {"revision": revision, "head": head},
            "flows_version": lib.current.version,
            "flows_error": str(lib.last_error) if lib.last_error else None,
            # an edited flows folder that failed lint or its conversation tests: callers keep flows_version
            "flows_refused": lib.refused, "flows_checking": lib.checking}
    return jsonify(body), 503 if failing else 200


@bp.get("/metrics")
def metrics():
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
