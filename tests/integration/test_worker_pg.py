"""Several worker processes on real PostgreSQL: every message sent exactly once, a SIGKILLed worker's rows recovered."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from convo.devkit.fake_at import start_fake_at
from convo.notify.outbox import enqueue
from convo.store.db import make_engine, upgrade

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).resolve().parents[1] / "support" / "_outbox_worker_proc.py"


def env(**extra):
    e = {k: v for k, v in os.environ.items() if not k.startswith("CONVO_")}
    e["PYTHONPATH"] = str(ROOT)
    e.update(extra)
    return e


def fill(engine, n, prefix="m"):
    for i in range(n):
        enqueue(engine, idempotency_key=f"{prefix}{i}", to=f"+2547{i:08d}", body=f"Reminder {i}: KES {i}.00 due",
                kind="notification")


def statuses(engine):
    with engine.connect() as c:
        return Counter(dict(c.execute(sa.text("SELECT status, count(*) FROM outbox GROUP BY status")).all()))


def test_four_worker_processes_with_the_real_sdk_send_every_message_once(pg_url):
    upgrade(pg_url)
    engine = make_engine(pg_url)
    n = 300
    fill(engine, n)
    with start_fake_at(delay=0.01) as fake:
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "convo.jobs.worker", "--once", "--batch", "20"], cwd=ROOT, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env(CONVO_DATABASE_URL=pg_url, CONVO_AT_USERNAME="mfi", CONVO_AT_API_KEY="k",
                        CONVO_AT_BASE_URL=fake.url, CONVO_LOG_LEVEL="INFO"),
            )
            for _ in range(4)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, [o[1][-2000:] for o in outs]
        got = Counter(m["number"] for m in fake.fake.accepted())
    assert len(got) == n and set(got.values()) == {1}, "a message was sent twice or not at all"
    assert statuses(engine) == Counter({"sent": n})
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT max(attempts), count(DISTINCT provider_id) FROM outbox")).one() == (1, n)
    sent_by = [int(line.split("'sent': ")[1].split(",")[0]) for _, err in outs for line in err.splitlines()
               if "stopped:" in line]
    assert sum(sent_by) == n and sum(1 for s in sent_by if s) >= 2, sent_by  # the work really was shared
    engine.dispose()


SENDS_DDL = """CREATE TABLE fake_sends (
    outbox_id BIGINT NOT NULL, worker TEXT NOT NULL, phase TEXT NOT NULL,
    lease_until TIMESTAMPTZ, at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())"""


def helper(url, name, *args):
    return subprocess.Popen([sys.executable, str(HELPER), url, name, *args], cwd=ROOT, env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(cond, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkilled_worker_rows_are_picked_up_after_lease_expiry_and_none_sent_twice(pg_url):
    upgrade(pg_url)
    engine = make_engine(pg_url)
    with engine.begin() as c:
        c.execute(sa.text(SENDS_DDL))
    n, lease = 200, 3.0
    fill(engine, n)

    def q(sql):
        with engine.connect() as c:
            return c.execute(sa.text(sql)).all()

    doomed = helper(pg_url, "doomed", "--slow", "60", "--lease", str(lease), "--batch", "30", "--concurrency", "5")
    # it leased 30 rows and is about to send 5 of them (its concurrency): the intents are written
    wait_for(lambda: q("SELECT count(*) FROM fake_sends WHERE worker='doomed'")[0][0] == 5, 30, "doomed to send")
    others = [helper(pg_url, f"w{i}", "--lease", str(lease), "--batch", "20") for i in range(3)]
    os.kill(doomed.pid, signal.SIGKILL)  # mid-dispatch: rows leased, "about to send" written, gateway not reached
    doomed.wait(10)
    assert doomed.returncode == -signal.SIGKILL
    leased_at_kill = {r[0] for r in q("SELECT id FROM outbox WHERE status='sending' AND leased_by LIKE 'doomed:%'")}
    assert len(leased_at_kill) == 30

    try:
        wait_for(lambda: statuses(engine) == Counter({"sent": n}), 60, "every message to be sent")
    finally:
        for p in others:
            p.send_signal(signal.SIGTERM)  # graceful stop
        outs = [p.communicate(timeout=30) for p in others]
    assert [p.returncode for p in others] == [0, 0, 0], [o[1][-2000:] for o in outs]

    sent = Counter(r[0] for r in q("SELECT outbox_id FROM fake_sends WHERE phase='sent'"))
    assert len(sent) == n and set(sent.values()) == {1}, "lost or duplicated"
    assert q("SELECT count(*) FROM fake_sends WHERE worker='doomed' AND phase='sent'")[0][0] == 0
    # the doomed worker's rows: taken over only after its lease ran out, on a second attempt
    late = q("""SELECT s.outbox_id, s.at >= i.lease_until, o.attempts, s.worker
                FROM fake_sends s JOIN fake_sends i ON i.outbox_id = s.outbox_id AND i.worker = 'doomed'
                JOIN outbox o ON o.id = s.outbox_id WHERE s.phase = 'sent'""")
    assert {r[0] for r in late} < leased_at_kill and len(late) == 5
    assert all(r[1] for r in late), "a row was sent while the killed worker's lease still held"
    assert {r[2] for r in late} == {2} and {r[3] for r in late} <= {"w0", "w1", "w2"}
    # every row it held was taken over only after the lease ran out, and says so
    taken = q("SELECT attempts, last_error FROM outbox WHERE last_error LIKE 'lease expired: worker doomed:%'")
    assert len(taken) == 30 and {r[0] for r in taken} == {2}
    assert all(re.fullmatch(r"lease expired: worker doomed:[0-9a-f]{10} did not finish; retrying \(may have been sent\)",
                            r[1]) for r in taken), taken
    others_first = q("SELECT id, attempts, last_error FROM outbox WHERE last_error IS NULL")
    assert len(others_first) == n - 30 and {r[1] for r in others_first} == {1}
    assert not {r[0] for r in others_first} & leased_at_kill
    engine.dispose()


def at_worker(pg_url, fake_url, *args, **env_extra):
    """``python -m convo.jobs.worker`` sending through the real Africa's Talking SDK to the fake gateway."""
    return subprocess.Popen(
        [sys.executable, "-m", "convo.jobs.worker", *args], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env(CONVO_DATABASE_URL=pg_url, CONVO_AT_USERNAME="mfi", CONVO_AT_API_KEY="k", CONVO_AT_BASE_URL=fake_url,
                CONVO_AT_TIMEOUT="1", CONVO_WORKER_LEASE_SECONDS="14", CONVO_WORKER_POLL_SECONDS="0.2",
                CONVO_LOG_LEVEL="INFO", **env_extra),
    )


def test_sigkill_mid_batch_resends_at_most_the_messages_in_flight(pg_url):
    """60 queued, one worker leases them all and is SIGKILLed half way: only what it had in flight goes twice.

    Before results were recorded per request, the gateway had accepted 55 when the worker died and all 55 went
    again after the lease expired. Now each result is committed as it comes back, so a SIGKILL loses at most
    the ``CONVO_WORKER_CONCURRENCY`` requests in flight (one message each: every text here is different).
    """
    upgrade(pg_url)
    engine = make_engine(pg_url)
    n, concurrency = 60, 4
    fill(engine, n)

    def q(sql):
        with engine.connect() as c:
            return c.execute(sa.text(sql)).all()

    with start_fake_at(delay=0.25) as fake:
        doomed = at_worker(pg_url, fake.url, "--batch", str(n), CONVO_WORKER_CONCURRENCY=str(concurrency))
        wait_for(lambda: len(fake.fake.accepted()) >= n // 2, 60, "the gateway to accept half the batch")
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.communicate(timeout=10)
        assert doomed.returncode == -signal.SIGKILL
        # the whole batch was leased by the dead worker: what it recorded, and what it still held
        held = dict(q("SELECT status, count(*) FROM outbox GROUP BY status"))
        dead_token = q("SELECT DISTINCT leased_by FROM outbox WHERE status = 'sending'")
        assert held.get("sending", 0) + held.get("sent", 0) == n and held.get("sent", 0) >= n // 2 - concurrency
        assert len(dead_token) == 1

        rescuer = at_worker(pg_url, fake.url, CONVO_WORKER_CONCURRENCY=str(concurrency))
        try:
            wait_for(lambda: statuses(engine) == Counter({"sent": n}), 90, "the rescuer to send the rest")
        finally:
            rescuer.send_signal(signal.SIGTERM)
            out, err = rescuer.communicate(timeout=30)
        assert rescuer.returncode == 0, err[-2000:]
        got = Counter(m["number"] for m in fake.fake.accepted())

    assert len(got) == n, "a message was lost"
    duplicates = sum(k - 1 for k in got.values())
    assert duplicates <= concurrency, f"{duplicates} messages went twice; at most {concurrency} were in flight"
    # rows taken over after the lease expired say so, and keep saying so once sent
    taken = q("SELECT attempts, last_error FROM outbox WHERE attempts > 1")
    assert len(taken) == held["sending"] and {r[0] for r in taken} == {2}
    note = f"lease expired: worker {dead_token[0][0]} did not finish; retrying (may have been sent)"
    assert {r[1] for r in taken} == {note}
    assert q("SELECT count(*) FROM outbox WHERE attempts = 1 AND last_error IS NULL")[0][0] == held["sent"]
    # every duplicate is one of the taken-over rows
    twice = {num for num, k in got.items() if k > 1}
    assert twice <= {r[0] for r in q("SELECT recipient FROM outbox WHERE attempts = 2")}
    engine.dispose()
