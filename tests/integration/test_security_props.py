"""Property tests: random dialogs never reveal figures without the right PIN and never leave a PIN at rest;
hostile answers in real dialogs never get a 500 or leave a broken session behind (every endpoint is fuzzed
on PostgreSQL by tests/e2e/test_fuzz_pg.py)."""
from __future__ import annotations

import itertools

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from convo.dialog.engine import Inbound
from convo.dialog.sessions import decode_session
from tests.support.e2e import give_pin

GRACE = "+254700000101"
GOOD, NEW = "730518", "482617"          # distinctive 6-digit PINs: searched for everywhere afterwards
CB, STAFF = "cb-token-props", "staff-token-props"
REVEALS = ("Balance:", "Amount due:", "nothing is due", "Salio:", "Solde", "Montant")
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def app(_redis_db, tmp_path_factory):
    import redis

    from convo.cli import sim_settings
    from convo.devkit.fineract_sim import start_simulator
    from convo.store.db import upgrade
    from convo.web import create_app

    url = f"redis://127.0.0.1:6379/{_redis_db}"
    redis.Redis.from_url(url).flushdb()
    db = f"sqlite:///{tmp_path_factory.mktemp('props')}/convo.db"
    upgrade(db)
    sim = start_simulator()
    try:
        a = create_app(sim_settings(sim.url, redis_url=url, database_url=db, flows_reload_seconds=0,
                                    callback_token=CB, staff_token=STAFF, pin_argon2_memory_kib=1024,
                                    pin_argon2_time_cost=1, ussd_sessions_per_hour=0, sms_inbound_per_hour=0,
                                    sms_replies_per_hour=0))
        yield a
    finally:
        sim.stop()


def _at_rest(services) -> list[str]:
    out = []
    r = services.redis
    for key in r.scan_iter("*"):
        kind = r.type(key)
        if kind == b"string":
            out.append(f"{key!r}={r.get(key)!r}")
        elif kind == b"list":
            out.append(f"{key!r}={r.lrange(key, 0, -1)!r}")
    meta = sa.MetaData()
    meta.reflect(services.db)
    with services.db.connect() as c:
        for t in meta.sorted_tables:
            for row in c.execute(sa.select(t)):
                out.append(f"{t.name}:{tuple(row)!r}")
    return out


word = st.sampled_from(["1", "2", "3", "4", "5", "6", "7", "0", "98", "BAL", "DUE", "PIN", "HELP", GOOD, NEW,
                        "111111", "8073", "12", "abc", "", "*", "1234567"])
step = st.tuples(st.sampled_from(["dial", "ussd", "sms"]), word)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=14))
def test_random_dialogs_never_reveal_figures_without_the_pin_nor_keep_it(app, steps):
    services = app.extensions["convo"]
    give_pin(services, GRACE, GOOD)                          # known PIN, no lock, for every example
    engine = services.engine
    ussd_sid, ussd_inputs, sms_dialog = None, [], []
    for kind, text in steps:
        if kind == "dial" or ussd_sid is None and kind == "ussd":
            ussd_sid, ussd_inputs = f"ATUid_prop_{next(_ids)}", []
            reply = engine.handle(Inbound("ussd", "africastalking", ussd_sid, GRACE, "", "*384*12#"))
            dialog = ussd_inputs
        elif kind == "ussd":
            if "*" in text or text == "":
                continue                                     # AT never sends these as one answer
            ussd_inputs.append(text)
            reply = engine.handle(Inbound("ussd", "africastalking", ussd_sid, GRACE, "*".join(ussd_inputs),
                                          "*384*12#"))
            dialog = ussd_inputs
        else:
            if text in ("BAL", "DUE", "PIN", "HELP"):
                sms_dialog = []
            sms_dialog.append(text)
            reply = engine.handle(Inbound("sms", "africastalking", f"ATXid_prop_{next(_ids)}", GRACE, text))
            dialog = sms_dialog
        if any(w in reply.text for w in REVEALS):
            assert GOOD in dialog or NEW in dialog, (steps, reply.text)
        assert GOOD not in reply.text and NEW not in reply.text
    for entry in _at_rest(services):
        assert GOOD not in entry and NEW not in entry, entry


# --------------------------------------------------------------------------- fuzz every endpoint
HOSTILE = st.sampled_from([
    "", " ", "1", "*", "**", "1*2*3", "' OR 1=1 --", "'; DROP TABLE subscribers; --", "{{ 7*7 }}",
    "{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}", "${jndi:ldap://x/a}",
    "<script>alert(1)</script>", "\x00", "\r\n", "é" * 3, "🙂" * 10, "٣٤٥٦", "A" * 600, "9" * 2000,
    "+254700000101", "0700000101", "+254799999999", "ATUid_x", "Success", "Failed", "Incomplete",
    "-1", "1e309", "NaN", "null", "[]", "{}", "Queued", "Submitted", "DeliveryFailure"])
# Every endpoint with hostile payloads (forms, JSON, paths, headers), on PostgreSQL: tests/e2e/test_fuzz_pg.py.


# a valid-looking dialog with hostile answers: every reply is a normal screen
@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                    HealthCheck.too_slow])
@given(st.lists(st.one_of(HOSTILE, st.text(alphabet=st.characters(blacklist_categories=["Cc", "Cs"]),
                                           max_size=30)), min_size=1, max_size=6),
       st.sampled_from([GRACE, "+254700000105", "+254799999999"]))
def test_hostile_answers_in_real_dialogs(app, answers, phone):
    c = app.test_client()
    sid = f"ATUid_fz_{next(_ids)}"
    inputs: list[str] = []
    r = c.post(f"/gateways/africastalking/ussd?token={CB}", data={
        "sessionId": sid, "serviceCode": "*384*12#", "phoneNumber": phone, "text": ""})
    assert r.status_code == 200
    for a in answers:
        inputs.append(a)
        r = c.post(f"/gateways/africastalking/ussd?token={CB}", data={
            "sessionId": sid, "serviceCode": "*384*12#", "phoneNumber": phone, "text": "*".join(inputs)})
        body = r.get_data(as_text=True)
        assert r.status_code in (200, 400), body
        if r.status_code == 200:
            assert body.startswith(("CON ", "END ")), body
            assert "internal" not in body.lower() and "Traceback" not in body
        r2 = c.post(f"/gateways/africastalking/sms?token={CB}", data={
            "id": f"ATXid_fz_{next(_ids)}", "from": phone, "to": "22384", "text": a})
        assert r2.status_code in (200, 400), r2.get_data(as_text=True)
    services = app.extensions["convo"]
    for key in services.redis.scan_iter("convo:{*}:s"):
        value = decode_session(services.redis.get(key))
        assert isinstance(value, dict) and "r" in value and isinstance(value["r"], str)
