"""Test helper, run as a separate process: one outbox worker whose gateway records every send in PostgreSQL.

    python tests/support/_outbox_worker_proc.py URL NAME [--slow S] [--lease S] [--batch N] [--concurrency N] [--once]

The recording sender writes, per message, a row in ``fake_sends`` (outbox id,
worker name, phase, the row's lease_until, DB time). Phase ``intent`` is
written before the (simulated) network call, ``sent`` when the gateway has
the message. ``--slow S`` sleeps S seconds between the two, so a SIGKILL lands
while the rows are leased and before the gateway got them. The worker sends
one message per call, ``--concurrency`` calls at once.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import sqlalchemy as sa  # noqa: E402

from convo.config import Settings  # noqa: E402
from convo.jobs.worker import run_worker  # noqa: E402
from convo.store.db import make_engine  # noqa: E402
from gateways.base import SendResult  # noqa: E402

SENDS_DDL = """CREATE TABLE IF NOT EXISTS fake_sends (
    outbox_id BIGINT NOT NULL, worker TEXT NOT NULL, phase TEXT NOT NULL,
    lease_until TIMESTAMPTZ, at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())"""

RECORD = sa.text(
    "INSERT INTO fake_sends (outbox_id, worker, phase, lease_until) "
    "SELECT id, :w, :phase, lease_until FROM outbox WHERE id = ANY(:ids)"
)


class PgRecordingSender:
    name = "pgrecord"

    def __init__(self, engine, worker: str, slow: float = 0.0):
        self.engine, self.worker, self.slow = engine, worker, slow

    def send(self, messages, *, deadline=None):
        ids = [m.id for m in messages]
        if self.slow:
            with self.engine.begin() as c:
                c.execute(RECORD, {"w": self.worker, "phase": "intent", "ids": ids})
            time.sleep(self.slow)
        with self.engine.begin() as c:
            c.execute(RECORD, {"w": self.worker, "phase": "sent", "ids": ids})
        return [SendResult("sent", provider_id=f"{self.worker}-{i}") for i in ids]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("name")
    p.add_argument("--slow", type=float, default=0.0)
    p.add_argument("--lease", type=float, default=60.0)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--once", action="store_true")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"{a.name} %(message)s")
    engine = make_engine(a.url, pool_size=2, max_overflow=a.concurrency + 2)
    sender = PgRecordingSender(engine, a.name, a.slow)
    n = run_worker(Settings(database_url=a.url), once=a.once, batch=a.batch, sender=sender, engine=engine,
                   lease_seconds=a.lease, poll_seconds=0.1, name=a.name, concurrency=a.concurrency)
    print(json.dumps({"worker": a.name, "claimed": n}), flush=True)


if __name__ == "__main__":
    main()
