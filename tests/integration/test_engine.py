"""The engine's pure parts (cumulative-text reducer, validators) and its Redis session store."""
from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from convo.dialog.engine import reduce_ussd_text
from convo.dialog.sessions import SessionBusy, SessionStore, make_redis
from convo.flowlang.validators import validate

inputs = st.lists(st.text(alphabet="0123456789#", min_size=1, max_size=6), min_size=0, max_size=8)


@given(inputs)
def test_each_hop_sees_exactly_its_newest_input(history):
    consumed = None
    text = ""
    assert reduce_ussd_text("", None) == []
    consumed = 0
    for answer in history:
        text = answer if not text else f"{text}*{answer}"
        assert reduce_ussd_text(text, consumed) == [answer]
        assert reduce_ussd_text(text, len(text)) is None          # a retried callback: nothing new
        consumed = len(text)


@given(st.lists(st.text(alphabet="0123456789", min_size=1, max_size=4), min_size=1, max_size=5))
def test_a_shortcut_dial_replays_every_choice(parts):
    assert reduce_ussd_text("*".join(parts), None) == parts


@given(st.text(max_size=40), st.integers(min_value=0, max_value=60))
def test_the_reducer_never_crashes(text, consumed):
    out = reduce_ussd_text(text, consumed)
    assert out is None or (isinstance(out, list) and all(isinstance(x, str) for x in out))


def test_input_containing_a_star_after_the_history_stays_one_input():
    assert reduce_ussd_text("1*2*3", 1) == ["2*3"]


@pytest.mark.parametrize("spec, raw, expected", [
    ({"type": "amount"}, "1,500", (True, "1500")),
    ({"type": "amount"}, "1500.5", (True, "1500.5")),
    ({"type": "amount"}, "1000,50", (True, "1000.50")),
    ({"type": "amount"}, "0", (False, None)),
    ({"type": "amount"}, "-5", (False, None)),
    ({"type": "amount", "max": 100}, "101", (False, None)),
    ({"type": "digits", "min_length": 2}, "7", (False, None)),
    ({"type": "pin"}, "1234", (True, "1234")),
    ({"type": "pin"}, "12a4", (False, None)),
    ({"type": "pin"}, "١٢٣٤", (False, None)),
    ({"type": "choice", "choices": ["yes", "no"]}, "YES", (True, "yes")),
    ({"type": "regex", "pattern": r"[A-Z]{2}\d{4}"}, "AB1234", (True, "AB1234")),
])
def test_validators(spec, raw, expected):
    assert validate(spec, raw) == expected


@given(st.text(max_size=30), st.sampled_from(["digits", "amount", "pin", "text"]))
def test_validators_never_crash(raw, kind):
    ok, value = validate({"type": kind}, raw)
    assert ok is (value is not None)


def test_session_store_locks_and_saves_in_one_round_trip_each(redis_url):
    store = SessionStore(make_redis(redis_url))
    data, token = store.acquire("ussd:at:1")
    assert data is None
    with pytest.raises(SessionBusy):
        store.acquire("ussd:at:1", wait=0.05)              # a second callback waits, then gives up
    assert store.save("ussd:at:1", token, {"s": "menu"}, ttl=200)
    data, token2 = store.acquire("ussd:at:1")
    assert data == {"s": "menu"}
    assert not store.save("ussd:at:1", token, {"s": "stale"}, ttl=200)   # an old lock cannot write
    store.release("ussd:at:1", token2)
    ttl = store.redis.ttl("convo:{ussd:at:1}:s")
    assert 0 < ttl <= 200


def test_only_one_of_many_concurrent_hops_holds_the_session(redis_url):
    store = SessionStore(make_redis(redis_url))
    holders = []
    barrier = threading.Barrier(8)

    def hop():
        barrier.wait()
        try:
            _, token = store.acquire("ussd:at:race", wait=0)
            holders.append(token)
        except SessionBusy:
            pass

    threads = [threading.Thread(target=hop) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(holders) == 1
