"""SMS conversations end to end: AT inbound callbacks -> engine -> outbox -> worker -> (real SDK) fake AT
-> delivery reports back over HTTP. Database: real PostgreSQL (own schema)."""
from __future__ import annotations

import time

import pytest
import requests
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from convo.flowlang.keywords import first_word
from convo.jobs.worker import run_worker
from convo.notify.outbox import enqueue, is_opted_out
from convo.store.db import OutboxMessage
from tests.support.e2e import Handset, give_pin, running_sms_stack

GRACE = "+254700000101"
FAITH = "+254700000105"
PINS = {GRACE: "2468", FAITH: "5190"}


@pytest.fixture
def stack(redis_url, pg_url):
    with running_sms_stack(redis_url, pg_url, sms_session_timeout=2) as s:
        for number, pin in PINS.items():
            give_pin(s[2], number, pin)
        yield s


def deliver(services) -> None:
    """What `convo worker` does, once."""
    run_worker(services.settings, once=True, handle_signals=False, engine=services.db)


def rows(services) -> list[OutboxMessage]:
    with sa.orm.Session(services.db) as s:
        return list(s.scalars(sa.select(OutboxMessage).order_by(OutboxMessage.id)))


def sent_bodies(fake, services=None) -> list[str]:
    """What the fake AT received; with ``services``, in the order the replies were written to the outbox."""
    got = [m["message"] for m in fake.fake.accepted()]
    if services is None:
        return got
    ordered = [r.body for r in rows(services) if r.status not in ("queued", "suppressed")]
    assert sorted(ordered) == sorted(got)
    return ordered


@pytest.mark.parametrize("word", ["BAL", "bal", " Bal ", "Bal.", "balance please"])
def test_grace_texts_bal_and_gets_her_balance(stack, word):
    gw, fake, services = stack
    grace = Handset(gw, GRACE)
    grace.text(word)
    grace.text(PINS[GRACE])
    assert [r.status for r in rows(services)] == ["queued", "queued"]   # nothing is sent inline
    deliver(services)
    prompt, answer = sent_bodies(fake, services)
    assert prompt == "To see your balance, reply with your PIN." and "Balance: KES" not in prompt
    assert answer == "Voluntary Savings *0042\nBalance: KES 8,637.50\nAvailable: KES 7,637.50" \
        or "Balance: KES 8,637.50" in answer


def test_salio_answers_in_swahili_and_the_delivery_report_comes_back(stack):
    gw, fake, services = stack
    grace = Handset(gw, GRACE)
    grace.text("salio")
    grace.text(PINS[GRACE])
    deliver(services)
    assert "Salio: KES 8,637.50" in sent_bodies(fake, services)[1]
    assert fake.fake.wait_reports(10)
    for _ in range(50):
        if rows(services)[0].status == "delivered":
            break
        time.sleep(0.1)
    row = rows(services)[0]
    assert row.status == "delivered" and row.provider_id and row.cost


def test_due_with_two_loans_continues_over_several_texts(stack):
    gw, fake, services = stack
    faith = Handset(gw, FAITH)
    faith.text("DUE")
    faith.text(PINS[FAITH])
    faith.text("2")
    deliver(services)
    _, menu, answer = sent_bodies(fake, services)
    assert menu.startswith("Choose an account:\n1. ") and menu.endswith("Reply with the number of your choice.")
    assert "Amount due" in answer or "Total due" in answer or "nothing is due" in answer


def test_an_answer_after_the_inactivity_window_gets_help_instead(stack):
    gw, fake, services = stack
    faith = Handset(gw, FAITH)
    faith.text("DUE")
    time.sleep(2.5)                                   # sms_session_timeout=2 in this stack
    faith.text("2")
    deliver(services)
    assert sent_bodies(fake, services)[1].startswith("Text BAL for your balance")


def test_a_new_keyword_starts_over(stack):
    gw, fake, services = stack
    faith = Handset(gw, FAITH)
    faith.text("DUE")
    faith.text("BAL")
    faith.text(PINS[FAITH])
    deliver(services)
    assert "Balance: KES" in sent_bodies(fake, services)[2]


def test_a_duplicate_delivery_of_one_message_gets_one_reply(stack):
    gw, fake, services = stack
    grace = Handset(gw, GRACE)
    assert grace.text("BAL", message_id="ATXid_dup").text == "OK"
    assert grace.text("BAL", message_id="ATXid_dup").text == "OK (duplicate)"
    deliver(services)
    assert len(sent_bodies(fake)) == 1


def test_premium_reply_carries_the_link_id(stack):
    gw, fake, services = stack
    Handset(gw, GRACE).text("HELP", link_id="SampleLinkId123")
    deliver(services)
    assert fake.fake.accepted()[0]["linkId"] == "SampleLinkId123"


def test_unknown_text_gets_help_but_never_more_than_three_times_an_hour(stack):
    gw, fake, services = stack
    robot = Handset(gw, "+254711000999")
    for i in range(5):
        robot.text(f"Your parcel {i} is ready")
    deliver(services)
    assert len(sent_bodies(fake)) == 3 and all(b.startswith("Text BAL") for b in sent_bodies(fake))


def test_stop_and_start(stack):
    gw, fake, services = stack
    grace = Handset(gw, GRACE)
    grace.text("STOP")
    assert is_opted_out(services.db, GRACE)
    reminder = enqueue(services.db, idempotency_key="reminder:test:1", to=GRACE, body="Your installment is due",
                       kind="notification")
    assert reminder.status == "suppressed"
    grace.text("start")
    assert not is_opted_out(services.db, GRACE)
    deliver(services)
    stop_reply, start_reply = sent_bodies(fake, services)          # the answers she asked for always go
    assert "Text START" in stop_reply and "Text STOP" in start_reply


def test_africas_talking_opt_out_callback(stack):
    gw, _, services = stack
    r = requests.post(f"{gw}/gateways/africastalking/optout", data={"senderId": "MFI", "phoneNumber": GRACE},
                      timeout=5)
    assert r.status_code == 200 and is_opted_out(services.db, GRACE)


def test_unknown_delivery_report_is_recorded_not_an_error(stack):
    gw, _, _ = stack
    r = requests.post(f"{gw}/gateways/africastalking/delivery", data={
        "id": "ATXid_nobody", "status": "Success", "phoneNumber": GRACE, "networkCode": "63902",
        "retryCount": "0"}, timeout=5)
    assert r.status_code == 200 and "unknown" in r.text


@pytest.mark.parametrize("form, reason", [
    ({"from": GRACE, "text": "BAL"}, "missing field 'id'"),
    ({"id": "x1", "text": "BAL"}, "missing field 'from'"),
    ({"id": "x1", "from": "junk", "text": "BAL"}, "'from' is not a phone number"),
    ({"id": "x1", "from": GRACE}, "missing field 'text'"),
    ({"id": "x1", "from": GRACE, "text": "x" * 2000}, "longer than"),
])
def test_malformed_sms_callbacks_get_400(stack, form, reason):
    gw, _, services = stack
    r = requests.post(f"{gw}/gateways/africastalking/sms", data=form, timeout=5)
    assert r.status_code == 400 and reason in r.text
    assert rows(services) == []


@given(st.sampled_from(["BAL", "DUE", "HELP", "STOP", "START", "SALIO"]),
       st.text(alphabet=" \t\n", max_size=3), st.text(alphabet=" \t\n", max_size=3),
       st.lists(st.booleans(), min_size=6, max_size=6), st.sampled_from(["", ".", "!", " please"]))
def test_keyword_matching_ignores_case_whitespace_and_punctuation(word, before, after, upper, tail):
    mixed = "".join(c.upper() if u else c.lower() for c, u in zip(word, upper + [True] * 6))
    assert first_word(before + mixed + tail + after) == word


@given(st.text(max_size=50))
def test_first_word_never_crashes(text):
    w = first_word(text)
    assert w is None or (w == w.upper() and " " not in w)
