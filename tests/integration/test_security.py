"""Security end to end: PINs over USSD and SMS, lockout across channels, staff reset, no secret at rest,
callback authentication, abuse limits, SIM-swap hold. Real Redis, real PostgreSQL, HTTP everywhere."""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import re

import pytest
import requests
import sqlalchemy as sa

from convo.config import Settings
from convo.jobs.worker import run_worker
from convo.security import (
    ConfigurationError,
    PinHasher,
    client_ip,
    ip_allowed,
    parse_networks,
    redact_query_secrets,
    redact_ussd_text,
    weak_pin_reason,
)
from convo.store import subscribers
from convo.store.db import AuditEvent
from tests.support.e2e import Handset, Phone, give_pin, running_gateway, running_sms_stack

GRACE = "+254700000101"
FAITH = "+254700000105"
CB = "cb-Secret-token-1"
STAFF = "staff-Secret-token-2"
PEPPER = "pepper-for-tests-0123456789"
FAST = dict(pin_argon2_memory_kib=1024, pin_argon2_time_cost=1)


def menu_number(screen: str, label: str) -> str:
    m = re.search(rf"(\d+)\. {re.escape(label)}\b", screen)
    assert m, screen
    return m.group(1)


def audit_rows(services, **where) -> list:
    services.audit.flush()                      # data-access rows are written in batches off the hop path
    with sa.orm.Session(services.db) as s:
        q = sa.select(AuditEvent).order_by(AuditEvent.id)
        for k, v in where.items():
            q = q.where(getattr(AuditEvent, k) == v)
        return list(s.scalars(q))


def deliver(services) -> None:
    run_worker(services.settings, once=True, handle_signals=False, engine=services.db)


def sent(fake, services=None) -> list[str]:
    """What the fake AT accepted; with ``services``, in the order the replies were written to the outbox."""
    got = [m["message"] for m in fake.fake.accepted()]
    if services is None:
        return got
    from convo.store.db import OutboxMessage

    with sa.orm.Session(services.db) as s:
        ordered = [r.body for r in s.scalars(sa.select(OutboxMessage).order_by(OutboxMessage.id))
                   if r.status not in ("queued", "suppressed")]
    assert sorted(ordered) == sorted(got)
    return ordered


@pytest.fixture
def stack(redis_url, pg_url):
    with running_sms_stack(redis_url, pg_url, callback_token=CB, staff_token=STAFF, pin_pepper=PEPPER,
                           **FAST) as s:
        yield s


def staff(gw: str, method: str, path: str, token: str | None = STAFF, user: str | None = "alice", **kw):
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if user is not None:
        headers["X-Staff-User"] = user
    return requests.request(method, f"{gw}{path}", headers=headers, timeout=10, **kw)


# --------------------------------------------------------------------------- leak test
def _redis_dump(r) -> list[str]:
    out = []
    for key in r.scan_iter("*"):
        kind = r.type(key).decode()
        if kind == "string":
            vals = [r.get(key)]
        elif kind == "list":
            vals = r.lrange(key, 0, -1)
        elif kind == "hash":
            vals = [x for kv in r.hgetall(key).items() for x in kv]
        elif kind in ("set",):
            vals = list(r.smembers(key))
        elif kind == "zset":
            vals = [m for m, _ in r.zrange(key, 0, -1, withscores=True)]
        else:
            vals = [kind.encode()]
        out.append(key.decode("utf-8", "replace") + " = " +
                   " | ".join(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in vals))
    return out


def _db_dump(engine) -> list[tuple[str, str, str]]:
    """(table, column, value) of every non-null cell of every table."""
    meta = sa.MetaData()
    meta.reflect(engine)
    cells = []
    with engine.connect() as c:
        for t in meta.sorted_tables:
            for row in c.execute(sa.select(t)).mappings():
                for col, v in row.items():
                    if v is not None:
                        cells.append((t.name, col, json.dumps(v, default=str) if not isinstance(v, str) else v))
    return cells


def test_full_pin_dialogs_leave_no_pin_anywhere(stack, caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("werkzeug", "convo", "gateways", "urllib3", "sqlalchemy.engine"):
        caplog.set_level(logging.DEBUG, logger=name)
    gw, fake, services = stack
    first, second = "730518", "961274"

    # USSD: no PIN yet -> balance asks to choose one, then shows the balance
    ussd = Phone(gw, GRACE, token=CB)
    menu = ussd.dial()
    assert "Enter your PIN" not in menu
    assert "choose a PIN" in ussd.answer(menu_number(menu, "Balance"))
    assert ussd.answer("111111").startswith("CON That PIN is too easy")
    assert ussd.answer(first) == "CON Enter the new PIN again:"
    assert "Balance: KES 8,637.50" in ussd.answer(first)
    ussd.repeat()                                              # AT retries the last hop (text has the PIN)
    # USSD again: the PIN is asked and accepted; a retried callback too
    menu = ussd.dial()
    ussd.answer(menu_number(menu, "Balance"))
    assert "Wrong PIN" in ussd.answer("730519")
    assert "Balance: KES 8,637.50" in ussd.answer(first)
    # AT's end-of-session notification repeats every input
    r = requests.post(f"{gw}/gateways/africastalking/ussd/events", params={"token": CB}, data={
        "sessionId": ussd.session_id, "serviceCode": "*384*12#", "phoneNumber": GRACE, "status": "Success",
        "input": "*".join(ussd.inputs), "hopsCount": "4", "durationInMillis": "9000", "cost": "KES 0.01"},
        timeout=5)
    assert r.status_code == 200
    # SMS: change the PIN, then use it
    h = Handset(gw, GRACE, token=CB)
    for text in ("PIN", first, second, second, "BAL", second):
        h.text(text)
    deliver(services)
    bodies = sent(fake, services)
    assert bodies[:3] == ["Enter your current PIN:", "Choose a new PIN of 4 to 6 digits:", "Enter the new PIN again:"]
    assert bodies[3].startswith("Your PIN has been changed") and bodies[4] == "To see your balance, reply with your PIN."
    assert "Balance: KES 8,637.50" in bodies[5]

    pepper_hmacs = []
    for pin in (first, second):
        mac = hmac.new(PEPPER.encode(), pin.encode(), hashlib.sha256).digest()
        pepper_hmacs += [mac.hex(), base64.b64encode(mac).decode().rstrip("="),
                         base64.b64encode(mac, altchars=b"./").decode().rstrip("=")]
    secrets = [first, second, "730519"] + pepper_hmacs

    log_lines = [f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records]
    assert any("ussd hop" in line and "****" in line for line in log_lines)     # the redacted DEBUG line
    for line in log_lines:
        for s in secrets:
            assert s not in line, line
    for entry in _redis_dump(services.redis):
        for s in secrets:
            assert s not in entry, entry
    hashes = []
    for table, col, value in _db_dump(services.db):
        for s in secrets:
            assert s not in value, (table, col)
        if "$argon2" in value:
            hashes.append((table, col, value))
    assert {(t, c) for t, c, _ in hashes} <= {("subscriber_pins", "pin_hash")}
    assert len(hashes) == 1 and hashes[0][2].startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    for msg in fake.fake.messages:                           # nor what went out through the gateway
        for s in secrets:
            assert s not in json.dumps(msg)
    actions = [a.action for a in audit_rows(services, phone=GRACE)]
    assert {"pin.set", "pin.changed", "pin.failed", "data.savings_balance"} <= set(actions)


# --------------------------------------------------------------------------- lockout, staff reset
def test_lockout_holds_across_ussd_and_sms_until_a_staff_reset(stack):
    gw, fake, services = stack
    give_pin(services, GRACE, "246802")
    ussd = Phone(gw, GRACE, token=CB)
    menu = ussd.dial()
    ussd.answer(menu_number(menu, "Balance"))
    assert ussd.answer("111222") == "CON Wrong PIN. 2 tries left. Enter your PIN:"
    sms = Handset(gw, GRACE, token=CB)
    sms.text("DUE")
    sms.text("333444")                                       # the count is per subscriber, not per session
    menu = ussd.dial()                                       # redialling does not reset it either
    ussd.answer(menu_number(menu, "Amount due"))
    blocked = ussd.answer("555666")
    assert blocked.startswith("END Your PIN is blocked") and "branch" in blocked
    menu = ussd.dial()
    assert ussd.answer(menu_number(menu, "Balance")).startswith("END Your PIN is blocked")   # right PIN or not
    sms.text("BAL")
    deliver(services)
    assert sent(fake, services) == ["To see what you owe, reply with your PIN.", "Wrong PIN. 1 try left. Enter your PIN:",
                          "Your PIN is blocked after too many wrong tries. Please visit your branch or call "
                          "customer care to unblock it."]
    assert [a.action for a in audit_rows(services, phone=GRACE) if a.action.startswith("pin.")] == \
        ["pin.failed", "pin.failed", "pin.failed", "pin.locked"]
    assert {a.channel for a in audit_rows(services, action="pin.failed")} == {"ussd", "sms"}

    r = staff(gw, "GET", f"/api/subscribers/{GRACE}")
    assert r.status_code == 200 and r.json()["locked"] and r.json()["failed_attempts"] == 3
    assert "hash" not in r.text
    r = staff(gw, "POST", f"/api/subscribers/{GRACE}/pin-reset", json={"unlock_only": True, "reason": "ID seen"})
    assert r.status_code == 200 and not r.json()["locked"], r.text
    menu = ussd.dial()
    ussd.answer(menu_number(menu, "Balance"))
    assert "Balance: KES 8,637.50" in ussd.answer("246802")
    r = staff(gw, "POST", f"/api/subscribers/{GRACE}/pin-reset", user="bob")      # whose PIN? not said
    assert r.status_code == 400 and "client_id" in r.text
    r = staff(gw, "POST", f"/api/subscribers/{GRACE}/pin-reset", user="bob", json={"client_id": 1})
    assert r.status_code == 200 and r.json()["pin_set"] is False and r.json()["clients"] == [], r.text
    menu = ussd.dial()
    assert "choose a PIN" in ussd.answer(menu_number(menu, "Balance"))
    resets = audit_rows(services, phone=GRACE, channel="api")
    assert [(a.actor, a.action) for a in resets] == [
        ("staff:alice", "staff.staff.subscriber_status"), ("staff:alice", "pin.unlocked"),
        ("staff:alice", "staff.staff.pin_reset"), ("staff:bob", "staff.staff.pin_reset"), ("staff:bob", "pin.reset"),
        ("staff:bob", "staff.staff.pin_reset")]
    assert resets[1].detail["reason"] == "ID seen" and resets[1].detail["was_locked"] is True


def test_the_lock_times_out(stack):
    _, _, services = stack
    hasher = PinHasher.from_settings(services.settings)
    give_pin(services, FAITH, "975310", client_id=5)
    for _ in range(3):
        subscribers.verify(services.db, hasher, FAITH, 5, "000001", max_attempts=3, lock_minutes=30)
    assert subscribers.verify(services.db, hasher, FAITH, 5, "975310").outcome == "locked"
    later = subscribers.utcnow() + dt.timedelta(minutes=31)
    assert subscribers.verify(services.db, hasher, FAITH, 5, "000002", now=later).outcome == "wrong"   # count restarts
    assert subscribers.verify(services.db, hasher, FAITH, 5, "000003", now=later).attempts_left == 1
    assert subscribers.verify(services.db, hasher, FAITH, 5, "975310", now=later).outcome == "ok"


def test_staff_api_needs_its_bearer_token_and_a_staff_user_and_audits_every_call(stack):
    gw, _, services = stack
    assert staff(gw, "POST", f"/api/subscribers/{GRACE}/pin-reset", token=None).status_code == 401
    assert staff(gw, "POST", f"/api/subscribers/{GRACE}/pin-reset", token="wrong").status_code == 401
    assert staff(gw, "POST", f"/api/subscribers/{GRACE}/pin-reset", user=None).status_code == 400
    assert staff(gw, "POST", "/api/subscribers/+254799999999/pin-reset", json={"client_id": 1}).status_code == 404
    assert staff(gw, "POST", "/api/subscribers/not-a-phone/pin-reset").status_code == 400
    r = staff(gw, "POST", f"/api/subscribers/{FAITH}/pin-reset", json={"unlock_only": "yes"})
    assert r.status_code == 400
    rows = audit_rows(services, channel="api")          # refused calls are counted, not audited (test_staff_access)
    assert {r.actor for r in rows} == {"staff:alice"}
    assert [r.outcome for r in rows] == ["404", "400", "400"]


def test_staff_api_is_closed_without_a_configured_token(redis_url):
    with running_gateway(redis_url, staff_token="") as (gw, _, _):
        assert staff(gw, "POST", f"/api/subscribers/{GRACE}/pin-reset", token="").status_code == 403
        assert staff(gw, "GET", f"/api/subscribers/{GRACE}", token="anything").status_code == 403


# --------------------------------------------------------------------------- callback authentication
CALLBACKS = ["/gateways/africastalking/ussd", "/gateways/africastalking/ussd/events", "/gateways/africastalking/sms",
             "/gateways/africastalking/delivery", "/gateways/africastalking/optout", "/hooks/fineract"]


@pytest.fixture(scope="module")
def guarded_app(tmp_path_factory):
    from convo.store.db import upgrade
    from convo.web import create_app

    db = f"sqlite:///{tmp_path_factory.mktemp('guard')}/convo.db"
    upgrade(db)
    settings = Settings(redis_url="memory://", database_url=db, callback_token=CB, flows_reload_seconds=0,
                        callback_allow_ips="196.201.214.0/24, 10.9.0.0/16", trusted_proxies=1)
    return create_app(settings)


@pytest.mark.parametrize("path", CALLBACKS)
def test_every_callback_refuses_an_unauthenticated_call(guarded_app, path):
    c = guarded_app.test_client()
    ok_ip = {"REMOTE_ADDR": "127.0.0.1"}
    via = {"X-Forwarded-For": "196.201.214.9"}
    assert c.post(path, data={}, headers=via, environ_base=ok_ip).status_code == 403            # no token
    assert c.post(f"{path}?token=wrong", headers=via, environ_base=ok_ip).status_code == 403
    assert c.post(f"{path}?token={CB}", environ_base=ok_ip).status_code == 403                  # no proxy header
    assert c.post(f"{path}?token={CB}", headers={"X-Forwarded-For": "8.8.8.8"},
                  environ_base=ok_ip).status_code == 403                                        # not allowed
    spoof = {"X-Forwarded-For": "196.201.214.9, 8.8.8.8"}           # the caller wrote the first entry
    assert c.post(f"{path}?token={CB}", headers=spoof, environ_base=ok_ip).status_code == 403
    r = c.post(f"{path}?token={CB}", headers=via, environ_base=ok_ip, data={})
    assert r.status_code in (400, 404), r.get_data(as_text=True)                                 # authenticated


def test_allow_list_without_proxies_uses_the_socket_address():
    nets = parse_networks("196.201.214.0/24,2c0f:fe38::/32")
    assert ip_allowed(client_ip("196.201.214.200", "10.0.0.1", 0), nets)
    assert not ip_allowed(client_ip("8.8.8.8", "196.201.214.1", 0), nets)          # header ignored
    assert ip_allowed(client_ip("127.0.0.1", "8.8.8.8, 196.201.214.1", 1), nets)
    assert not ip_allowed(client_ip("127.0.0.1", "196.201.214.1", 2), nets)        # too few hops: untrusted
    assert ip_allowed("::ffff:196.201.214.3", nets) and ip_allowed("2c0f:fe38::1", nets)
    assert not ip_allowed("garbage", nets) and ip_allowed("anything", ())
    with pytest.raises(ConfigurationError):
        parse_networks("10.0.0.0/33")


def test_production_refuses_to_start_without_a_pepper():
    from convo.web import create_app

    with pytest.raises(ConfigurationError, match="CONVO_PIN_PEPPER"):
        create_app(Settings(env="production", redis_url="memory://"))
    with pytest.raises(ConfigurationError, match="CONVO_PIN_PEPPER"):
        create_app(Settings(env="production", redis_url="memory://", pin_pepper="short"))
    create_app(Settings(env="production", redis_url="memory://", pin_pepper=PEPPER, flows_reload_seconds=0,
                        callback_token=CB, secret_key="k" * 32))          # the rest: tests/e2e/test_staff_access.py


def test_access_logs_never_show_the_callback_token():
    line = f'127.0.0.1 - - "POST /gateways/africastalking/ussd?token={CB}&x=1 HTTP/1.1" 200 -'
    assert CB not in redact_query_secrets(line) and "token=***&x=1" in redact_query_secrets(line)


# --------------------------------------------------------------------------- units
@pytest.mark.parametrize("pin, reason", [
    ("1111", "same"), ("000000", "same"), ("1234", "sequence"), ("4321", "sequence"), ("7890", "sequence"),
    ("345678", "sequence"), ("2580", "common"), ("1984", "birth_year"), ("019845", "birth_year"),
    ("0101", "phone"), ("000101", "phone"), ("7391", None), ("482617", None),
])
def test_weak_pins(pin, reason):
    assert weak_pin_reason(pin, phone="+254700000101", birth_year=1984) == reason


def test_redaction_by_position():
    assert redact_ussd_text("1*7305*2", [1]) == "1*" + "****" + "*2"
    assert redact_ussd_text("1*12*2", [1]) == "1*" + "****" + "*2"
    assert redact_ussd_text("1*2*730518", []) == "1*2*" + "****"     # anything PIN-sized, even unclassified
    assert redact_ussd_text("", [0]) == ""


def test_hashes_are_argon2id_over_a_peppered_hmac_and_verification_is_strict():
    a, b = PinHasher("pepper-one", 1024, 1), PinHasher("pepper-two", 1024, 1)
    h = a.hash("730518")
    assert h.startswith("$argon2id$") and a.hash("730518") != h                      # salted
    assert a.verify(h, "730518") and not a.verify(h, "730519")
    assert not b.verify(h, "730518")                                                 # the pepper matters
    assert not a.verify(None, "730518") and not a.verify("garbage", "730518")


# --------------------------------------------------------------------------- abuse limits
def test_rate_limits_per_phone(redis_url, tmp_path):
    from convo.store.db import upgrade

    db = f"sqlite:///{tmp_path}/convo.db"
    upgrade(db)
    with running_gateway(redis_url, database_url=db, ussd_sessions_per_hour=2) as (gw, _, services):
        phone = Phone(gw, FAITH)
        assert phone.dial().startswith("CON Welcome")
        assert phone.dial().startswith("CON Welcome")
        assert phone.dial() == "END You have made too many requests. Please try again later."
        assert phone.repeat() == "END You have made too many requests. Please try again later."
        assert Phone(gw, GRACE).dial().startswith("CON Welcome")                    # per phone


def test_sms_inbound_and_reply_caps(redis_url, pg_url):
    with running_sms_stack(redis_url, pg_url, sms_inbound_per_hour=4, sms_replies_per_hour=2) as (gw, fake, services):
        h = Handset(gw, FAITH)
        for _ in range(6):
            h.text("HELP")
        deliver(services)
        assert len(sent(fake)) == 2                              # replies capped; the 5th and 6th not even read


# --------------------------------------------------------------------------- SIM swap
def test_simswap_hold_refuses_protected_answers_after_a_recent_swap(redis_url, pg_url):
    today = dt.date.today()
    with running_sms_stack(redis_url, pg_url, simswap_hold_days=7) as (gw, fake, services):
        fake.fake.configure(sim_swaps={GRACE: (today - dt.timedelta(days=2)).isoformat(),
                                       FAITH: (today - dt.timedelta(days=30)).isoformat()})
        give_pin(services, GRACE, "246802")
        give_pin(services, FAITH, "975310")
        grace = Phone(gw, GRACE)
        menu = grace.dial()
        assert grace.answer(menu_number(menu, "Balance")).startswith("END For your safety")
        faith = Phone(gw, FAITH)
        menu = faith.dial()
        assert faith.answer(menu_number(menu, "Balance")) == "CON Enter your PIN:"
        assert sorted(fake.fake.sim_swap_queries) == [GRACE, FAITH]
        assert [a.action for a in audit_rows(services, phone=GRACE)] == ["simswap.hold"]
        menu = faith.dial()
        faith.answer(menu_number(menu, "Balance"))
        assert len(fake.fake.sim_swap_queries) == 2               # cached: AT is not asked every dialog
