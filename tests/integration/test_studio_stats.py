"""Drop-off counts (convo.dialog.stats): counted on the hop path with the session write, real Redis, over HTTP;
shown in /metrics as convo_flow_state_total. Nothing about the caller is kept."""
from __future__ import annotations

import redis as redis_lib

from convo.dialog import stats
from tests.support.e2e import Phone, give_pin, running_gateway

GRACE = "+254700000101"


def test_dialogs_are_counted_per_state_and_edge_without_phone_numbers(redis_url):
    with running_gateway(redis_url) as (gw, _sim, services):
        give_pin(services, GRACE, "2468")
        fs = services.flows.current
        for _ in range(2):                            # two callers check the balance to the end
            phone = Phone(gw, GRACE)
            phone.dial()
            phone.answer("1")
            assert "Balance: KES" in phone.answer("2468")
        phone = Phone(gw, GRACE)                      # one hangs up at the menu
        phone.dial()
        phone = Phone(gw, GRACE)                      # one repeats a callback: not counted twice
        phone.dial()
        phone.repeat()
        r = redis_lib.Redis.from_url(redis_url)
        main = stats.read_counts(r, fs, "main")
        assert main["menu"].entered == 4 and main["menu"].to == {"balance": 2}
        assert main["menu"].timed_out == 2
        assert main["balance"].entered == 2 and main["balance"].ended == 2     # ended inside the sub-flow
        bal = stats.read_counts(r, fs, "balance")
        assert bal["show"].entered == 2 and bal["show"].ended == 2 and bal["fetch"].to == {"show": 2}
        cp = stats.read_counts(r, fs, "confirm_pin")
        assert sum(c.entered for c in cp.values()) > 0
        # nothing that names the caller
        keys = [k.decode() for k in r.keys("convo:{stats}:*")]
        for k in keys:
            dump = repr(r.hgetall(k)) + k
            assert "254700000101" not in dump and "2468" not in dump and "ATUid" not in dump
        ttl = r.ttl(stats.day_key(fs.version, __import__("datetime").datetime.now(
            __import__("datetime").timezone.utc).date().isoformat()))
        assert 89 * 86400 < ttl <= 90 * 86400
        assert [v for v, _ in stats.versions(r)] == [fs.version]
        import requests

        text = requests.get(f"{gw}/metrics", timeout=10).text
        assert 'convo_flow_state_total{flow="balance",outcome="ended",state="show"} 2.0' in text
        assert 'convo_flow_state_total{flow="main",outcome="next",state="menu"} 2.0' in text


def test_counting_can_be_switched_off(redis_url):
    with running_gateway(redis_url, flow_stats=False) as (gw, _sim, services):
        Phone(gw, GRACE).dial()
        assert redis_lib.Redis.from_url(redis_url).keys("convo:{stats}:*") == []


def test_a_runtime_error_is_counted_at_its_state():
    class F:
        flows = {}
    c = stats.hop_fields(F(), ("f", "a"), [("f", "b")], True, True, True)
    assert c == {("f", "a", "in"): 1, ("f", "a", ">b"): 1, ("f", "b", "in"): 1, ("f", "b", "err"): 1}
