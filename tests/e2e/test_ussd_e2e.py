"""USSD dialogs end to end: Africa's Talking callbacks over HTTP -> gateway -> Fineract simulator over HTTP."""
from __future__ import annotations

import concurrent.futures as cf
import re

import pytest
import requests

from tests.support.e2e import Phone, give_pin, running_gateway

GRACE = "+254700000101"          # one savings account, a loan in arrears
FAITH = "+254700000105"          # two loans, one savings
ESTHER = "+254700000107"         # no accounts
PINS = {GRACE: "2468", FAITH: "5190", ESTHER: "3816"}


def menu_number(screen: str, label: str) -> str:
    m = re.search(rf"(\d+)\. {re.escape(label)}\b", screen)
    assert m, screen
    return m.group(1)


@pytest.fixture(scope="module")
def stack(_redis_db):
    import redis

    url = f"redis://127.0.0.1:6379/{_redis_db}"
    redis.Redis.from_url(url).flushdb()
    with running_gateway(url) as s:
        for number, pin in PINS.items():
            give_pin(s[2], number, pin)
        yield s


@pytest.fixture
def gateway(stack):
    return stack[0]


def test_grace_checks_her_balance(gateway):
    phone = Phone(gateway, GRACE)
    menu = phone.dial()
    assert menu.startswith("CON Welcome Grace. Choose:\n1. Balance\n2. Amount due\n") and ". PIN" in menu
    assert phone.answer("1") == "CON Enter your PIN:"
    screen = phone.answer(PINS[GRACE])
    assert screen.startswith("END ") and "Balance: KES 8,637.50" in screen and "Available: KES 7,637.50" in screen


def test_grace_asks_what_is_due_on_her_loan_in_arrears(gateway):
    phone = Phone(gateway, GRACE)
    phone.dial()
    phone.answer("2")
    screen = phone.answer(PINS[GRACE])
    assert screen.startswith("END ")
    assert "\nOverdue, pay now: KES 1,120.00 (since " in screen and "\nTotal due: KES 3,240.00" in screen


def test_faith_chooses_one_of_two_loans(gateway):
    phone = Phone(gateway, FAITH)
    phone.dial()
    phone.answer("2")
    menu = phone.answer(PINS[FAITH])
    assert menu.startswith("CON Choose an account:\n1. ") and "\n2. " in menu
    assert "*" in menu                                    # account numbers are masked
    screen = phone.answer("2")
    assert screen.startswith("END ") and ("Amount due" in screen or "Total due" in screen or "nothing is due" in screen)


def test_a_wrong_choice_shows_the_menu_again(gateway):
    phone = Phone(gateway, GRACE)
    phone.dial()
    assert phone.answer("9").startswith("CON Invalid choice. Please try again.\n1. Balance")   # options first
    phone.answer("1")
    assert "Balance: KES" in phone.answer(PINS[GRACE])


def test_swahili_and_french(gateway):
    phone = Phone(gateway, GRACE)
    language = menu_number(phone.dial(), "Language")
    phone.answer(language)
    assert phone.answer("2").startswith("CON Karibu Grace. Chagua:\n1. Salio")
    assert phone.answer("1") == "CON Weka PIN yako:"
    assert "Salio: KES 8,637.50" in phone.answer(PINS[GRACE])
    assert phone.dial().startswith("CON Karibu Grace")      # her choice is remembered for the next call
    phone.answer(language)
    phone.answer("3")
    phone.answer("1")
    assert "Solde : " in phone.answer(PINS[GRACE])
    phone.dial()
    phone.answer(language)
    assert phone.answer("1").startswith("CON Welcome Grace")  # back to English for the other tests


def test_a_tanzanian_caller_is_answered_in_swahili_until_she_chooses(gateway):
    assert Phone(gateway, "+255750000118").dial().startswith("CON Karibu Baraka")


def test_unknown_phone_gets_a_polite_end(gateway):
    screen = Phone(gateway, "+254799999999").dial()
    assert screen.startswith("END Sorry, this phone number is not registered")


def test_client_without_accounts(gateway):
    phone = Phone(gateway, ESTHER)
    phone.dial()
    phone.answer("1")
    assert phone.answer(PINS[ESTHER]) == "END You have no active savings account."


def test_a_repeated_callback_gets_the_same_answer_without_running_actions_again(stack):
    gateway, sim, _ = stack
    phone = Phone(gateway, FAITH)
    phone.dial()
    phone.answer("2")
    first = phone.answer(PINS[FAITH])
    requests.post(f"{sim}/__sim/faults", json={"down": True}, timeout=5)
    try:
        assert phone.repeat() == first                 # AT retried: no new Mifos X call, same screen
    finally:
        requests.delete(f"{sim}/__sim/faults", timeout=5)


def test_mifos_down_gets_a_clear_answer(stack):
    gateway, sim, services = stack
    services.cache.drop("convo:client:+254700000110")
    services.cache._local.clear()
    requests.post(f"{sim}/__sim/faults", json={"down": True}, timeout=5)
    try:
        screen = Phone(gateway, "+254700000110").dial()
    finally:
        requests.delete(f"{sim}/__sim/faults", timeout=5)
    assert screen == "END Our service is not available right now. Please try again in a few minutes."


def test_concurrent_callbacks_for_one_session_advance_it_once(stack):
    gateway = stack[0]
    phone = Phone(gateway, GRACE)
    phone.inputs = [menu_number(phone.dial(), "Language")]
    with cf.ThreadPoolExecutor(8) as pool:
        screens = list(pool.map(lambda _: phone.repeat(), range(8)))
    assert set(screens) == {"CON Choose your language:\n1. English\n2. Kiswahili\n3. Francais"}
    assert phone.answer("1").startswith("CON Welcome Grace")


def test_shortcut_dial_carries_the_choices(gateway):
    phone = Phone(gateway, GRACE, code="*384*12*1#")
    phone.session_id = "ATUid_shortcut"
    phone.inputs = ["1", PINS[GRACE]]                  # a shortcut can carry the PIN too
    assert "Balance: KES 8,637.50" in phone.repeat()


def test_end_of_session_notification_is_recorded(stack):
    gateway, _, services = stack
    r = requests.post(f"{gateway}/gateways/africastalking/ussd/events", data={
        "sessionId": "ATUid_ended", "serviceCode": "*384*12#", "networkCode": "63902",
        "phoneNumber": GRACE, "status": "Success", "cost": "KES 0.0100", "durationInMillis": "5120",
        "hopsCount": "3", "input": "1*1234", "lastAppResponse": "END Balance", "errorMessage": "",
        "date": "2026-11-27 10:00:00"}, timeout=5)
    assert r.status_code == 200
    stored = services.redis.lrange("convo:ussd-events", 0, 0)[0].decode()
    assert "ATUid_ended" in stored and "1234" not in stored


@pytest.mark.parametrize("form, reason", [
    ({}, "missing field 'sessionId'"),
    ({"sessionId": "s1", "serviceCode": "*384*12#", "networkCode": "63902", "text": ""},
     "missing field 'phoneNumber'"),
    ({"sessionId": "s1", "serviceCode": "*384*12#", "phoneNumber": "not-a-phone", "text": ""},
     "'phoneNumber' is not a phone number"),
    ({"sessionId": "s1", "serviceCode": "DROP TABLE", "phoneNumber": GRACE, "text": ""},
     "'serviceCode' must look like"),
    ({"sessionId": "s1", "serviceCode": "*384*12#", "phoneNumber": GRACE}, "missing field 'text'"),
    ({"sessionId": "s1", "serviceCode": "*384*12#", "phoneNumber": GRACE, "text": "1" * 5000},
     "longer than"),
])
def test_malformed_callbacks_get_400_with_a_reason(gateway, form, reason):
    r = requests.post(f"{gateway}/gateways/africastalking/ussd", data=form, timeout=5)
    assert r.status_code == 400 and reason in r.text


def test_health(gateway):
    body = requests.get(f"{gateway}/healthz", timeout=5).json()
    assert body["ok"] and body["flows_version"]


def test_when_mifos_goes_down_the_last_known_balance_is_shown_with_its_time(stack):
    gateway, sim, services = stack
    phone = Phone(gateway, GRACE)
    phone.dial()
    phone.answer("1")
    assert "(as of" not in phone.answer(PINS[GRACE])               # fresh figures carry no label
    for key in services.redis.scan_iter("convo:savings:*"):
        services.redis.delete(key)                                 # the short cache has expired...
    services.cache._local.clear()
    requests.post(f"{sim}/__sim/faults", json={"down": True}, timeout=5)   # ...and Mifos X is down
    try:
        phone.dial()
        phone.answer("1")
        screen = phone.answer(PINS[GRACE])
    finally:
        requests.delete(f"{sim}/__sim/faults", timeout=5)
    assert screen.startswith("END ") and "Balance: KES 8,637.50" in screen and "\n(as of " in screen
