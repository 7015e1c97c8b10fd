"""The outbox on SQLite and on real PostgreSQL: idempotency, encoding, opt-out, delivery reports."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from convo.jobs.worker import Worker
from convo.notify.outbox import (
    apply_delivery_report,
    apply_opt_out,
    enqueue,
    is_opted_out,
    set_opt_out,
)
from convo.store.db import Base, DeliveryReport, OutboxMessage, make_engine, upgrade
from convo.text.phone import InvalidPhone
from gateways.base import DeliveryUpdate, LogSender, OptOutUpdate, SendResult


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request, tmp_path):
    url = f"sqlite:///{tmp_path / 'convo.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    upgrade(url)
    eng = make_engine(url)
    yield eng
    eng.dispose()


def rows(engine):
    with Session(engine) as s:
        return s.scalars(sa.select(OutboxMessage).order_by(OutboxMessage.id)).all()


def dlr(pid, status, word=None, **kw):
    return DeliveryUpdate(gateway="test", provider_id=pid, provider_status=word or status, status=status, **kw)


class FixedIdSender:
    """Accepts everything and hands out the provider ids it was given, in order."""

    name = "fixed"

    def __init__(self, ids):
        self.ids = list(ids)

    def send(self, messages, *, deadline=None):
        return [SendResult("sent", provider_id=self.ids.pop(0), cost="KES 0.8000", parts=1) for _ in messages]


# ------------------------------------------------------------------ schema


def test_migration_matches_the_models_and_runs_twice(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    upgrade(engine)  # second time: nothing to do
    with engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), Base.metadata) == []


# ------------------------------------------------------------------ enqueue


def test_same_idempotency_key_twice_is_one_message(engine):
    a = enqueue(engine, idempotency_key="reply:at:1", to="0712345678", body="Balance: KES 1,200")
    b = enqueue(engine, idempotency_key="reply:at:1", to="0799999999", body="something else")
    assert a.id == b.id
    assert b.body == "Balance: KES 1,200" and b.recipient == "+254712345678"
    assert len(rows(engine)) == 1


def test_same_key_from_many_threads_at_once_is_one_message(engine):
    n_threads, n_keys = 8, 15
    ids: dict[str, set[int]] = {f"k{i}": set() for i in range(n_keys)}
    errors = []
    barrier = threading.Barrier(n_threads)

    def run(t):
        try:
            for i in range(n_keys):
                if i == 0:
                    barrier.wait()
                m = enqueue(engine, idempotency_key=f"k{i}", to="+254712345678", body=f"message {i} from {t}")
                ids[f"k{i}"].add(m.id)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert all(len(v) == 1 for v in ids.values()), ids
    assert len(rows(engine)) == n_keys


def test_enqueue_in_the_callers_session_commits_with_it(engine):
    with Session(engine) as s:
        m = enqueue(s, idempotency_key="in-tx", to="+254712345678", body="hi")
        assert m.id is not None
        s.rollback()
    assert rows(engine) == []
    with Session(engine) as s:
        enqueue(s, idempotency_key="in-tx", to="+254712345678", body="hi")
        s.commit()
    assert [r.idempotency_key for r in rows(engine)] == ["in-tx"]


def test_encoding_and_segments_are_recorded_and_text_normalized_to_gsm(engine):
    curly = enqueue(engine, idempotency_key="a", to="+254712345678", body="It\u2019s \u201cdue\u201d \u2014 pay today")
    assert (curly.body, curly.encoding, curly.segments) == ('It\'s "due" - pay today', "GSM-7", 1)
    long = enqueue(engine, idempotency_key="b", to="+254712345678", body="x" * 161)
    assert (long.encoding, long.chars, long.segments) == ("GSM-7", 161, 2)
    ucs = enqueue(engine, idempotency_key="c", to="+254712345678", body="Баланс: 1200 KES " + "я" * 60)
    assert ucs.encoding == "UCS-2" and ucs.segments == 2
    stored = {r.idempotency_key: (r.encoding, r.chars, r.segments) for r in rows(engine)}
    assert stored == {"a": ("GSM-7", 22, 1), "b": ("GSM-7", 161, 2), "c": ("UCS-2", 77, 2)}


def test_enqueue_rejects_bad_input(engine):
    with pytest.raises(InvalidPhone):
        enqueue(engine, idempotency_key="x", to="12", body="hi")
    with pytest.raises(ValueError):
        enqueue(engine, idempotency_key="x", to="+254712345678", body="   ")
    with pytest.raises(ValueError):
        enqueue(engine, idempotency_key="", to="+254712345678", body="hi")
    assert rows(engine) == []


# ------------------------------------------------------------------ opt-out


def test_opted_out_number_is_suppressed_except_replies_the_client_asked_for(engine):
    set_opt_out(engine, "0712345678", True, source="sms")
    assert is_opted_out(engine, "+254712345678")
    reminder = enqueue(engine, idempotency_key="rem", to="+254712345678", body="Your loan is due", kind="notification")
    reply = enqueue(engine, idempotency_key="rep", to="+254712345678", body="You are unsubscribed",
                    requested_by_client=True)
    assert reminder.status == "suppressed" and reminder.final_at is not None
    assert reply.status == "queued"

    set_opt_out(engine, "+254712345678", False, source="sms")  # START
    assert not is_opted_out(engine, "0712345678")
    assert enqueue(engine, idempotency_key="rem2", to="0712345678", body="Your loan is due").status == "queued"


def test_opt_out_after_enqueue_is_honoured_by_the_worker(engine):
    enqueue(engine, idempotency_key="rem", to="+254712345678", body="Reminder", kind="notification")
    enqueue(engine, idempotency_key="rep", to="+254712345678", body="Your balance", requested_by_client=True)
    apply_opt_out(engine, OptOutUpdate(gateway="africastalking", phone="+254712345678"))
    sender = LogSender(stream=open("/dev/null", "w"))
    Worker(engine, sender).run(once=True)
    assert [(r.idempotency_key, r.status) for r in rows(engine)] == [("rem", "suppressed"), ("rep", "sent")]
    assert [m.idempotency_key for m in sender.sent] == ["rep"]


# ------------------------------------------------------------------ delivery reports


def test_delivery_reports_move_forward_only_and_unknown_ids_are_recorded(engine):
    enqueue(engine, idempotency_key="m", to="+254712345678", body="hi")
    Worker(engine, FixedIdSender(["P1"])).run(once=True)
    assert rows(engine)[0].status == "sent"

    assert apply_delivery_report(engine, dlr("P1", "buffered", "Buffered")).outcome == "applied"
    assert apply_delivery_report(engine, dlr("P1", "submitted", "Submitted")).outcome == "ignored"
    r = apply_delivery_report(engine, dlr("P1", "delivered", "Success"))
    assert (r.outcome, r.status) == ("applied", "delivered")
    assert apply_delivery_report(engine, dlr("P1", "failed", "Failed", failure_reason="DeliveryFailure")).outcome == "ignored"
    assert apply_delivery_report(engine, dlr("P1", "delivered", "Success")).outcome == "ignored"
    assert apply_delivery_report(engine, dlr("nobody", "delivered", "Success")).outcome == "unknown"

    msg = rows(engine)[0]
    assert (msg.status, msg.provider_status) == ("delivered", "Success") and msg.final_at is not None
    with Session(engine) as s:
        reps = s.scalars(sa.select(DeliveryReport).order_by(DeliveryReport.id)).all()
    assert len(reps) == 6
    assert reps[-1].outbox_id is None and reps[-1].provider_id == "nobody"
    assert {r.outbox_id for r in reps[:-1]} == {msg.id}


def test_failed_report_keeps_the_reason(engine):
    enqueue(engine, idempotency_key="m", to="+254712345678", body="hi")
    Worker(engine, FixedIdSender(["P9"])).run(once=True)
    apply_delivery_report(engine, dlr("P9", "failed", "Failed", failure_reason="UserInBlacklist"))
    msg = rows(engine)[0]
    assert (msg.status, msg.last_error) == ("failed", "UserInBlacklist")


def test_report_that_races_ahead_of_the_worker_is_applied_when_the_id_is_recorded(engine):
    enqueue(engine, idempotency_key="m", to="+254712345678", body="hi")
    assert apply_delivery_report(engine, dlr("EARLY", "delivered", "Success")).outcome == "unknown"
    Worker(engine, FixedIdSender(["EARLY"])).run(once=True)
    assert rows(engine)[0].status == "delivered"
    with Session(engine) as s:
        assert s.scalars(sa.select(DeliveryReport.outbox_id)).all() == [rows(engine)[0].id]


# ------------------------------------------------------------------ worker basics (both databases)


class FlakySender:
    name = "flaky"

    def __init__(self, results):
        self.results = list(results)
        self.calls = 0

    def send(self, messages, *, deadline=None):
        self.calls += 1
        return [self.results.pop(0) for _ in messages]


class Clock:
    def __init__(self):
        self.now = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)

    def __call__(self):
        return self.now


def test_retry_backs_off_then_gives_up_after_max_attempts(engine):
    clock = Clock()
    enqueue(engine, idempotency_key="m", to="+254712345678", body="hi", not_before=clock.now)
    sender = FlakySender([SendResult.retry("405 InsufficientBalance", status_code=405)] * 3)
    w = Worker(engine, sender, clock=clock, max_attempts=3, retry_base_seconds=10, retry_max_seconds=15)
    delays = []
    for attempt in (1, 2):
        assert w.run(once=True) == 1
        m = rows(engine)[0]
        assert (m.status, m.attempts, m.last_error) == ("queued", attempt, "405 InsufficientBalance")
        delays.append((m.next_attempt_at - clock.now).total_seconds())
        assert w.run(once=True) == 0  # not due yet
        clock.now = m.next_attempt_at
    assert 5 <= delays[0] <= 10 and 7.5 <= delays[1] <= 15
    w.run(once=True)
    m = rows(engine)[0]
    assert m.status == "failed" and m.attempts == 3
    assert m.last_error == "gave up after 3 attempts; last: 405 InsufficientBalance"


def test_expired_lease_makes_the_row_claimable_again(engine):
    clock = Clock()
    enqueue(engine, idempotency_key="m", to="+254712345678", body="hi", not_before=clock.now)
    dead = Worker(engine, LogSender(), clock=clock, lease_seconds=30, name="dead")
    claimed = dead.claim()  # ... and the worker dies before sending
    assert len(claimed) == 1
    alive = Worker(engine, FixedIdSender(["P2"]), clock=clock, lease_seconds=30, name="alive")
    assert alive.claim() == []  # the lease holds
    clock.now += dt.timedelta(seconds=31)
    assert alive.run(once=True) == 1
    m = rows(engine)[0]
    assert (m.status, m.attempts, m.provider_id) == ("sent", 2, "P2")
    # sent, and still saying it was taken over (the dead worker may have sent it too)
    assert m.last_error == f"lease expired: worker {claimed[0].token} did not finish; retrying (may have been sent)"
    assert claimed[0].token.startswith("dead:")
    # the dead worker coming back cannot overwrite the result
    assert dead.record(claimed, [SendResult.failed("late")]) == 0
    assert rows(engine)[0].status == "sent"


def test_max_attempts_applies_to_rows_whose_leases_keep_expiring(engine):
    clock = Clock()
    enqueue(engine, idempotency_key="m", to="+254712345678", body="poison", not_before=clock.now)
    w = Worker(engine, LogSender(), clock=clock, lease_seconds=5, max_attempts=2)
    for _ in range(2):
        assert len(w.claim()) == 1
        clock.now += dt.timedelta(seconds=6)
    assert w.claim() == []
    m = rows(engine)[0]
    assert m.status == "failed" and m.last_error.startswith("gave up after 2 attempts; last: lease expired: worker ")


def test_worker_sweep_attaches_a_report_that_passed_the_workers_commit(engine):
    enqueue(engine, idempotency_key="m", to="+254712345678", body="hi")
    Worker(engine, FixedIdSender(["LATE"])).run(once=True)
    # simulate the PostgreSQL interleaving: the report is stored unmatched although the id exists
    with engine.begin() as c:
        c.execute(sa.insert(DeliveryReport).values(gateway="test", provider_id="LATE", provider_status="Success",
                                                   status="delivered", raw={}, received_at=dt.datetime.now(dt.timezone.utc)))
    assert rows(engine)[0].status == "sent"
    assert Worker(engine, LogSender()).sweep() == 1
    assert rows(engine)[0].status == "delivered"
    assert Worker(engine, LogSender()).sweep() == 0


# ------------------------------------------------------------------ results recorded as they come back


class WatchingSender:
    """One message per call; before each send it counts the rows already recorded ``sent`` in the database."""

    name = "watching"

    def __init__(self, engine, on_send=None):
        self.engine, self.on_send = engine, on_send
        self.started = 0
        self.seen: list[tuple[int, int]] = []  # (sends started before this one, rows recorded sent)
        self.lock = threading.Lock()

    def send(self, messages, *, deadline=None):
        with self.lock:
            before, self.started = self.started, self.started + len(messages)
        with self.engine.connect() as c:
            recorded = c.execute(sa.text("SELECT count(*) FROM outbox WHERE status = 'sent'")).scalar()
        self.seen.append((before, recorded))
        if self.on_send:
            self.on_send(self.started)
        return [SendResult("sent", provider_id=f"W{m.id}") for m in messages]


@pytest.mark.parametrize("concurrency", [1, 3])
def test_each_result_is_recorded_before_more_than_concurrency_sends_are_outstanding(engine, concurrency):
    """A SIGKILL at any moment can only re-send what was sent and not yet recorded: never more than ``concurrency``."""
    for i in range(12):
        enqueue(engine, idempotency_key=f"m{i}", to=f"+2547123456{i:02d}", body=f"Reminder {i}", kind="notification")
    sender = WatchingSender(engine)
    w = Worker(engine, sender, batch=12, concurrency=concurrency)
    assert w.run(once=True) == 12
    assert len(sender.seen) == 12
    # when a send starts, every earlier send is recorded except those still held by the other threads
    assert all(before - recorded <= concurrency - 1 for before, recorded in sender.seen), sender.seen
    assert {m.status for m in rows(engine)} == {"sent"} and w.stats["sent"] == 12


def test_identical_texts_still_go_in_one_request(engine):
    class Bulk(WatchingSender):
        max_recipients = 100

    for i in range(3):
        enqueue(engine, idempotency_key=f"a{i}", to=f"+25471234560{i}", body="Branch closed today")
    enqueue(engine, idempotency_key="other", to="+254712345699", body="Your balance")
    sender = Bulk(engine)
    Worker(engine, sender).run(once=True)
    assert sorted(b for b, _ in sender.seen) in ([0, 3], [0, 1])  # two requests: 3 recipients, then 1 (any order)


def test_stop_finishes_the_send_in_flight_and_puts_the_rest_back_uncounted(engine):
    for i in range(5):
        enqueue(engine, idempotency_key=f"m{i}", to=f"+2547123456{i:02d}", body=f"Reminder {i}")
    stop = threading.Event()
    sender = WatchingSender(engine, on_send=lambda started: stop.set())  # SIGTERM arrives during the first send
    w = Worker(engine, sender, concurrency=1)
    assert w.run(stop_event=stop) == 5
    got = rows(engine)
    assert [(m.status, m.attempts) for m in got] == [("sent", 1)] + [("queued", 0)] * 4
    assert all(m.leased_by is None and m.last_error is None for m in got)
    assert w.stats["released"] == 4
    assert Worker(engine, LogSender(stream=open("/dev/null", "w"))).run(once=True) == 4  # due at once


def test_rows_not_started_before_the_lease_deadline_go_back_uncounted(engine):
    class SlowGateway(WatchingSender):
        send_timeout = 10.0  # seconds one request may take

    enqueue(engine, idempotency_key="m", to="+254712345678", body="hi")
    sender = SlowGateway(engine)
    w = Worker(engine, sender, lease_seconds=25)  # 2 x 10 + 5: just enough
    w.lease = dt.timedelta(seconds=12)  # as if the lease were shorter: no request could finish inside it
    assert w.dispatch_once() == 1
    assert sender.seen == [] and [(m.status, m.attempts) for m in rows(engine)] == [("queued", 0)]


# ------------------------------------------------------------------ the lease must cover a send


def test_worker_refuses_a_lease_shorter_than_twice_the_gateway_timeout_plus_5s(engine):
    from convo.jobs.worker import LeaseTooShort, gateway_timeout, min_lease_seconds
    from gateways.africastalking import AfricasTalkingSender

    at = AfricasTalkingSender("mfi", "k", timeout=10)
    assert gateway_timeout(at) == pytest.approx(13.05)  # connect 3.05 + read 10, as requests is given them
    assert min_lease_seconds(13.05) == pytest.approx(31.1)
    with pytest.raises(LeaseTooShort, match=r"CONVO_WORKER_LEASE_SECONDS=30 is too short .* at least 2 x that \+ 5 s = 31\.1 s"):
        Worker(engine, at, lease_seconds=30)
    Worker(engine, at, lease_seconds=31.1)
    Worker(engine, LogSender(), lease_seconds=1)  # a gateway without a network timeout: nothing to cover
    at.close()


def _env_for(tmp_path, **extra):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CONVO_")}
    clean.update(PYTHONPATH=str(Path(__file__).resolve().parents[2]),
                 CONVO_DATABASE_URL=f"sqlite:///{tmp_path / 'convo.db'}", **extra)
    return clean


def _cli(args, tmp_path, **env):
    """``convo ARGS`` in its own process (the console script's entry point)."""
    return subprocess.run([sys.executable, "-c", "import sys; from convo.cli import main; sys.exit(main())", *args],
                          cwd=tmp_path, env=_env_for(tmp_path, **env), text=True, capture_output=True, timeout=120)


def test_convo_worker_refuses_to_start_with_a_lease_the_gateway_timeout_does_not_fit(tmp_path):
    """Before: the worker started, every send was refused "not sent: lease about to expire", retried forever, silently."""
    upgrade(f"sqlite:///{tmp_path / 'convo.db'}")
    at = dict(CONVO_AT_USERNAME="mfi", CONVO_AT_API_KEY="k", CONVO_AT_BASE_URL="http://127.0.0.1:9")
    r = _cli(["worker", "--once"], tmp_path, CONVO_WORKER_LEASE_SECONDS="20", **at)
    assert r.returncode != 0
    assert ("CONVO_WORKER_LEASE_SECONDS=20 is too short for gateway 'africastalking': one send may take 13.05 s "
            "(connect + read timeout, CONVO_AT_TIMEOUT), and the lease must be at least 2 x that + 5 s = 31.1 s") in r.stderr
    # a shorter gateway timeout makes the same lease enough (2 x (3.05 + 2) + 5 = 15.1)
    ok = _cli(["worker", "--once"], tmp_path, CONVO_WORKER_LEASE_SECONDS="20", CONVO_AT_TIMEOUT="2", **at)
    assert ok.returncode == 0, ok.stderr[-2000:]
    # python -m convo.jobs.worker says the same
    r = subprocess.run([sys.executable, "-m", "convo.jobs.worker", "--once", "--lease-seconds", "31"], cwd=tmp_path,
                       env=_env_for(tmp_path, **at), text=True, capture_output=True, timeout=120)
    assert r.returncode == 2 and "at least 2 x that + 5 s = 31.1 s" in r.stderr
    # and --help states the rule
    h = _cli(["worker", "--help"], tmp_path)
    assert h.returncode == 0 and "CONVO_WORKER_LEASE_SECONDS >= 2 x the gateway's send timeout + 5 s" in " ".join(h.stdout.split())

