"""Issue 14 item 8: /healthz is readiness (Redis, database and schema, Mifos X reachability and breaker,
flows version and refused edits); /livez is liveness and asks no dependency."""
from __future__ import annotations

import requests

from convo.web import ops
from tests.support.e2e import running_gateway


def fresh_probe():
    ops._probe.clear()                          # the probe's answer is kept 15 s per process


def test_healthz_reports_every_dependency_and_keeps_its_fields(redis_url):
    fresh_probe()
    with running_gateway(redis_url) as (gw, sim, services):
        r = requests.get(f"{gw}/healthz", timeout=10)
        body = r.json()
    assert r.status_code == 200 and body["ok"] is True and body["failing"] == [] and body["degraded"] == []
    # the fields operators and the other tests rely on are still there
    assert body["redis"] == "ok" and body["database"] == "ok"
    assert body["schema"]["revision"] == body["schema"]["head"]
    assert body["flows_version"] and body["flows_refused"] is None and "flows_checking" in body
    assert body["mifos"]["reachable"] is True and body["mifos"]["breaker"] == "closed"
    assert body["mifos"]["error"] is None and body["mifos"]["seconds"] >= 0


def test_mifos_down_is_degraded_not_unready_and_livez_stays_200(redis_url):
    fresh_probe()
    with running_gateway(redis_url) as (gw, sim, services):
        requests.post(f"{sim}/__sim/faults", json={"down": True}, timeout=5)
        r = requests.get(f"{gw}/healthz", timeout=10)
        hits = requests.get(f"{sim}/__sim/stats", timeout=5).json()["hits"]
        again = requests.get(f"{gw}/healthz", timeout=10).json()          # within 15 s: no second probe
        hits_after = requests.get(f"{sim}/__sim/stats", timeout=5).json()["hits"]
        live = requests.get(f"{gw}/livez", timeout=5)
    body = r.json()
    assert r.status_code == 200 and body["ok"] is True and body["degraded"] == ["mifos"]
    assert body["mifos"]["reachable"] is False and body["mifos"]["error"].startswith("unavailable")
    assert again["mifos"]["reachable"] is False and hits_after == hits
    assert live.status_code == 200 and live.json() == {"ok": True}


def test_livez_answers_with_redis_and_database_gone(redis_url, tmp_path):
    """Liveness never asks a dependency: a container is not restarted because Redis is down."""
    fresh_probe()
    with running_gateway("redis://127.0.0.1:1/0", database_url=f"sqlite:///{tmp_path}/none/x.db") as (gw, _s, _v):
        assert requests.get(f"{gw}/livez", timeout=5).status_code == 200
        r = requests.get(f"{gw}/healthz", timeout=10)
    assert r.status_code == 503 and set(r.json()["failing"]) == {"redis", "database"}
