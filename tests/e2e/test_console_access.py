"""The staff console (issue 14, items 1-4): sign in with one's own Mifos X user (POST /authentication),
permissions and office scope from Mifos X, find a client by phone / name / id, the client page, PIN
reset and unlock (confirmed, CSRF, audited), and what an attacker with a session, a form or another
office's user cannot do. Real Redis, real PostgreSQL, the simulator over HTTP; the app in-process."""
from __future__ import annotations

import base64
import datetime as dt
import re

import pytest
import sqlalchemy as sa

from convo.security import PinHasher
from tests.support.e2e import pg_app

SECRET = "secret-key-console-0123456789abcdef0123"
GRACE, GRACE_ID = "+254700000101", 1          # Head Office (1); Peter Otieno is her loan officer
SHARED = "+254700000150"                      # Achieng (37) and Baraka (38) Otieno, Nairobi Eastlands (2)
KISUMU_CLIENT = 3                             # Mary Akinyi Odhiambo, Kisumu (3)


@pytest.fixture
def app(sim, redis_url, pg_url):
    with pg_app(sim.url, redis_url, pg_url, secret_key=SECRET, staff_auth_failures=10, staff_auth_window_seconds=900, trusted_proxies=1, pin_argon2_memory_kib=1024, pin_argon2_time_cost=1) as a:
        yield a


def csrf_of(client) -> str:
    with client.session_transaction("/console/") as s:
        return s["csrf"]


def sign_in(client, user="mifos", password="password", ip="198.51.100.7", nxt="/console/"):
    client.get("/console/login", headers={"X-Forwarded-For": ip})
    return client.post("/console/login", data={"csrf": csrf_of(client), "username": user, "password": password,
                                               "next": nxt}, headers={"X-Forwarded-For": ip})


def audit_rows(app, action_prefix: str):
    from convo.store.db import AuditEvent

    a = AuditEvent.__table__
    with app.extensions["convo"].db.connect() as c:
        return c.execute(sa.select(a.c.actor, a.c.action, a.c.client_id, a.c.outcome, a.c.detail)
                         .where(a.c.action.like(action_prefix + "%")).order_by(a.c.id)).all()


def text(r) -> str:
    return r.get_data(as_text=True)


# --------------------------------------------------------------------------- the simulator's contract
def test_the_simulator_answers_authentication_like_fineract(sim):
    """``AuthenticationApiResource.authenticate`` (fineract-provider/src/main/java/org/apache/fineract/
    infrastructure/security/api/AuthenticationApiResource.java): JSON body only (FINERACT-726), 401 with
    ``ApiGlobalErrorResponse.unAuthenticated()`` via ``BadCredentialsExceptionMapper`` for a wrong password,
    ``AuthenticatedUserData`` with ``staffId``/``staffDisplayName`` for users linked to staff, and only
    username/userId/key/flags when ``doesPasswordHasToBeRenewed``."""
    import json
    from pathlib import Path

    import requests

    api = sim.url + "/fineract-provider/api/v1/authentication"
    h = {"Fineract-Platform-TenantId": "default"}
    samples = Path(__file__).resolve().parents[1] / "fineract_samples"
    ok = requests.post(api, json={"username": "mifos", "password": "password"}, headers=h, timeout=5)
    assert ok.json() == json.loads((samples / "authentication_success.json").read_text())
    bad = requests.post(api, json={"username": "mifos", "password": "nope"}, headers=h, timeout=5)
    assert bad.status_code == 401
    assert bad.json() == json.loads((samples / "error_401_authentication.json").read_text())
    assert requests.post(api, params={"username": "mifos", "password": "password"}, headers=h,
                         timeout=5).status_code == 400                       # no longer URL parameters
    peter = requests.post(api, json={"username": "peter", "password": "password"}, headers=h, timeout=5).json()
    assert (peter["officeId"], peter["officeName"], peter["staffId"], peter["staffDisplayName"]) == \
        (2, "Nairobi Eastlands", 2, "Otieno, Peter")
    assert "UPDATE_CLIENT" not in peter["permissions"] and "CREATE_SMS" in peter["permissions"]
    assert base64.b64decode(peter["base64EncodedAuthenticationKey"]) == b"peter:password"   # it IS the password
    renew = requests.post(api, json={"username": "renew", "password": "password"}, headers=h, timeout=5).json()
    assert renew["shouldRenewPassword"] is True and "permissions" not in renew and "officeId" not in renew


def test_the_client_signs_in_without_the_gateways_credentials(sim):
    from convo.mifos.client import MifosClient, MifosRejected

    m = MifosClient(sim.url + "/fineract-provider/api/v1", "mifos", "password")
    assert m.authenticate("beatrice", "password")["staffDisplayName"] == "Wekesa, Beatrice"
    with pytest.raises(MifosRejected) as e:
        m.authenticate("beatrice", "Password")
    assert e.value.status == 401
    m.close()


# --------------------------------------------------------------------------- item 1: sign in
def test_sign_in_with_mifos_x_credentials_keeps_name_office_permissions_never_the_password(app):
    c = app.test_client()
    r = sign_in(c, "beatrice", nxt=f"/console/clients/{SHARED_CLIENT}")
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/console/clients/{SHARED_CLIENT}")
    cookie = [h for h in r.headers.getlist("Set-Cookie") if h.startswith("convo_console=")][0]
    value = cookie.split(";")[0].split("=", 1)[1]
    data = app.session_interface.get_signing_serializer(app).loads(value)
    assert data["staff_user"] == "beatrice" and data["staff_name"] == "Wekesa, Beatrice"
    assert (data["office_id"], data["office_name"]) == (2, "Nairobi Eastlands")
    assert data["perms"] == ["CREATE_SMS", "READ_CLIENT", "UPDATE_CLIENT"]        # READ_LOAN is not kept
    raw = base64.urlsafe_b64decode(value.split(".")[0].lstrip(".") + "==") if not value.startswith(".") else b""
    for secret in (b"password", base64.b64encode(b"beatrice:password")):
        assert secret not in raw and secret.decode() not in str(data)
    page = c.get(f"/console/clients/{SHARED_CLIENT}")
    assert page.status_code == 200 and "Wekesa, Beatrice · Nairobi Eastlands" in text(page)
    signed = audit_rows(app, "staff.console_sign_in")
    assert [(r.actor, r.outcome) for r in signed] == [("staff:beatrice", "ok")]


SHARED_CLIENT = 37


def test_wrong_password_refused_throttled_and_counted(app):
    from convo.web.staff import REFUSED

    before = REFUSED.labels("console", "wrong_password")._value.get()
    for _ in range(10):
        r = sign_in(app.test_client(), "mifos", "guess", ip="203.0.113.60")
        assert r.status_code == 401 and "Wrong user name or password." in text(r)
    assert REFUSED.labels("console", "wrong_password")._value.get() - before == 10
    r = sign_in(app.test_client(), "mifos", "password", ip="203.0.113.60")
    assert r.status_code == 429 and "Too many wrong passwords" in text(r)
    assert sign_in(app.test_client(), "mifos", "password", ip="203.0.113.61").status_code == 429   # the name too
    assert sign_in(app.test_client(), "peter", "password", ip="203.0.113.61").status_code == 302


def test_renew_password_and_two_factor_users_are_refused(app):
    r = sign_in(app.test_client(), "renew")
    assert r.status_code == 403 and "change your password first" in text(r)
    r = sign_in(app.test_client(), "twofactor")
    assert r.status_code == 403 and "second factor" in text(r)


def test_a_session_is_for_one_mifos_x_server(app, sim, redis_url, pg_url):
    from convo.cli import sim_settings
    from convo.web import create_app

    c = app.test_client()
    sign_in(c)
    assert c.get("/console/").status_code == 200
    other = create_app(sim_settings(sim.url, redis_url=redis_url, database_url=pg_url, flows_reload_seconds=0,
                                    secret_key=SECRET, fineract_tenant="other"))
    c2 = other.test_client()
    c2._cookies = c._cookies
    assert c2.get("/console/").status_code == 302                     # another tenant: sign in again
    other.extensions["convo"].db.dispose()


# --------------------------------------------------------------------------- item 2: find a client
def test_find_a_client_by_phone_as_typed_by_name_and_by_id(app):
    c = app.test_client()
    sign_in(c)
    for typed in ("0700 000 101", "+254 700 000101", "254700000101", "700000101"):
        r = c.get("/console/", query_string={"q": typed})
        rows = re.findall(r'<tr data-id="(\d+)">', text(r))
        assert rows == ["1"], (typed, rows)
        assert "Grace Wanjiru Kamau" in text(r) and "Head Office" in text(r)
    shared = text(c.get("/console/", query_string={"q": "0700 000 150"}))
    assert re.findall(r'<tr data-id="(\d+)">', shared) == ["37", "38"]
    assert "yes, with client 38" in shared and "yes, with client 37" in shared
    named = text(c.get("/console/", query_string={"q": "Otieno"}))
    assert {"37", "38"} <= set(re.findall(r'<tr data-id="(\d+)">', named))
    by_id = text(c.get("/console/", query_string={"q": "5"}))
    assert re.findall(r'<tr data-id="(\d+)">', by_id) == ["5"] and "Faith Njeri Mwangi" in by_id
    assert "No live client has the number +254799999999" in text(c.get("/console/", query_string={"q": "0799999999"}))
    searches = audit_rows(app, "staff.console_search")
    assert searches and all(r.actor == "staff:mifos" for r in searches)


def test_a_number_is_read_in_the_staff_members_country(app, sim):
    """A Kisumu user typing 0771000127 means the Kenyan Wairimu (40), never Fatou in Dakar (27)."""
    c = app.test_client()
    sign_in(c, "halima")
    rows = re.findall(r'<tr data-id="(\d+)">', text(c.get("/console/", query_string={"q": "0771 000 127"})))
    assert rows == ["40"]


def test_another_offices_clients_are_hidden_and_refused(app):
    c = app.test_client()
    sign_in(c, "halima")                                             # Kisumu (3)
    assert c.get(f"/console/clients/{KISUMU_CLIENT}").status_code == 200
    r = c.get(f"/console/clients/{GRACE_ID}")                        # Head Office's client
    assert r.status_code == 403 and "Not allowed" in text(r) and "Grace" not in text(r)
    found = text(c.get("/console/", query_string={"q": "+254700000101"}))
    assert "Grace" not in found and "other offices are not shown" in found
    c.get(f"/console/clients/{KISUMU_CLIENT}")
    r = c.post(f"/console/clients/{GRACE_ID}/messages", data={"csrf": csrf_of(c), "text": "hi"})
    assert r.status_code == 403
    r = c.post(f"/console/clients/{GRACE_ID}/pin", data={"csrf": csrf_of(c), "action": "reset", "confirm": "yes"})
    assert r.status_code == 403


# --------------------------------------------------------------------------- item 3: the client page
def test_the_client_page_shows_pin_language_stop_dialogs_and_messages_in_the_offices_time(app):
    from convo.store import subscribers
    from convo.store.db import OptOut

    s = app.extensions["convo"]
    subscribers.set_pin(s.db, PinHasher.from_settings(s.settings), GRACE, GRACE_ID, "4821")
    subscribers.set_language(s.db, GRACE, "sw")
    with s.db.begin() as conn:
        conn.execute(sa.insert(OptOut.__table__).values(phone=GRACE, opted_out=True, source="sms"))
    subscribers.audit_many(s.db, [dict(action="data.balance", channel="ussd", phone=GRACE, client_id=GRACE_ID,
                                       outcome="ok", detail={"flow": "balance", "account": 101},
                                       at=dt.datetime(2026, 1, 5, 6, 15, tzinfo=dt.timezone.utc))])
    c = app.test_client()
    sign_in(c)
    page = text(c.get(f"/console/clients/{GRACE_ID}"))
    assert 'data-state="set"' in page and "Set on " in page and "times in Africa/Nairobi" in page
    assert '<span id="language">sw</span>' in page and "opted out (STOP)" in page
    assert "<td>2026-01-05 09:15</td><td>ussd</td><td>balance</td><td>data.balance</td><td>ok</td>" in page  # EAT
    assert "4821" not in page and "101" not in page.split('id="dialogs"')[1]


def test_an_unknown_client_gets_a_clear_page_without_a_send_form(app):
    c = app.test_client()
    sign_in(c)
    r = c.get("/console/clients/424242")
    assert r.status_code == 404 and "No client 424242" in text(r)
    assert "send-form" not in text(r) and "Mifos X has no client with the id 424242" in text(r)


# --------------------------------------------------------------------------- PIN reset: permission, CSRF, audit
def _locked(app, phone=GRACE, client_id=GRACE_ID):
    from convo.store import subscribers

    s = app.extensions["convo"]
    hasher = PinHasher.from_settings(s.settings)
    subscribers.set_pin(s.db, hasher, phone, client_id, "4821")
    for _ in range(3):
        subscribers.verify(s.db, hasher, phone, client_id, "0000", max_attempts=3)
    assert subscribers.status(s.db, phone, client_id).state == "locked"


def test_reset_a_pin_confirmed_and_audited_with_the_real_user(app):
    from convo.store import subscribers

    _locked(app)
    c = app.test_client()
    sign_in(c)
    page = text(c.get(f"/console/clients/{GRACE_ID}"))
    assert 'data-state="locked"' in page and "Locked until " in page
    unconfirmed = c.post(f"/console/clients/{GRACE_ID}/pin", data={"csrf": csrf_of(c), "action": "reset"})
    assert unconfirmed.status_code == 302 and "confirm" in unconfirmed.headers["Location"]
    assert subscribers.status(app.extensions["convo"].db, GRACE, GRACE_ID).state == "locked"
    r = c.post(f"/console/clients/{GRACE_ID}/pin", data={"csrf": csrf_of(c), "action": "reset", "confirm": "yes",
                                                        "reason": "forgot PIN, ID seen"})
    assert r.status_code == 302 and "done=reset" in r.headers["Location"]
    assert subscribers.status(app.extensions["convo"].db, GRACE, GRACE_ID).state == "none"
    rows = audit_rows(app, "pin.reset")
    assert [(x.actor, x.client_id, x.outcome) for x in rows] == [("staff:mifos", GRACE_ID, "ok")]
    assert rows[0].detail["reason"] == "forgot PIN, ID seen" and rows[0].detail["was_locked"] is True


def test_a_user_without_update_client_cannot_reset_not_even_by_a_direct_post(app):
    from convo.store import subscribers

    _locked(app, SHARED, SHARED_CLIENT)
    c = app.test_client()
    sign_in(c, "peter")                                             # READ_CLIENT, CREATE_SMS; no UPDATE_CLIENT
    page = text(c.get(f"/console/clients/{SHARED_CLIENT}"))
    assert "pin-form" not in page and "send-form" in page
    for action in ("reset", "unlock"):
        r = c.post(f"/console/clients/{SHARED_CLIENT}/pin",
                   data={"csrf": csrf_of(c), "action": action, "confirm": "yes"})
        assert r.status_code == 403 and "may not reset PINs" in text(r)
    assert subscribers.status(app.extensions["convo"].db, SHARED, SHARED_CLIENT).state == "locked"
    assert [(x.actor, x.outcome) for x in audit_rows(app, "pin.reset")] == [("staff:peter", "403")] * 2


def test_a_view_only_user_can_neither_send_nor_reset(app):
    c = app.test_client()
    sign_in(c, "readonly")                                          # ALL_FUNCTIONS_READ
    page = text(c.get(f"/console/clients/{GRACE_ID}"))
    assert "send-form" not in page and "pin-form" not in page
    r = c.post(f"/console/clients/{GRACE_ID}/messages", data={"csrf": csrf_of(c), "text": "hello"})
    assert r.status_code == 403


def test_forms_without_the_sessions_csrf_token_are_refused(app):
    from convo.store import subscribers

    _locked(app)
    c = app.test_client()
    sign_in(c)
    for data in ({"action": "reset", "confirm": "yes"}, {"action": "reset", "confirm": "yes", "csrf": "forged"}):
        assert c.post(f"/console/clients/{GRACE_ID}/pin", data=data).status_code == 403
        assert c.post(f"/console/clients/{GRACE_ID}/messages", data={**data, "text": "x"}).status_code == 403
    other = app.test_client()                                       # another browser's token is not ours
    sign_in(other, "beatrice")
    other.get("/console/")
    assert c.post(f"/console/clients/{GRACE_ID}/pin",
                  data={"csrf": csrf_of(other), "action": "reset", "confirm": "yes"}).status_code == 403
    assert subscribers.status(app.extensions["convo"].db, GRACE, GRACE_ID).state == "locked"
    anonymous = app.test_client()
    r = anonymous.post(f"/console/clients/{GRACE_ID}/pin", data={"action": "reset", "confirm": "yes"})
    assert r.status_code == 302 and "/console/login" in r.headers["Location"]


def test_a_reset_on_a_shared_phone_keeps_the_other_clients_pin(app):
    from convo.store import subscribers

    s = app.extensions["convo"]
    hasher = PinHasher.from_settings(s.settings)
    subscribers.set_pin(s.db, hasher, SHARED, 37, "1111")
    subscribers.set_pin(s.db, hasher, SHARED, 38, "2222")
    c = app.test_client()
    sign_in(c, "beatrice")
    page = text(c.get("/console/clients/37"))
    assert "shared with client" in page and "Other clients with a PIN on this phone: 38" in page
    c.post("/console/clients/37/pin", data={"csrf": csrf_of(c), "action": "reset", "confirm": "yes"})
    assert subscribers.status(s.db, SHARED, 37).state == "none"
    assert subscribers.status(s.db, SHARED, 38).state == "set"


def test_the_client_page_shows_a_sim_swap_hold(sim, redis_url, pg_url):
    """With CONVO_SIMSWAP_HOLD_DAYS, a number whose SIM was swapped two days ago shows the hold (Africa's
    Talking's Insights API, here the fake), one swapped a month ago does not."""
    import datetime as dt

    from convo.cli import sim_settings
    from convo.devkit.fake_at import start_fake_at
    from convo.store.db import upgrade
    from convo.web import create_app

    fake = start_fake_at()
    today = dt.date.today()
    fake.fake.configure(sim_swaps={GRACE: (today - dt.timedelta(days=2)).isoformat(),
                                   "+254700000105": (today - dt.timedelta(days=30)).isoformat()})
    upgrade(pg_url)
    app = create_app(sim_settings(sim.url, redis_url=redis_url, database_url=pg_url, flows_reload_seconds=0,
                                  secret_key=SECRET, simswap_hold_days=7, at_username="sandbox",
                                  at_api_key="test", at_base_url=fake.url))
    try:
        c = app.test_client()
        sign_in(c)
        assert "SIM-swap hold" in text(c.get(f"/console/clients/{GRACE_ID}"))
        assert "SIM-swap hold" not in text(c.get("/console/clients/5"))         # Faith, swapped 30 days ago
    finally:
        app.extensions["convo"].db.dispose()
        fake.stop()
