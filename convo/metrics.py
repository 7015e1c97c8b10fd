"""Prometheus metrics (prometheus_client): every metric of the service is defined here.
Labels never carry phone numbers or input.

Several processes: ``convo serve`` runs granian workers, each with its own counters. With
``PROMETHEUS_MULTIPROC_DIR`` set (``convo serve`` sets and empties it before the workers start: granian
has no child-exit hook to clean up after a worker) every process writes its values to files there and
``/metrics`` sums them (:func:`exposition`), so a scrape tells the truth whichever process answers it.
Gauges say how they combine across processes (``multiprocess_mode``); a dead worker's "live" gauges are
dropped at the next scrape.

The worker (``convo worker``: sends, repayments from savings, reminder runs) is another process,
usually another container: it serves its own ``/metrics`` on ``--metrics-port`` (``CONVO_WORKER_METRICS_PORT``).
The outbox backlog (queued, due, oldest) is read from the database at each scrape of the app.
"""
from __future__ import annotations

import logging
import os
import re

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger(__name__)

# ---- hops (the app)
HOPS = Counter("convo_hops_total", "Inbound hops answered", ["channel", "gateway", "result"])
HOP_SECONDS = Histogram("convo_hop_seconds", "Time to answer one hop", ["channel"],
                        buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2, 5))
BAD_REQUESTS = Counter("convo_bad_requests_total", "Callbacks refused with 4xx", ["endpoint", "status"])
USSD_EVENTS = Counter("convo_ussd_session_events_total", "End-of-session notifications", ["status"])

# ---- Mifos X (app and worker; convo/mifos/client.py)
MIFOS_REQUEST_SECONDS = Histogram(
    "convo_mifos_request_seconds", "Mifos X call latency by endpoint template", ["method", "endpoint"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30))
MIFOS_ERRORS = Counter("convo_mifos_errors_total", "Failed Mifos X calls by kind", ["endpoint", "kind"])
#: each process has its own breaker: the worst state of the live processes
MIFOS_BREAKER_STATE = Gauge("convo_mifos_breaker_state",
                            "Circuit breaker per Mifos X server: 0 closed, 1 half-open, 2 open", ["server"],
                            multiprocess_mode="livemax")
MIFOS_BREAKER_OPENED = Counter("convo_mifos_breaker_opened_total", "Times the breaker opened", ["server"])

# ---- the worker
OUTBOX_RESULTS = Counter("convo_outbox_results_total",
                         "Send attempts recorded by the worker, per gateway and status "
                         "(sent; queued = to be retried; failed = given up)", ["gateway", "status"])
TRANSFERS = Counter("convo_transfers_total", "Repayments from savings finished, by outcome", ["outcome"])
REMINDER_RUNS = Counter("convo_reminder_runs_total", "Reminder runs, by result (ok, failed, dry_run)", ["result"])
REMINDERS = Counter("convo_reminders_total", "Reminders found by runs, by what became of them "
                    "(written, duplicate, suppressed = opted out)", ["outcome"])
REMINDER_MIFOS_CALLS = Counter("convo_reminder_mifos_calls_total", "Mifos X calls made by reminder runs")
REMINDER_LAST_RUN = Gauge("convo_reminder_last_run_timestamp_seconds",
                          "When the last reminder run finished (Unix time)", multiprocess_mode="max")

# ---- read from the database at each scrape of the app (OutboxCollector)
OUTBOX_QUEUED = "convo_outbox_queued"
OUTBOX_DUE = "convo_outbox_due"
OUTBOX_OLDEST_AGE = "convo_outbox_oldest_age_seconds"
OUTBOX_SCRAPE_ERROR = "convo_outbox_scrape_error"
# this month's sending costs (CostCollector, the figures of `convo report costs`)
SMS_MONTH_MESSAGES = "convo_sms_month_messages"
SMS_MONTH_SEGMENTS = "convo_sms_month_segments"
SMS_MONTH_COST = "convo_sms_month_cost"
#: names produced at scrape time from the database, not registered in a process
SCRAPE_NAMES = frozenset({OUTBOX_QUEUED, OUTBOX_DUE, OUTBOX_OLDEST_AGE, OUTBOX_SCRAPE_ERROR,
                          SMS_MONTH_MESSAGES, SMS_MONTH_SEGMENTS, SMS_MONTH_COST})

#: every metric name the service exposes (ops/grafana-dashboard.json may use only these; tests check it)
NAMES = frozenset({
    "convo_hops_total", "convo_hop_seconds", "convo_bad_requests_total", "convo_ussd_session_events_total",
    "convo_mifos_request_seconds", "convo_mifos_errors_total", "convo_mifos_breaker_state",
    "convo_mifos_breaker_opened_total", "convo_outbox_results_total", "convo_transfers_total",
    "convo_reminder_runs_total", "convo_reminders_total", "convo_reminder_mifos_calls_total",
    "convo_reminder_last_run_timestamp_seconds", "convo_staff_auth_refused_total",
    OUTBOX_QUEUED, OUTBOX_DUE, OUTBOX_OLDEST_AGE, OUTBOX_SCRAPE_ERROR,
    SMS_MONTH_MESSAGES, SMS_MONTH_SEGMENTS, SMS_MONTH_COST,
})


def multiproc_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


_LIVE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def _forget_dead_processes(path: str) -> None:
    """Drop the live gauges of worker processes that exited (granian tells no one; their counters stay)."""
    from prometheus_client import multiprocess

    for name in os.listdir(path):
        m = _LIVE_FILE.match(name)
        if not m:
            continue
        pid = int(m.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)
        except PermissionError:
            pass


def exposition(*collectors) -> bytes:
    """The text of ``/metrics``: every process's metrics (summed in multiprocess mode), then what the
    scrape-time ``collectors`` read now (the outbox backlog and month costs from the database, the drop-off
    counts from Redis: :func:`convo.web.ops.scrape_collectors`)."""
    path = multiproc_dir()
    if path:
        from prometheus_client import multiprocess

        _forget_dead_processes(path)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
    else:
        registry = REGISTRY
    text = generate_latest(registry)
    if collectors:
        scrape = CollectorRegistry(auto_describe=False)
        for collector in collectors:
            scrape.register(collector)
        text += generate_latest(scrape)
    return text
