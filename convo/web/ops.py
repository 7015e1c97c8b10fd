"""Operations endpoints: health and Prometheus metrics; Redis or the database down answered 503, never 500."""
from __future__ import annotations

import logging
import threading
import time
import weakref

from flask import Blueprint, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError
from sqlalchemy import exc as sa_exc

from convo.mifos import notify_reads as reads
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


#: seconds one process keeps the answer of its Mifos X probe (load balancers poll /healthz often)
MIFOS_PROBE_TTL = 15.0
_probe_lock = threading.Lock()
_probe: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # client -> (when, state)


def _mifos_state(s) -> dict:
    """``GET /offices`` through the service's own client (its timeout and circuit breaker), at most once
    per ``MIFOS_PROBE_TTL`` seconds per process: reachable or why not, the breaker, how long it took."""
    from convo.mifos.client import MifosError, MifosUnavailable

    client = s.mifos
    with _probe_lock:
        cached = _probe.get(client)
        if cached and time.monotonic() - cached[0] < MIFOS_PROBE_TTL:
            return {**cached[1], "breaker": client.breaker.state}
        start = time.monotonic()
        state: dict[str, bool | str | float | None]
        try:
            reads.offices(client)
            state = {"reachable": True, "error": None}
        except MifosUnavailable as e:
            state = {"reachable": False, "error": f"{e.reason}: {str(e)[:200]}"}
        except MifosError as e:             # an answer (e.g. 403: the user may not list offices): reachable
            state = {"reachable": True, "error": f"{e.status}: {str(e)[:200]}"}
        except Exception as e:  # noqa: BLE001 - health reports, never raises
            state = {"reachable": False, "error": f"{type(e).__name__}: {str(e)[:200]}"}
        state["seconds"] = round(time.monotonic() - start, 3)
        _probe[client] = (time.monotonic(), state)
        return {**state, "breaker": client.breaker.state}


@bp.get("/livez")
def livez():
    """Liveness: the process answers requests (no dependency is asked). Restart the container when this
    fails; use ``/healthz`` to decide whether to send it traffic."""
    return jsonify({"ok": True}), 200


@bp.get("/healthz")
def healthz():
    """Readiness: 200 when every dependency answers, else 503; ``failing`` names the ones that do not.

    ``redis``: reachable; ``database``: reachable and at the schema the code needs
    (``schema.revision`` vs ``schema.head``; behind means ``convo db upgrade`` was not run);
    ``flows_version`` and ``flows_refused`` (an edited flows folder that failed its checks).
    ``mifos``: reachable (``GET /offices``, at most every 15 s), its circuit ``breaker`` and the probe's
    ``seconds``. Mifos X down does not make the service unready (``degraded`` names it, status stays
    200): callers still get last known figures or "try again later", which no other instance does better.
    """
    s = services()
    failing = []
    try:
        s.redis.ping()
        redis_state = "ok"
    except Exception as e:  # noqa: BLE001 - health reports, never raises
        redis_state = f"unavailable: {type(e).__name__}: {e}"
        failing.append("redis")
    from convo.store.db import expected_heads, schema_revision

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
    try:
        mifos = _mifos_state(s)
    except Exception as e:  # noqa: BLE001 - e.g. no client configured
        mifos = {"reachable": False, "error": f"{type(e).__name__}: {e}", "breaker": None, "seconds": None}
    degraded = [] if mifos["reachable"] and mifos["breaker"] == "closed" else ["mifos"]
    if lib.refused:
        degraded.append("flows")
    body = {"ok": not failing, "failing": failing, "degraded": degraded, "mifos": mifos,
            "redis": redis_state, "database": db_state,
            "schema": {"revision": revision, "head": head},
            "flows_version": lib.current.version,
            "flows_error": str(lib.last_error) if lib.last_error else None,
            # an edited flows folder that failed lint or its conversation tests: callers keep flows_version
            "flows_refused": lib.refused, "flows_checking": lib.checking}
    return jsonify(body), 503 if failing else 200


@bp.get("/metrics")
def metrics():
    """Every process's metrics (multiprocess mode under ``convo serve``) and the outbox backlog read from
    the database at this scrape (:mod:`convo.metrics`)."""
    try:
        engine = services().db
    except Exception:  # noqa: BLE001 - metrics of the process still answer
        engine = None
    try:
        redis = services().redis if services().settings.flow_stats else None
    except Exception:  # noqa: BLE001
        redis = None
    return Response(exposition_for(engine, redis), mimetype=CONTENT_TYPE_LATEST)


def exposition_for(engine=None, redis=None) -> bytes:
    """``/metrics``: the processes' metrics and the scrape-time figures of ``engine`` (outbox backlog, month
    costs) and ``redis`` (drop-off counts)."""
    from convo.dialog.stats import FlowStateCollector
    from convo.metrics import exposition
    from convo.notify.costs import CostCollector
    from convo.notify.outbox import OutboxCollector

    collectors = []
    if engine is not None:
        collectors += [OutboxCollector(engine), CostCollector(engine)]
    if redis is not None:
        collectors.append(FlowStateCollector(redis))
    return exposition(*collectors)
