"""Issue 14 item 7: metrics that tell the truth under several worker processes (prometheus_client
multiprocess mode under `convo serve`), the outbox backlog read at scrape time, the worker's counters,
and a Grafana dashboard whose queries use only metric names that exist."""
from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from convo import metrics
from convo.web.ops import exposition_for
from tests.integration.test_faults import convo_serve

ROOT = Path(__file__).resolve().parents[2]


def samples(text: str, name: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def ussd_hops(gw: str) -> float:
    text = requests.get(f"{gw}/metrics", timeout=10).text
    return sum(v for k, v in samples(text, "convo_hops_total").items() if ("channel", "ussd") in k)


def pids_with_hops(directory: Path) -> set[int]:
    """Which processes wrote a hop into the multiprocess directory (one file per process and type)."""
    from prometheus_client.mmap_dict import MmapedDict

    pids = set()
    for f in directory.glob("counter_*.db"):
        for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(str(f)):
            if json.loads(key)[0] == "convo_hops" and value:
                pids.add(int(f.stem.split("_")[-1]))
    return pids


def test_metrics_sum_both_workers_of_convo_serve(redis_url, tmp_path):
    """`convo serve --workers 2`: hops land in both processes, and every scrape (whichever worker answers)
    reports their sum. A previous run's file left in the directory is emptied at start."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    from convo.devkit.devserver import BackgroundServer
    from convo.devkit.fineract_sim import create_sim_app

    multiproc = tmp_path / "metrics"
    multiproc.mkdir()
    stale = MmapedDict(str(multiproc / "counter_999999.db"))          # a worker of yesterday's run
    stale.write_value(mmap_key("convo_hops_total", "convo_hops_total", ("channel", "gateway", "result"),
                               ("ussd", "africastalking", "continue"), "Inbound hops answered"), 1000.0, 0)
    stale.close()
    db = f"sqlite:///{tmp_path}/convo.db"
    with BackgroundServer(create_sim_app()) as sim:
        env = {"CONVO_REDIS_URL": redis_url, "CONVO_DATABASE_URL": db, "CONVO_FLOWS_RELOAD_SECONDS": "0",
               "CONVO_FINERACT_URL": f"{sim.url}/fineract-provider/api/v1", "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
        with convo_serve(env, "--migrate", "--workers", "2", "--threads", "4") as gw:
            assert ussd_hops(gw) == 0                                   # the stale file is gone
            dialled = 0
            while dialled < 400 and (dialled < 20 or len(pids_with_hops(multiproc)) < 2):
                r = requests.post(f"{gw}/gateways/africastalking/ussd", timeout=10, data={  # a new connection each
                    "sessionId": f"ATUid_m{dialled}", "serviceCode": "*384*12#", "phoneNumber": "+254799000001",
                    "networkCode": "63902", "text": ""}, headers={"Connection": "close"})
                assert r.status_code == 200, r.text
                dialled += 1
            assert len(pids_with_hops(multiproc)) >= 2, "granian sent every connection to one worker"
            scrapes = [ussd_hops(gw) for _ in range(10)]
            text = requests.get(f"{gw}/metrics", timeout=10).text
    assert scrapes == [dialled] * 10
    # the outbox backlog is read from the database at the scrape; the Mifos X breaker is a live gauge
    assert samples(text, "convo_outbox_scrape_error") == {(): 0.0}
    assert any(s.startswith("convo_mifos_breaker_state{") for s in text.splitlines())


@pytest.mark.postgres
def test_outbox_backlog_per_gateway_is_read_at_scrape_time(pg_url):
    from convo.store.db import OutboxMessage, make_engine, upgrade, utcnow

    upgrade(pg_url)
    engine = make_engine(pg_url)
    now = utcnow()
    rows = [("africastalking", "queued", now - dt.timedelta(minutes=10), now - dt.timedelta(minutes=1)),
            ("africastalking", "queued", now - dt.timedelta(minutes=2), now + dt.timedelta(hours=1)),  # retry later
            ("africastalking", "sent", now - dt.timedelta(hours=5), now - dt.timedelta(hours=5)),
            (None, "sending", now - dt.timedelta(seconds=30), now - dt.timedelta(seconds=30))]
    try:
        with engine.begin() as c:
            for i, (gateway, status, created, nxt) in enumerate(rows):
                c.execute(OutboxMessage.__table__.insert().values(
                    idempotency_key=f"k{i}", recipient="+254700000101", body="hi", encoding="GSM-7", chars=2,
                    segments=1, gateway=gateway, status=status, created_at=created, next_attempt_at=nxt,
                    updated_at=created))
        text = exposition_for(engine).decode()
    finally:
        engine.dispose()
    assert samples(text, "convo_outbox_queued") == {(("gateway", "africastalking"),): 2.0,
                                                    (("gateway", "unrouted"),): 1.0}
    assert samples(text, "convo_outbox_due") == {(("gateway", "africastalking"),): 1.0,
                                                 (("gateway", "unrouted"),): 1.0}
    age = samples(text, "convo_outbox_oldest_age_seconds")
    assert 600 <= age[(("gateway", "africastalking"),)] < 3600
    assert samples(text, "convo_outbox_scrape_error") == {(): 0.0}


def test_metrics_answer_with_the_database_down():
    import sqlalchemy as sa

    engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    text = exposition_for(engine).decode()
    assert samples(text, "convo_outbox_scrape_error") == {(): 1.0}
    assert "convo_hops_total" in text


def test_a_dead_workers_live_gauges_are_dropped_its_counters_kept(tmp_path):
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    dead = 2 ** 22 + 12345                                          # above pid_max: no such process
    for kind, name, value in (("gauge_livemax", "convo_mifos_breaker_state", 2.0),
                              ("counter", "convo_mifos_breaker_opened_total", 1.0)):
        d = MmapedDict(str(tmp_path / f"{kind}_{dead}.db"))
        d.write_value(mmap_key(name, name, ("server",), ("mifos:8443",), "h"), value, 0)
        d.close()
    metrics._forget_dead_processes(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"counter_{dead}.db"]


def dashboard_names() -> set[str]:
    board = json.loads((ROOT / "ops" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 8
    names = set()
    for e in exprs:
        names |= {n for n in re.findall(r"\b(convo_[a-z0-9_]+)", e)}
    return names


def test_the_grafana_dashboard_uses_only_metrics_that_exist():
    def base(name: str) -> str:
        return re.sub(r"_(bucket|sum|count)$", "", name)

    used = {base(n) for n in dashboard_names()}
    assert used <= metrics.NAMES, used - metrics.NAMES
    # and NAMES is the truth: each is registered, or produced at scrape time
    from prometheus_client import REGISTRY

    import convo.web.staff  # noqa: F401 - registers convo_staff_auth_refused_total
    registered = {m.name for m in REGISTRY.collect()} | {m.name + "_total" for m in REGISTRY.collect()}
    scrape = metrics.SCRAPE_NAMES
    assert metrics.NAMES - scrape <= registered, (metrics.NAMES - scrape) - registered
    # the dashboard shows each item of the issue: outbox, sends per gateway, transfers, Mifos X, reminders
    for needed in ("convo_outbox_queued", "convo_outbox_due", "convo_outbox_oldest_age_seconds",
                   "convo_outbox_results_total", "convo_transfers_total", "convo_mifos_request_seconds_bucket",
                   "convo_mifos_breaker_state", "convo_reminder_runs_total"):
        assert needed in dashboard_names(), needed


@pytest.mark.postgres
def test_the_worker_counts_sends_per_gateway_and_status(pg_url):
    """``convo_outbox_results_total{gateway, status}``: sent, queued (to be retried), failed (given up)."""
    from convo.jobs.worker import Worker
    from convo.notify.outbox import enqueue
    from convo.store.db import make_engine, upgrade
    from gateways.base import SendResult
    from tests.integration.test_outbox import Clock, FlakySender

    def count(status):
        return metrics.OUTBOX_RESULTS.labels("flaky", status)._value.get()

    upgrade(pg_url)
    engine = make_engine(pg_url)
    try:
        clock = Clock()
        for key in ("a", "b"):
            enqueue(engine, idempotency_key=key, to="+254712345678", body="hi", not_before=clock.now)
        before = {s: count(s) for s in ("sent", "queued", "failed")}
        sender = FlakySender([SendResult("sent", provider_id="P1"), SendResult.retry("503", status_code=503),
                              SendResult.retry("503", status_code=503)])
        w = Worker(engine, sender, clock=clock, max_attempts=2, retry_base_seconds=1, retry_max_seconds=1)
        w.run(once=True)
        clock.now += dt.timedelta(seconds=5)
        w.run(once=True)
    finally:
        engine.dispose()
    assert {s: count(s) - before[s] for s in before} == {"sent": 1, "queued": 1, "failed": 1}


@pytest.mark.postgres
def test_repayments_from_savings_are_counted_by_outcome(redis_url, pg_url):
    """``convo_transfers_total{outcome}``: done, failed (e.g. insufficient funds), retry."""
    from decimal import Decimal

    from convo.jobs.transfers import TransferRunner, request_transfer
    from tests.support.e2e import running_sms_stack

    def count(outcome):
        return metrics.TRANSFERS.labels(outcome)._value.get()

    with running_sms_stack(redis_url, pg_url) as (_gw, _fake, services):
        before = {o: count(o) for o in ("done", "failed")}
        base = dict(phone="+254700000101", lang="en", client_id=1, office_id=1, savings_id=42, loan_id=29,
                    currency={"code": "KES", "decimal_places": 2}, loan_label="Biashara Flat 6M *0029")
        request_transfer(services.db, idempotency_key="repay:test:metrics:1", amount=Decimal("100"), **base)
        request_transfer(services.db, idempotency_key="repay:test:metrics:2", amount=Decimal("9999999"), **base)
        runner = TransferRunner(services)
        while runner.run_once():
            pass
    assert {o: count(o) - before[o] for o in before} == {"done": 1, "failed": 1}
