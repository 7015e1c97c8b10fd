"""PINs belong to a (phone, client) pair; the lock belongs to the phone (issue 9, items 3 and 18).

A family shares +254700000150: Achieng (client 37) and Baraka (client 38). One client's PIN never
opens the other's; setting one never touches the other's; wrong PINs for either, over USSD or SMS,
add up to one lock for the phone. An SMS alias (SALIO) switches only its own dialog's language.
Everything that stores input runs on PostgreSQL (``pg_url``); the dialogs run over HTTP.
"""
from __future__ import annotations

import datetime as dt
import re
import threading

import pytest
import requests
import sqlalchemy as sa

from convo.devkit import fineract_seed as seed
from convo.security import PinHasher
from convo.store import subscribers
from convo.store.db import OutboxMessage, SubscriberPin, make_engine, upgrade
from tests.support.e2e import Handset, Phone, give_pin, running_sms_stack

SHARED = seed.SHARED_PHONE
ACHIENG, BARAKA = seed.SHARED_PHONE_CLIENTS
GRACE = "+254700000101"
A_PIN, B_PIN = "5820", "7391"
STAFF = "staff-token-for-pin-pair-tests-0123456789"


@pytest.fixture
def db(pg_url):
    engine = make_engine(pg_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def hasher():
    return PinHasher("pepper-for-tests", memory_kib=1024, time_cost=1)


def pin_row(db, phone: str, client_id: int):
    with db.connect() as c:
        return c.execute(sa.select(SubscriberPin.__table__).where(SubscriberPin.phone == phone,
                                                                  SubscriberPin.client_id == client_id)).first()


# ------------------------------------------------------------------ the model, on PostgreSQL


def test_one_clients_pin_never_opens_another_client_on_the_same_phone(db, hasher):
    subscribers.set_pin(db, hasher, SHARED, ACHIENG, A_PIN)
    assert subscribers.verify(db, hasher, SHARED, ACHIENG, A_PIN).outcome == "ok"
    assert subscribers.verify(db, hasher, SHARED, BARAKA, A_PIN).outcome == "none"     # Baraka has no PIN
    assert subscribers.status(db, SHARED, BARAKA).state == "none"
    subscribers.set_pin(db, hasher, SHARED, BARAKA, B_PIN)
    assert subscribers.verify(db, hasher, SHARED, BARAKA, A_PIN).outcome == "wrong"
    assert subscribers.verify(db, hasher, SHARED, ACHIENG, B_PIN).outcome == "wrong"
    # nor on another phone: the same client's PIN set on one number does not open it from another
    assert subscribers.verify(db, hasher, GRACE, ACHIENG, A_PIN).outcome == "none"


def test_staging_a_pin_for_one_client_changes_nothing_of_another(db, hasher):
    subscribers.set_pin(db, hasher, SHARED, ACHIENG, A_PIN)
    subscribers.set_language(db, SHARED, "fr")
    before = pin_row(db, SHARED, ACHIENG)
    subscribers.stage_new_pin(db, hasher, SHARED, BARAKA, B_PIN)
    assert pin_row(db, SHARED, ACHIENG) == before
    assert subscribers.language_of(db, SHARED) == "fr"
    # a staged PIN opens nothing until it is repeated, and then only Baraka's
    assert subscribers.verify(db, hasher, SHARED, BARAKA, B_PIN).outcome == "none"
    assert subscribers.commit_new_pin(db, hasher, SHARED, BARAKA, B_PIN, replace_allowed=False) == "set"
    assert pin_row(db, SHARED, ACHIENG) == before
    assert subscribers.verify(db, hasher, SHARED, ACHIENG, A_PIN).outcome == "ok"
    assert subscribers.verify(db, hasher, SHARED, ACHIENG, B_PIN).outcome == "wrong"
    # Achieng's PIN cannot be replaced through a dialog that confirmed only Baraka's
    subscribers.stage_new_pin(db, hasher, SHARED, ACHIENG, "4096")
    assert subscribers.commit_new_pin(db, hasher, SHARED, ACHIENG, "4096", replace_allowed=False) == "refused"
    assert subscribers.verify(db, hasher, SHARED, ACHIENG, A_PIN).outcome == "ok"


def test_wrong_pins_for_either_client_add_up_to_one_lock_for_the_phone(db, hasher):
    subscribers.set_pin(db, hasher, SHARED, ACHIENG, A_PIN)
    subscribers.set_pin(db, hasher, SHARED, BARAKA, B_PIN)
    assert subscribers.verify(db, hasher, SHARED, ACHIENG, "1111").attempts_left == 2
    assert subscribers.verify(db, hasher, SHARED, BARAKA, "2222").attempts_left == 1
    third = subscribers.verify(db, hasher, SHARED, ACHIENG, "3333")
    assert third.outcome == "locked" and third.just_locked
    assert subscribers.verify(db, hasher, SHARED, BARAKA, B_PIN).outcome == "locked"
    assert subscribers.verify(db, hasher, SHARED, ACHIENG, A_PIN).outcome == "locked"
    assert subscribers.status(db, SHARED, BARAKA).state == "locked"
    # a client of another phone is not locked by it
    subscribers.set_pin(db, hasher, GRACE, 1, "2468")
    assert subscribers.verify(db, hasher, GRACE, 1, "2468").outcome == "ok"


def test_knowing_one_clients_pin_earns_no_extra_guesses_at_another(db, hasher):
    """The attack: guess Baraka's PIN twice, clear the count with Achieng's right PIN, guess again..."""
    subscribers.set_pin(db, hasher, SHARED, ACHIENG, A_PIN)
    subscribers.set_pin(db, hasher, SHARED, BARAKA, B_PIN)
    guesses = iter(f"{n:04d}" for n in range(1000, 1100))
    assert subscribers.verify(db, hasher, SHARED, BARAKA, next(guesses)).outcome == "wrong"
    assert subscribers.verify(db, hasher, SHARED, BARAKA, next(guesses)).outcome == "wrong"
    assert subscribers.verify(db, hasher, SHARED, ACHIENG, A_PIN).outcome == "ok"
    last = subscribers.verify(db, hasher, SHARED, BARAKA, next(guesses))
    assert last.outcome == "locked" and last.just_locked
    # while a right PIN still clears its own client's typos
    subscribers.reset(db, SHARED, unlock_only=True)
    assert subscribers.verify(db, hasher, SHARED, ACHIENG, "1357").attempts_left == 2
    assert subscribers.verify(db, hasher, SHARED, ACHIENG, A_PIN).outcome == "ok"
    assert subscribers.verify(db, hasher, SHARED, ACHIENG, "1357").attempts_left == 2


def test_concurrent_wrong_pins_for_both_clients_never_get_more_tries_than_the_limit(pg_url, hasher):
    """Eight attempts at once, four per client, on separate connections: exactly two are answered
    'wrong', one locks, and the rest find the phone locked."""
    engine = make_engine(pg_url, pool_size=8)
    upgrade(engine)
    subscribers.set_pin(engine, hasher, SHARED, ACHIENG, A_PIN)
    subscribers.set_pin(engine, hasher, SHARED, BARAKA, B_PIN)
    start = threading.Barrier(8)
    results: list = []

    def attempt(cid: int, guess: str) -> None:
        start.wait()
        results.append(subscribers.verify(engine, hasher, SHARED, cid, guess))

    threads = [threading.Thread(target=attempt, args=((ACHIENG, BARAKA)[i % 2], f"90{i:02d}")) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    assert sorted(r.outcome for r in results) == ["locked"] * 6 + ["wrong"] * 2
    assert sum(r.just_locked for r in results) == 1


def test_a_lock_that_ran_out_restarts_the_phones_count_for_every_client(db, hasher):
    subscribers.set_pin(db, hasher, SHARED, ACHIENG, A_PIN)
    subscribers.set_pin(db, hasher, SHARED, BARAKA, B_PIN)
    for cid, guess in ((ACHIENG, "1111"), (BARAKA, "2222"), (ACHIENG, "3333")):
        subscribers.verify(db, hasher, SHARED, cid, guess, lock_minutes=30)
    later = subscribers.utcnow() + dt.timedelta(minutes=31)
    assert subscribers.verify(db, hasher, SHARED, BARAKA, "4444", now=later).attempts_left == 2
    assert subscribers.verify(db, hasher, SHARED, BARAKA, B_PIN, now=later).outcome == "ok"


def test_a_new_pin_never_lifts_the_phones_lock(db, hasher):
    subscribers.set_pin(db, hasher, SHARED, ACHIENG, A_PIN)
    subscribers.stage_new_pin(db, hasher, SHARED, BARAKA, B_PIN)       # Baraka is choosing his first PIN
    for guess in ("1111", "2222", "3333"):
        subscribers.verify(db, hasher, SHARED, ACHIENG, guess)
    assert subscribers.commit_new_pin(db, hasher, SHARED, BARAKA, B_PIN, replace_allowed=False) == "locked"
    assert subscribers.status(db, SHARED, BARAKA).state == "locked"
    assert pin_row(db, SHARED, BARAKA).pin_hash is None


def test_a_staff_reset_forgets_only_the_named_clients_pin(db, hasher):
    subscribers.set_pin(db, hasher, SHARED, ACHIENG, A_PIN)
    subscribers.set_pin(db, hasher, SHARED, BARAKA, B_PIN)
    assert not subscribers.reset(db, SHARED, client_id=99)                       # no such pair: nothing
    assert subscribers.reset(db, SHARED, client_id=BARAKA)
    assert subscribers.status(db, SHARED, BARAKA).state == "none"
    assert subscribers.verify(db, hasher, SHARED, ACHIENG, A_PIN).outcome == "ok"
    assert [cid for cid, _ in subscribers.status(db, SHARED).clients] == [ACHIENG]


def test_migration_moves_each_pin_to_its_client_and_drops_the_ones_it_cannot_trust(pg_url, hasher):
    """Rows of the old one-PIN-per-phone table (0004): a PIN moves to (phone, client) when the row
    names its client and no half-finished change is pending (a staging by another client of a shared
    phone rewrote ``client_id`` before this release, so such a PIN may be someone else's)."""
    engine = make_engine(pg_url)
    upgrade(engine, "0004_transfers")
    now = subscribers.utcnow()
    locked = now + dt.timedelta(hours=1)
    old = [  # phone, client_id, language, pin_hash, new_pin_hash, failed, locked_until
        ("+254700000101", 1, "sw", hasher.hash("2468"), None, 1, None),
        ("+254700000150", 38, None, hasher.hash("5820"), hasher.hash("7391"), 0, None),   # change pending
        ("+254700000105", None, "fr", hasher.hash("1357"), None, 0, None),                 # whose? unknown
        ("+254700000102", 2, None, hasher.hash("8642"), None, 3, locked),
    ]
    with engine.begin() as c:
        for phone, cid, lang, h, new, failed, until in old:
            c.execute(sa.text(
                "INSERT INTO subscribers (phone, client_id, language, pin_hash, new_pin_hash, failed_attempts, "
                "locked_until, pin_set_at, created_at, updated_at) VALUES (:p, :c, :l, :h, :n, :f, :u, :t, :t, :t)"),
                dict(p=phone, c=cid, l=lang, h=h, n=new, f=failed, u=until, t=now))
    upgrade(engine)
    assert subscribers.verify(engine, hasher, "+254700000101", 1, "2468").outcome == "ok"
    assert subscribers.language_of(engine, "+254700000101") == "sw"
    assert subscribers.status(engine, "+254700000150", 38).state == "none"
    assert subscribers.status(engine, "+254700000105").clients == ()
    assert subscribers.language_of(engine, "+254700000105") == "fr"
    assert subscribers.status(engine, "+254700000102", 2).state == "locked"
    assert subscribers.verify(engine, hasher, "+254700000102", 2, "8642").outcome == "locked"
    from alembic import command

    from convo.store.db import alembic_config

    with engine.begin() as conn:                      # and back: one PIN per phone again
        command.downgrade(alembic_config(connection=conn), "0004_transfers")
    with engine.connect() as c:
        back = dict(c.execute(sa.text("SELECT phone, client_id FROM subscribers WHERE pin_hash IS NOT NULL")).all())
    assert back == {"+254700000101": 1, "+254700000102": 2}
    upgrade(engine)
    engine.dispose()


# ------------------------------------------------------------------ dialogs over HTTP


def replies(services, phone: str) -> list[str]:
    with sa.orm.Session(services.db) as s:
        return [m.body for m in s.scalars(sa.select(OutboxMessage).where(OutboxMessage.recipient == phone)
                                          .order_by(OutboxMessage.id))]


def number_of(screen: str, label: str) -> str:
    m = re.search(rf"^(\d+)\. {re.escape(label)}\b", screen, re.M)
    assert m, screen
    return m.group(1)


@pytest.fixture
def stack(redis_url, pg_url):
    with running_sms_stack(redis_url, pg_url, staff_token=STAFF, pin_argon2_memory_kib=1024,
                           pin_argon2_time_cost=1) as s:
        yield s


def ussd_as(gw: str, name: str) -> tuple[Phone, str]:
    """Dial the shared phone and say who is calling; returns the phone and the main menu."""
    phone = Phone(gw, SHARED)
    choice = phone.dial()
    assert choice.startswith("CON Choose your name:"), choice
    return phone, phone.answer(number_of(choice, name))


def sms_as(gw: str, services, keyword: str, name: str) -> Handset:
    handset = Handset(gw, SHARED)
    handset.text(keyword)
    handset.text(number_of(replies(services, SHARED)[-1], name))
    return handset


def test_over_ussd_achiengs_pin_does_not_open_baraka_and_his_new_pin_leaves_hers_alone(stack):
    gw, _, services = stack
    give_pin(services, SHARED, A_PIN, client_id=ACHIENG)
    # Baraka has no PIN: Achieng's is not asked for, he must choose his own
    phone, menu = ussd_as(gw, "Baraka")
    assert "choose a PIN" in phone.answer(number_of(menu, "Balance"))
    assert phone.answer("6283") == "CON Enter the new PIN again:"       # staged, then he hangs up
    phone, menu = ussd_as(gw, "Achieng")
    assert phone.answer(number_of(menu, "Balance")) == "CON Enter your PIN:"
    assert "KES 3,400.00" in phone.answer(A_PIN)                        # her PIN is still hers
    # Baraka sets his PIN; then Achieng's PIN is a wrong PIN for him and his is wrong for her
    phone, menu = ussd_as(gw, "Baraka")
    phone.answer(number_of(menu, "Balance"))
    phone.answer(B_PIN)
    assert "KES 12,750.00" in phone.answer(B_PIN)
    phone, menu = ussd_as(gw, "Baraka")
    phone.answer(number_of(menu, "Balance"))
    screen = phone.answer(A_PIN)
    assert screen.startswith("CON Wrong PIN.") and "12,750" not in screen
    phone, menu = ussd_as(gw, "Achieng")
    phone.answer(number_of(menu, "Balance"))
    assert phone.answer(B_PIN).startswith("CON Wrong PIN.")
    assert {cid for cid, _ in subscribers.status(services.db, SHARED).clients} == {ACHIENG, BARAKA}


def test_wrong_pins_on_achieng_over_ussd_lock_barakas_sms_too(stack):
    gw, _, services = stack
    give_pin(services, SHARED, A_PIN, client_id=ACHIENG)
    give_pin(services, SHARED, B_PIN, client_id=BARAKA)
    phone, menu = ussd_as(gw, "Achieng")
    phone.answer(number_of(menu, "Balance"))
    assert phone.answer("1357") == "CON Wrong PIN. 2 tries left. Enter your PIN:"
    handset = sms_as(gw, services, "BAL", "Baraka")
    assert replies(services, SHARED)[-1] == "To see your balance, reply with your PIN."
    handset.text("2468")
    assert replies(services, SHARED)[-1] == "Wrong PIN. 1 try left. Enter your PIN:"
    assert phone.answer("9753").startswith("END Your PIN is blocked")
    sms_as(gw, services, "BAL", "Baraka")                                    # his right PIN is no use now
    assert replies(services, SHARED)[-1].startswith("Your PIN is blocked")
    phone, menu = ussd_as(gw, "Baraka")
    assert phone.answer(number_of(menu, "Balance")).startswith("END Your PIN is blocked")
    assert not any("12,750" in r or "3,400" in r for r in replies(services, SHARED))


def staff(gw: str, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, f"{gw}{path}", timeout=10, **kw,
                            headers={"Authorization": f"Bearer {STAFF}", "X-Staff-User": "alice"})


def test_staff_see_whose_pins_a_phone_has_and_reset_one_clients(stack):
    gw, _, services = stack
    give_pin(services, SHARED, A_PIN, client_id=ACHIENG)
    give_pin(services, SHARED, B_PIN, client_id=BARAKA)
    for guess in ("1111", "2222", "3333"):
        subscribers.verify(services.db, PinHasher.from_settings(services.settings), SHARED, BARAKA, guess)
    r = staff(gw, "GET", f"/api/subscribers/{SHARED}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["locked"] and body["failed_attempts"] == 3 and body["pin_set"]
    assert [c["client_id"] for c in body["clients"]] == [ACHIENG, BARAKA] and "hash" not in r.text
    assert staff(gw, "GET", f"/api/subscribers/{SHARED}?client_id=99").json()["pin_set"] is False
    assert staff(gw, "GET", f"/api/subscribers/{SHARED}?client_id=x").status_code == 400
    # forgetting a PIN names the client; a phone alone is not enough
    assert staff(gw, "POST", f"/api/subscribers/{SHARED}/pin-reset", json={}).status_code == 400
    for bad in (True, -1, "38; DROP", 1.5):
        assert staff(gw, "POST", f"/api/subscribers/{SHARED}/pin-reset", json={"client_id": bad}).status_code == 400
    assert staff(gw, "POST", f"/api/subscribers/{SHARED}/pin-reset", json={"client_id": 99}).status_code == 404
    assert subscribers.status(services.db, SHARED).state == "locked"                # a refused reset changed nothing
    r = staff(gw, "POST", f"/api/subscribers/{SHARED}/pin-reset", json={"client_id": BARAKA, "reason": "ID seen"})
    assert r.status_code == 200, r.text
    assert r.json()["reset"] == "pin" and not r.json()["locked"] and r.json()["pin_set"] is False
    assert [c["client_id"] for c in r.json()["clients"]] == [ACHIENG]
    phone, menu = ussd_as(gw, "Achieng")                                     # her PIN still works
    phone.answer(number_of(menu, "Balance"))
    assert "KES 3,400.00" in phone.answer(A_PIN)
    phone, menu = ussd_as(gw, "Baraka")                                      # he chooses a new one
    assert "choose a PIN" in phone.answer(number_of(menu, "Balance"))
    from convo.store.db import AuditEvent

    with sa.orm.Session(services.db) as s:
        row = s.scalars(sa.select(AuditEvent).where(AuditEvent.action == "pin.reset")).one()
    assert row.client_id == BARAKA and row.phone == SHARED and row.actor == "staff:alice"


# ------------------------------------------------------------------ item 18: an alias's language


def test_salio_answers_in_swahili_but_setting_a_pin_keeps_the_language_the_subscriber_chose(stack):
    gw, _, services = stack
    subscribers.set_language(services.db, GRACE, "fr")                   # she chose French
    handset = Handset(gw, GRACE)
    handset.text("SALIO")
    assert replies(services, GRACE)[-1].startswith("Kwa usalama wa akaunti yako"), replies(services, GRACE)
    handset.text("7264")
    handset.text("7264")                                                  # her first PIN, set in Swahili
    assert "Salio: KES 8,637.50" in replies(services, GRACE)[-1]
    assert subscribers.language_of(services.db, GRACE) == "fr"
    handset.text("BAL")                                                   # the next dialog is hers again
    assert replies(services, GRACE)[-1] == "Pour voir votre solde, répondez avec votre code PIN."


def test_salio_leaves_a_subscriber_who_never_chose_with_no_language(stack):
    gw, _, services = stack
    handset = Handset(gw, GRACE)
    handset.text("SALIO")
    handset.text("7264")
    handset.text("7264")
    assert "Salio: KES 8,637.50" in replies(services, GRACE)[-1]
    assert subscribers.language_of(services.db, GRACE) is None
    handset.text("PIN")                                                   # English, her country's language
    assert replies(services, GRACE)[-1] == "Enter your current PIN:"
