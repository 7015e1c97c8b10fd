"""A USSD session belongs to its phone number (issue 9, item 4).

Africa's Talking names a session with ``sessionId`` and says who is dialling with ``phoneNumber``
(its USSD callback: sessionId, serviceCode, phoneNumber, networkCode, text). A callback with a
known ``sessionId`` and another ``phoneNumber`` — a gateway that reuses ids, or a forged callback —
is a new session of that other number: it never continues the first, never gets its stored reply,
never waits on its lock. Over HTTP, with PINs stored in PostgreSQL.
"""
from __future__ import annotations

import secrets

import pytest
import requests

from convo.dialog.engine import Engine, Inbound
from convo.store.db import upgrade
from tests.support.e2e import give_pin, running_gateway

GRACE, FAITH, NOBODY = "+254700000101", "+254700000105", "+254799000001"
GRACE_PIN, FAITH_PIN = "2468", "9753"
GRACE_BALANCE = "8,637.50"


@pytest.fixture
def gw(redis_url, pg_url):
    upgrade(pg_url)
    with running_gateway(redis_url, database_url=pg_url) as (gw, _sim, services):
        give_pin(services, GRACE, GRACE_PIN)
        give_pin(services, FAITH, FAITH_PIN)
        yield gw, services
        services.audit.flush()                        # before the schema is dropped


def at_session_id() -> str:
    return "ATUid_" + secrets.token_hex(16)            # what Africa's Talking sends: ATUid_ + 32 hex


def hop(gw: str, session_id: str, phone: str, text: str) -> str:
    """One Africa's Talking USSD callback, exactly as the gateway posts it (form-encoded)."""
    r = requests.post(f"{gw}/gateways/africastalking/ussd", timeout=10, data={
        "sessionId": session_id, "serviceCode": "*384*12#", "phoneNumber": phone, "networkCode": "63902",
        "text": text})
    assert r.status_code == 200, r.text
    return r.text


def test_another_phone_with_the_same_session_id_never_continues_the_session(gw):
    gw, _ = gw
    sid = at_session_id()
    menu = hop(gw, sid, GRACE, "")
    assert menu.startswith("CON Welcome Grace.")
    # Faith's phone posts Grace's session id, continuing where Grace is: she gets her own dialog
    theirs = hop(gw, sid, FAITH, "1")
    assert "Grace" not in theirs and GRACE_BALANCE not in theirs
    assert theirs == "CON Enter your PIN:"                 # Faith's balance, behind Faith's PIN
    assert GRACE_BALANCE not in hop(gw, sid, FAITH, f"1*{GRACE_PIN}")     # Grace's PIN is no use to her
    # Grace's session was not moved by any of it
    assert hop(gw, sid, GRACE, "1") == "CON Enter your PIN:"
    assert GRACE_BALANCE in hop(gw, sid, GRACE, f"1*{GRACE_PIN}")


def test_a_replayed_callback_from_another_phone_does_not_get_the_stored_reply(gw):
    gw, _ = gw
    sid = at_session_id()
    hop(gw, sid, GRACE, "")
    hop(gw, sid, GRACE, "1")
    last = hop(gw, sid, GRACE, f"1*{GRACE_PIN}")
    assert last.startswith("END") and GRACE_BALANCE in last
    assert hop(gw, sid, GRACE, f"1*{GRACE_PIN}") == last   # Grace's own retry: the stored reply, as before
    for phone in (FAITH, NOBODY):
        replay = hop(gw, sid, phone, f"1*{GRACE_PIN}")
        assert replay != last and GRACE_BALANCE not in replay and "Grace" not in replay, (phone, replay)
    assert hop(gw, sid, NOBODY, "").startswith("END Sorry, this phone number is not registered")


def test_another_phone_never_waits_on_nor_reads_a_busy_sessions_reply(gw):
    """While Grace's hop holds her session's lock, a callback with her session id from another phone
    is answered at once from its own session (never the busy session's stored reply)."""
    gw, services = gw
    sid = at_session_id()
    hop(gw, sid, GRACE, "")
    hop(gw, sid, GRACE, "1")
    assert GRACE_BALANCE in hop(gw, sid, GRACE, f"1*{GRACE_PIN}")
    key = Engine._session_key(Inbound("ussd", "africastalking", sid, GRACE, ""))
    _, token = services.sessions.acquire(key)             # Grace's next hop is running
    try:
        other = hop(gw, sid, FAITH, f"1*{GRACE_PIN}")
        assert GRACE_BALANCE not in other and "Grace" not in other
    finally:
        services.sessions.release(key, token)
