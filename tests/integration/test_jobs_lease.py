"""The lease every job table uses (convo/store/lease.py), on PostgreSQL and SQLite, and the worker running every task.

The contract, as stories: two workers never hold one row; a lease that ran out is taken over; the old
owner's finish is then refused; a retry waits longer each time.
"""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from convo.store import lease
from convo.store.db import UTCDateTime, make_engine, upgrade, utcnow

ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 5, 4, 9, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)

meta = sa.MetaData()
jobs = sa.Table(
    "lease_jobs", meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("due_at", UTCDateTime, nullable=False),
    sa.Column("owner", sa.String(100)),
    sa.Column("held_until", UTCDateTime),
    sa.Column("result", sa.String(100)),
)
#: a table of its own column and status names: the lease code is told which are which
JOBS = lease.LeaseTable(jobs, ready=("todo",), leased="working", due="due_at", owner="owner", until="held_until",
                        status="state")


def engine_for(kind: str, request, tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}" if kind == "sqlite" else request.getfixturevalue("pg_url")
    engine = make_engine(url)
    meta.create_all(engine)
    return engine


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    engine = engine_for(request.param, request, tmp_path)
    yield engine
    engine.dispose()


@pytest.fixture
def pg_db(request, tmp_path):
    """PostgreSQL only: SQLite has one writer, so a second claim waits for the first (the same guarantee)."""
    engine = engine_for("postgresql", request, tmp_path)
    yield engine
    engine.dispose()


def add_jobs(db, n: int, due: dt.datetime = T0) -> list[int]:
    with db.begin() as c:
        return list(c.execute(sa.insert(jobs).returning(jobs.c.id),
                              [{"state": "todo", "attempts": 0, "due_at": due} for _ in range(n)]).scalars())


def take(db, who: str, now: dt.datetime = T0, limit: int = 10, minutes: float = 1) -> list:
    with db.begin() as c:
        return lease.claim(c, JOBS, token=who, now=now, lease=dt.timedelta(minutes=minutes), limit=limit)


def finish(db, who: str, ids, result: str) -> set[int]:
    with db.begin() as c:
        return lease.finish(c, JOBS, ids, who, {"state": "done", "result": result})


def row(db, id_: int):
    with db.connect() as c:
        return c.execute(sa.select(jobs).where(jobs.c.id == id_)).one()


def test_two_workers_share_the_rows_and_never_hold_the_same_one(db):
    ids = add_jobs(db, 6)
    anna = take(db, "anna", limit=4)
    ben = take(db, "ben", limit=4)
    assert sorted(r.id for r in anna) == ids[:4] and sorted(r.id for r in ben) == ids[4:]   # first due first
    assert {(r.state, r.owner, r.attempts) for r in anna} == {("working", "anna", 1)}
    assert take(db, "cleo") == []                       # all held, none expired


def test_workers_claiming_at_once_never_hold_one_row(db):
    ids = add_jobs(db, 60)
    got: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        mine = got.setdefault(name, [])
        try:
            while rows := take(db, name, limit=3):
                mine.extend(r.id for r in rows)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(f"w{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if db.dialect.name == "sqlite":                     # one writer at a time: a busy database may refuse
        assert all(isinstance(e, sa.exc.OperationalError) for e in errors), errors
    else:
        assert errors == []
    taken = [i for mine in got.values() for i in mine]
    assert len(taken) == len(set(taken)), "a row was held by two workers"
    if not errors:
        assert sorted(taken) == ids


def test_a_claim_not_yet_committed_hides_its_rows_from_the_next_worker(pg_db):
    db = pg_db
    ids = add_jobs(db, 4)
    with db.begin() as slow:                            # anna's claim, still open
        anna = lease.claim(slow, JOBS, token="anna", now=T0, lease=MINUTE, limit=2)
        ben = take(db, "ben")                           # SKIP LOCKED: ben does not wait, and gets the others
        assert sorted(r.id for r in anna) == ids[:2] and sorted(r.id for r in ben) == ids[2:]


def test_a_job_not_yet_due_waits(db):
    (later,) = add_jobs(db, 1, due=T0 + 10 * MINUTE)
    assert take(db, "anna") == []
    assert [r.id for r in take(db, "anna", now=T0 + 10 * MINUTE)] == [later]


def test_an_expired_lease_is_taken_over_and_the_old_owner_cannot_finish(db):
    (job,) = add_jobs(db, 1)
    take(db, "anna")                                    # anna holds it for one minute, then stalls
    assert take(db, "ben", now=T0 + 30 * dt.timedelta(seconds=1)) == []     # still hers
    (again,) = take(db, "ben", now=T0 + 61 * dt.timedelta(seconds=1))       # ran out: ben takes over
    assert (again.id, again.owner, again.attempts) == (job, "ben", 2)
    assert finish(db, "anna", [job], "anna's late answer") == set()         # anna wakes up: refused
    assert row(db, job).owner == "ben" and row(db, job).result is None
    assert finish(db, "ben", [job], "ben's answer") == {job}
    done = row(db, job)
    assert (done.state, done.result, done.owner, done.held_until) == ("done", "ben's answer", None, None)
    assert finish(db, "ben", [job], "twice") == set()                       # finished is finished


def test_a_released_job_goes_back_without_counting_the_attempt(db):
    (job,) = add_jobs(db, 1)
    take(db, "anna")
    with db.begin() as c:
        assert lease.release(c, JOBS, [job], "anna", "todo") == {job}
    back = row(db, job)
    assert (back.state, back.attempts, back.owner) == ("todo", 0, None)
    assert [r.attempts for r in take(db, "ben")] == [1]


def test_finishing_many_rows_each_with_its_own_values_skips_rows_no_longer_held(db):
    a, b, c_ = add_jobs(db, 3)
    take(db, "anna")
    with db.begin() as c:                               # c_ was taken from anna in the meantime
        c.execute(sa.update(jobs).where(jobs.c.id == c_).values(owner="ben"))
    rows = [{"id": a, "state": "done", "result": "ok"}, {"id": b, "state": "todo", "result": "retry"},
            {"id": c_, "state": "done", "result": "stale"}]
    with db.begin() as c:
        got = lease.finish_rows(c, JOBS, "anna", rows, returning=(jobs.c.result,))
    assert sorted((r.id, r.result) for r in got) == [(a, "ok"), (b, "retry")]
    assert [(row(db, i).state, row(db, i).result, row(db, i).owner) for i in (a, b, c_)] == [
        ("done", "ok", None), ("todo", "retry", None), ("working", None, "ben")]


def test_a_retried_job_waits_longer_each_time(db):
    (job,) = add_jobs(db, 1)
    now, waits = T0, []
    for _ in range(4):
        (r,) = take(db, "anna", now=now)
        retry = lease.retry_at(now, r.attempts, base=30, cap=3600, rng=lambda: 1.0)
        with db.begin() as c:
            lease.finish(c, JOBS, [job], "anna", {"state": "todo", "due_at": retry})
        assert take(db, "ben", now=retry - dt.timedelta(seconds=1)) == []    # not before it is due
        waits.append((retry - now).total_seconds())
        now = retry
    assert waits == [30, 60, 120, 240]


@given(attempt=st.integers(1, 40), base=st.floats(0.1, 600), cap=st.floats(1, 86400), r=st.floats(0, 1))
def test_backoff_doubles_up_to_the_cap_jittered_to_half_to_all_of_it(attempt, base, cap, r):
    full = min(cap, base * 2 ** (attempt - 1))
    d = lease.backoff_seconds(attempt, base, cap, rng=lambda: r)
    assert full / 2 - 1e-9 <= d <= full + 1e-9
    assert lease.backoff_seconds(attempt + 1, base, cap, rng=lambda: 1.0) >= lease.backoff_seconds(
        attempt, base, cap, rng=lambda: 1.0)


# --------------------------------------------------------------------------- the module entry runs every task


def test_python_m_convo_jobs_worker_once_runs_every_registered_task(sim, tmp_path):
    """One ``--once`` run: the repayment is made and texted, the pending hook's receipt built, the reminders
    run (the cron matches every minute), and everything they wrote is sent."""
    from convo.devkit.fake_at import start_fake_at
    from convo.store.notify_models import FineractHook
    from convo.store.transfers import TransferRequest, request_transfer

    url = f"sqlite:///{tmp_path / 'convo.db'}"
    upgrade(url)
    engine = make_engine(url)
    request_transfer(engine, idempotency_key="repay:test:1", phone="+254700000101", lang="en", client_id=1,
                     office_id=1, savings_id=42, loan_id=29, amount=Decimal(500),
                     currency={"code": "KES", "decimal_places": 2}, loan_label="Biashara Flat 6M *0029")
    now = utcnow()
    with engine.begin() as c:  # Mifos X was down when this hook came
        c.execute(sa.insert(FineractHook.__table__).values(
            key="default:LOAN:REPAYMENT:29:2907", entity="LOAN", action="REPAYMENT", tenant="default",
            body={"officeId": 1, "clientId": 1, "loanId": 29, "resourceId": 2907}, status="pending", attempts=1,
            received_at=now, updated_at=now, next_attempt_at=now))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVO_")}
    with start_fake_at() as fake:
        env.update(PYTHONPATH=str(ROOT), CONVO_DATABASE_URL=url, CONVO_REDIS_URL="memory://",
                   CONVO_FINERACT_URL=f"{sim.url}/fineract-provider/api/v1", CONVO_FLOWS_RELOAD_SECONDS="0",
                   CONVO_AT_USERNAME="sandbox", CONVO_AT_API_KEY="k", CONVO_AT_BASE_URL=fake.url,
                   CONVO_REMIND_CRON="* * * * *", CONVO_LOG_LEVEL="INFO")
        r = subprocess.run([sys.executable, "-m", "convo.jobs.worker", "--once"], cwd=tmp_path, env=env, text=True,
                           capture_output=True, timeout=180)
        assert r.returncode == 0, r.stderr[-3000:]
        sent = [m["message"] for m in fake.fake.accepted()]
    assert "worker: tasks transfers, hooks, schedule, outbox (once)" in r.stderr
    with engine.connect() as c:
        assert c.execute(sa.select(TransferRequest.status)).scalar_one() == "done"
        assert c.execute(sa.select(FineractHook.status)).scalar_one() == "done"
    assert any(m.startswith("Paid KES 500.00 to Biashara Flat 6M *0029 from your savings.") for m in sent), sent
    assert any(m.startswith("Received KES 1,000.00 for loan *0029") for m in sent), sent
    assert "reminders: " in r.stderr and " found, " in r.stderr
    assert "'transfers': 1, 'hooks': 1, 'schedule': 1" in r.stderr
    engine.dispose()


def test_the_jobs_are_given_what_they_need_and_the_store_needs_no_job():
    """convo/jobs imports neither the app's services nor the web app, the CLI or the dialog (whoever starts the
    worker passes what the tasks need), and convo/store imports nothing of convo/jobs: no import cycle here."""
    import ast

    def imported(package: str) -> set[str]:
        found = set()
        for f in (ROOT / "convo" / package).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Import):
                    found.update(a.name for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module)
        return found

    def reaches(names: set[str], target: str) -> set[str]:
        return {n for n in names if n == target or n.startswith(target + ".")}

    jobs = imported("jobs")
    assert not set().union(*(reaches(jobs, t) for t in ("convo.services", "convo.web", "convo.cli", "convo.dialog")))
    assert not reaches(imported("store"), "convo.jobs")


# --------------------------------------------------------------------------- the loop


class Queue:
    """A task with ``work`` items waiting, done ``per_tick`` at a time; ``broken`` raises on its first tick."""

    def __init__(self, name, work, per_tick=2, broken=False, log=None):
        self.name, self.work, self.per_tick, self.broken = name, work, per_tick, broken
        self.idle_seconds, self.log, self.closed = 0.01, log if log is not None else [], False

    def tick(self) -> int:
        self.log.append(self.name)
        if self.broken:
            self.broken = False
            raise RuntimeError(f"{self.name} broke")
        n = min(self.per_tick, self.work)
        self.work -= n
        return n

    def close(self) -> None:
        self.closed = True


def test_once_drains_each_task_in_turn_and_a_broken_one_does_not_stop_the_others():
    from convo.jobs.worker import JobLoop

    order: list[str] = []
    transfers = Queue("transfers", 3, broken=True, log=order)
    outbox = Queue("outbox", 5, log=order)
    loop = JobLoop([transfers, outbox])
    with pytest.raises(RuntimeError, match="transfers broke"):
        loop.run(once=True, handle_signals=False)
    assert order == ["transfers", "outbox", "outbox", "outbox", "outbox"]    # outbox: 2 + 2 + 1, then 0
    assert (outbox.work, loop.handled["outbox"]) == (0, 5) and transfers.closed and outbox.closed
    assert loop.run(once=True, handle_signals=False) == {"transfers": 3, "outbox": 5}


def test_running_tasks_keep_going_after_an_error_until_stopped():
    from convo.jobs.worker import JobLoop

    stop = threading.Event()
    hooks = Queue("hooks", 4, broken=True)
    loop = JobLoop([hooks])
    t = threading.Thread(target=loop.run, kwargs={"stop_event": stop, "handle_signals": False})
    t.start()
    try:
        deadline = dt.datetime.now() + dt.timedelta(seconds=10)
        while hooks.work and dt.datetime.now() < deadline:
            stop.wait(0.05)
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive() and hooks.work == 0 and loop.handled["hooks"] == 4 and hooks.closed
