"""Delivery reports in any order, duplicated: the message ends at the most advanced status; final never regresses."""
from __future__ import annotations

import itertools

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convo.jobs.worker import Worker
from convo.notify.outbox import FINAL, RANK, apply_delivery_report, enqueue
from convo.store.db import OutboxMessage, make_engine, upgrade
from gateways.africastalking import parse_delivery_report
from gateways.base import SendResult

_ids = itertools.count()

#: realistic AT report sequences (as Africa's Talking sends them, in order)
SEQUENCES = [
    ["Sent", "Submitted", "Buffered", "Success"],
    ["Sent", "Submitted", "Failed"],
    ["Submitted", "Rejected"],
    ["Sent", "Buffered", "AbsentSubscriber"],
    ["Sent", "Submitted", "Buffered"],  # no final report (yet)
    ["Success"],
]


class OneIdSender:
    name = "test"

    def __init__(self, pid):
        self.pid = pid

    def send(self, messages, *, deadline=None):
        return [SendResult("sent", provider_id=self.pid)]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('dlr') / 'dlr.db'}"
    upgrade(url)
    eng = make_engine(url)
    yield eng
    eng.dispose()


def new_sent_message(engine) -> tuple[int, str]:
    n = next(_ids)
    pid = f"ATXid_{n}"
    m = enqueue(engine, idempotency_key=f"dlr-{n}", to="+254712345678", body="hi")
    Worker(engine, OneIdSender(pid)).run(once=True)
    return m.id, pid


def status_of(engine, mid):
    with engine.connect() as c:
        return c.execute(sa.select(OutboxMessage.status).where(OutboxMessage.id == mid)).scalar()


@st.composite
def shuffled_with_duplicates(draw):
    seq = draw(st.sampled_from(SEQUENCES))
    extra = draw(st.lists(st.sampled_from(seq), max_size=6))
    return seq, draw(st.permutations(seq + extra))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=shuffled_with_duplicates())
def test_final_status_is_the_most_advanced_and_never_regresses(engine, case):
    seq, arrivals = case
    mid, pid = new_sent_message(engine)
    seen_final = None
    for word in arrivals:
        apply_delivery_report(engine, parse_delivery_report({"id": pid, "status": word, "phoneNumber": "+254712345678"}))
        now = status_of(engine, mid)
        if seen_final is not None:
            assert now == seen_final, f"final {seen_final} regressed to {now} after {word}"
        elif now in FINAL:
            seen_final = now
    mapped = [parse_delivery_report({"id": pid, "status": w}).status for w in seq]
    expected = max(mapped, key=lambda s: RANK[s])
    assert status_of(engine, mid) == expected
