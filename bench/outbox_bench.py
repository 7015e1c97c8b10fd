"""Outbox dispatch benchmark: messages/s with 1 and 4 worker processes on PostgreSQL (run on demand, not in pytest).

    .venv/bin/python bench/outbox_bench.py [--messages 5000] [--workers 1,4] [--gateway null|fake-at|both]
                                           [--concurrency 8]

For each worker count: a fresh PostgreSQL schema, migrations, N messages
enqueued, then K worker processes (started and connected first, then released
together) drain the outbox with ``Worker.run(once=True)``. Reported: enqueue
rate, dispatch rate (N / wall time from release to the last worker done), the
4/1 ratio, and duplicates / losses counted at the gateway side. Each worker
sends ``--concurrency`` requests at once and records each result as it comes
back (``CONVO_WORKER_CONCURRENCY``).

Gateways:
* ``null``    - in-process sender that records every batch it "sends" into a
                PostgreSQL table (one INSERT per batch): the cost of the outbox
                machinery itself.
* ``fake-at`` - the real Africa's Talking SDK over HTTP to ``convo.devkit.fake_at``
                running in its own process (werkzeug, threaded).

Target (DESIGN.md): >= 500 messages/s with 4 workers, no duplicates, no losses.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_BASE = os.environ.get("CONVO_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


class NullRecordingSender:
    name = "null"

    def __init__(self, engine):
        import sqlalchemy as sa

        self.engine = engine
        self.stmt = sa.text("INSERT INTO bench_sends (outbox_id) SELECT unnest(CAST(:ids AS bigint[]))")

    def send(self, messages, *, deadline=None):
        from gateways.base import SendResult

        with self.engine.begin() as c:
            c.execute(self.stmt, {"ids": [m.id for m in messages]})
        return [SendResult("sent", provider_id=f"null-{m.id}", cost="KES 0.8000", parts=m.segments) for m in messages]


def _worker(url, gateway, at_url, batch, concurrency, go, out, name):
    from convo.jobs.worker import Worker
    from convo.store.db import make_engine
    from gateways.africastalking import AfricasTalkingSender

    engine = make_engine(url, pool_size=2, max_overflow=concurrency + 2)
    if gateway == "null":
        sender = NullRecordingSender(engine)
    else:
        sender = AfricasTalkingSender("bench", "k", base_url=at_url, concurrency=16)
    w = Worker(engine, sender, batch=batch, name=name, sweep_seconds=1e9, concurrency=concurrency)
    with engine.connect():
        pass  # connect before the start signal
    go.wait()
    t0, cpu0 = time.perf_counter(), time.process_time()
    n = w.run(once=True)
    out.put((name, n, t0, time.perf_counter(), dict(w.stats), time.process_time() - cpu0))
    engine.dispose()


def _fresh_schema():
    import sqlalchemy as sa

    schema = "bench_" + uuid.uuid4().hex[:10]
    admin = sa.create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    return admin, schema, f"{PG_BASE}?options=-csearch_path%3D{schema}"


def run_once(n_messages: int, n_workers: int, gateway: str, at_url: str | None, batch: int,
             concurrency: int = 8) -> dict:
    import requests
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    from convo.notify.outbox import enqueue
    from convo.store.db import make_engine, upgrade

    admin, schema, url = _fresh_schema()
    try:
        upgrade(url)
        engine = make_engine(url)
        with engine.begin() as c:
            c.execute(sa.text("CREATE TABLE bench_sends (outbox_id BIGINT NOT NULL)"))
        if at_url:
            requests.delete(at_url + "/__fake/messages")
        t0 = time.perf_counter()
        with Session(engine) as s:
            for i in range(n_messages):
                enqueue(s, idempotency_key=f"bench:{i}", to=f"+2547{i:08d}",
                        body=f"Dear client, your installment of KES {1000 + i}.00 is due on 2024-07-01.",
                        kind="notification")
                if i % 500 == 499:
                    s.commit()
            s.commit()
        enqueue_rate = n_messages / (time.perf_counter() - t0)

        ctx = mp.get_context("spawn")
        go, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(url, gateway, at_url, batch, concurrency, go, out, f"w{k}"))
                 for k in range(n_workers)]
        for p in procs:
            p.start()
        time.sleep(2.0 + 0.5 * n_workers)  # let them import and connect
        start = time.perf_counter()
        go.set()
        results = [out.get(timeout=600) for _ in procs]
        end = max(r[3] for r in results)
        for p in procs:
            p.join(30)
        elapsed = end - start
        with engine.connect() as c:
            status = dict(c.execute(sa.text("SELECT status, count(*) FROM outbox GROUP BY status")).all())
            if gateway == "null":
                total, distinct = c.execute(
                    sa.text("SELECT count(*), count(DISTINCT outbox_id) FROM bench_sends")).one()
            else:
                got = Counter(m["number"] for m in requests.get(at_url + "/__fake/messages").json()["messages"])
                total, distinct = sum(got.values()), len(got)
        engine.dispose()
        return {
            "workers": n_workers, "gateway": gateway, "messages": n_messages, "enqueue_per_s": enqueue_rate,
            "seconds": elapsed, "per_s": n_messages / elapsed, "duplicates": total - distinct,
            "lost": n_messages - distinct, "status": status,
            "per_worker": {r[0]: r[1] for r in sorted(results)},
            "cpu_ms_per_msg": 1000 * sum(r[5] for r in results) / n_messages,
        }
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--workers", default="1,4")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=8, help="send requests in flight per worker")
    p.add_argument("--gateway", choices=["null", "fake-at", "both"], default="both")
    p.add_argument("--fake-port", type=int, default=18089)
    a = p.parse_args()
    counts = [int(x) for x in a.workers.split(",")]
    gateways = ["null", "fake-at"] if a.gateway == "both" else [a.gateway]
    print(f"outbox bench: {a.messages} messages, batch {a.batch}, concurrency {a.concurrency}, PostgreSQL {PG_BASE.split('@')[-1]}, "
          f"{os.cpu_count()} CPUs")
    for gw in gateways:
        fake = None
        at_url = None
        if gw == "fake-at":
            import requests

            fake = subprocess.Popen([sys.executable, "-m", "convo.devkit.fake_at", "--port", str(a.fake_port)], cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    env={**os.environ, "PYTHONPATH": str(ROOT)})
            at_url = f"http://127.0.0.1:{a.fake_port}"
            for _ in range(100):
                try:
                    requests.get(at_url + "/__fake/messages", timeout=1)
                    break
                except requests.ConnectionError:
                    time.sleep(0.1)
        try:
            rates = {}
            for k in counts:
                r = run_once(a.messages, k, gw, at_url, a.batch, a.concurrency)
                rates[k] = r["per_s"]
                print(f"  [{gw:7}] {k} worker(s): {r['per_s']:8.0f} msg/s  ({r['seconds']:.2f} s; "
                      f"enqueue {r['enqueue_per_s']:.0f}/s; worker CPU {r['cpu_ms_per_msg']:.2f} ms/msg)  duplicates={r['duplicates']} lost={r['lost']}  "
                      f"status={r['status']}  per worker={r['per_worker']}")
            if len(counts) >= 2:
                lo, hi = counts[0], counts[-1]
                print(f"  [{gw:7}] ratio {hi}/{lo} workers: {rates[hi] / rates[lo]:.2f}")
        finally:
            if fake is not None:
                fake.terminate()
                fake.wait(10)


if __name__ == "__main__":
    main()
