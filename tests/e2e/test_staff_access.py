"""Staff access and logs (issue 10, items 7-12): the console cookie, its own secret, throttled token guesses
counted instead of audited, security headers, the secrets production insists on, database errors without
their parameters, phone numbers masked in logs. Real Redis and PostgreSQL; the app in-process."""
from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import io
import logging
import re

import pytest
import sqlalchemy as sa
from flask import Flask
from itsdangerous import BadSignature

from convo.config import Settings
from convo.security import ConfigurationError
from tests.support.e2e import pg_app

CB = "cb-token-access-0123456789"
STAFF = "staff-token-access-0123456789abcdef"          # 35 characters: production takes it
SECRET = "secret-key-access-0123456789abcdef0123"
PEPPER = "pepper-for-tests-0123456789"
GRACE = "+254700000101"


@pytest.fixture
def app(sim, redis_url, pg_url):
    with pg_app(sim.url, redis_url, pg_url, callback_token=CB, staff_token=STAFF, secret_key=SECRET, trusted_proxies=1, staff_auth_failures=10, staff_auth_window_seconds=900) as a:
        yield a


def set_cookie(r, name: str = "convo_console") -> str:
    found = [h for h in r.headers.getlist("Set-Cookie") if h.startswith(name + "=")]
    assert len(found) == 1, r.headers.getlist("Set-Cookie")
    return found[0]


def csrf_of(client) -> str:
    with client.session_transaction("/console/") as s:
        return s["csrf"]


def sign_in(client, user="mifos", password="password", ip="198.51.100.7"):
    """The console's sign-in: the simulator's Mifos X user (``POST /authentication``)."""
    client.get("/console/login", headers={"X-Forwarded-For": ip})
    return client.post("/console/login", data={"csrf": csrf_of(client), "username": user, "password": password,
                                               "next": "/console/clients/1"}, headers={"X-Forwarded-For": ip})


def api(client, token=STAFF, user="alice", ip="198.51.100.7"):
    return client.get("/api/clients/1/messages", headers={"Authorization": f"Bearer {token}", "X-Staff-User": user,
                                                          "X-Forwarded-For": ip})


def refused_count(channel: str, reason: str) -> float:
    from convo.web.staff import REFUSED

    return REFUSED.labels(channel, reason)._value.get()


def production(**changes) -> Settings:
    values = dict(env="production", redis_url="memory://", pin_pepper=PEPPER, flows_reload_seconds=0,
                  callback_token=CB, secret_key=SECRET, staff_token=STAFF)
    values.update(changes)
    return Settings(**values)


# --------------------------------------------------------------------------- item 7: the cookie's flags
def test_the_console_cookie_has_its_own_name_and_the_documented_flags(app):
    c = app.test_client()
    anonymous = set_cookie(c.get("/console/login"))            # the CSRF token's cookie, before sign-in
    for flag in ("HttpOnly", "SameSite=Lax", "Path=/console"):
        assert flag in anonymous, anonymous
    assert "Secure" not in anonymous                            # development serves plain http
    assert not any(h.startswith("session=") for h in c.get("/console/login").headers.getlist("Set-Cookie"))
    r = sign_in(c)
    assert r.status_code == 302 and r.headers["Location"].endswith("/console/clients/1")
    signed_in = set_cookie(r)
    expires = email.utils.parsedate_to_datetime(re.search(r"Expires=([^;]+)", signed_in).group(1))
    lifetime = expires - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(hours=7, minutes=55) < lifetime <= dt.timedelta(hours=8), lifetime
    assert c.get("/console/clients/1").status_code == 200


def test_outside_development_the_cookie_is_secure():
    from convo.web import create_app

    for env in ("production", "staging"):
        a = create_app(production(env=env) if env == "production" else Settings(
            env=env, redis_url="memory://", flows_reload_seconds=0, secret_key=SECRET, staff_token=STAFF))
        r = a.test_client().get("/console/login", base_url="https://gw.example")
        assert "Secure" in set_cookie(r), (env, set_cookie(r))


# --------------------------------------------------------------------------- item 8: the cookie's secret
def test_the_cookie_is_signed_with_CONVO_SECRET_KEY_never_with_the_staff_token(app):
    value = set_cookie(app.test_client().get("/console/login")).split(";")[0].split("=", 1)[1]
    assert app.secret_key == SECRET.encode()
    assert app.session_interface.get_signing_serializer(app).loads(value)["csrf"]
    for derived in (hashlib.sha256(b"convo-console-cookie\0" + STAFF.encode()).digest(), STAFF.encode(),
                    hashlib.sha256(STAFF.encode()).digest()):
        guess = Flask("guess")
        guess.secret_key = derived              # what an attacker who guessed the token would sign with
        with pytest.raises(BadSignature):
            guess.session_interface.get_signing_serializer(guess).loads(value)


def test_the_cookie_says_nothing_about_the_token_without_the_secret(app):
    c = app.test_client()
    sign_in(c)
    with c.session_transaction("/console/") as s:
        mark = s["server_mark"]
        assert "password" not in str(dict(s))
    for candidate in (STAFF, "wrong"):          # the mark cannot test a token guess without CONVO_SECRET_KEY
        for derive in (lambda t: hashlib.sha256(t.encode()).hexdigest(),
                       lambda t: hashlib.sha256(hashlib.sha256(b"convo-console\0" + t.encode()).digest()).hexdigest()):
            assert not derive(candidate).startswith(mark[:16])


def test_a_new_staff_token_leaves_console_sign_ins_alone(app, sim, redis_url, pg_url):
    """The console signs in with Mifos X users (issue 14); the token is the API's alone."""
    from convo.cli import sim_settings
    from convo.web import create_app

    c = app.test_client()
    sign_in(c)
    assert c.get("/console/clients/1").status_code == 200
    other = create_app(sim_settings(sim.url, redis_url=redis_url, database_url=pg_url, flows_reload_seconds=0,
                                    staff_token=STAFF + "-new", secret_key=SECRET))
    c2 = other.test_client()
    c2._cookies = c._cookies                     # the same browser, after the operator changed the token
    assert c2.get("/console/clients/1").status_code == 200
    other.extensions["convo"].db.dispose()


def test_development_keeps_one_random_key_in_a_file_of_the_working_directory(tmp_path, monkeypatch, caplog):
    from convo.web import DEV_SECRET_FILE, cookie_secret

    monkeypatch.chdir(tmp_path)
    first, again = cookie_secret(Settings()), cookie_secret(Settings())
    assert first == again and len(first) >= 43                  # every worker process and restart signs alike
    path = tmp_path / DEV_SECRET_FILE
    assert path.read_text().strip().encode() == first and (path.stat().st_mode & 0o777) == 0o600
    assert first != STAFF.encode() and cookie_secret(Settings(secret_key=SECRET)) == SECRET.encode()
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    assert cookie_secret(Settings()) != first                   # random, not derived from anything
    (other / DEV_SECRET_FILE).unlink()
    (other / DEV_SECRET_FILE).mkdir()                           # unusable: a random key per process, said loudly
    with caplog.at_level(logging.WARNING):
        a, b = cookie_secret(Settings()), cookie_secret(Settings())
    assert a != b and "sign-ins hold in this process only" in caplog.text


# --------------------------------------------------------------------------- items 8, 9, 11: production
def test_production_requires_its_secrets():
    from convo.web import create_app

    create_app(production())
    create_app(production(staff_token=""))                      # no token: staff API closed
    for changes, word in (({"callback_token": ""}, "CONVO_CALLBACK_TOKEN"),
                          ({"callback_token": "short"}, "CONVO_CALLBACK_TOKEN"),
                          ({"secret_key": ""}, "CONVO_SECRET_KEY"),
                          ({"secret_key": "x" * 31}, "CONVO_SECRET_KEY"),
                          ({"staff_token": "t" * 31}, "CONVO_STAFF_TOKEN")):
        with pytest.raises(ConfigurationError, match=word):
            create_app(production(**changes))
    env = {"CONVO_ENV": "production", "CONVO_PIN_PEPPER": PEPPER, "CONVO_CALLBACK_TOKEN": CB,
           "CONVO_STAFF_TOKEN": STAFF, "CONVO_REDIS_URL": "memory://", "CONVO_FLOWS_RELOAD_SECONDS": "0"}
    with pytest.raises(ConfigurationError, match="CONVO_SECRET_KEY"):
        create_app(Settings.from_env(env))
    assert create_app(Settings.from_env({**env, "CONVO_SECRET_KEY": SECRET})).secret_key == SECRET.encode()


# --------------------------------------------------------------------------- item 9: throttling, counting
def test_wrong_bearer_tokens_are_throttled_per_address_counted_and_not_audited(app, caplog):
    from convo.store.db import AuditEvent

    c = app.test_client()
    before = refused_count("api", "wrong_token"), refused_count("api", "throttled")
    with caplog.at_level(logging.WARNING, logger="convo.web.staff"):
        for i in range(10):
            assert api(c, token=f"guess-{i}", user=f"user{i}", ip="203.0.113.9").status_code == 401
        r = api(c, token=STAFF, user="mallory", ip="203.0.113.9")              # even the right token, now
        assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 901
        assert api(c, ip="203.0.113.10").status_code == 200                    # another address is not held
    assert refused_count("api", "wrong_token") - before[0] == 10
    assert refused_count("api", "throttled") - before[1] == 1
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'convo_staff_auth_refused_total{channel="api",reason="wrong_token"}' in metrics
    lines = [m for m in caplog.messages if m.startswith("staff access:")]
    assert 1 <= len(lines) <= 3, lines                                          # 11 refusals, a few lines
    assert any("ip:203.0.113.9" in m and "10 wrong tokens" in m for m in lines), lines
    services = app.extensions["convo"]
    services.audit.flush()
    with sa.orm.Session(services.db) as s:
        rows = list(s.scalars(sa.select(AuditEvent).where(AuditEvent.channel == "api")))
    assert [(r.actor, r.outcome) for r in rows] == [("staff:alice", "200")]      # only the authenticated call


def test_wrong_tokens_naming_one_user_are_throttled_from_every_address(app):
    c = app.test_client()
    for i in range(10):
        assert api(c, token="guess", user="bob", ip=f"203.0.113.{100 + i}").status_code == 401
    assert api(c, token=STAFF, user="bob", ip="203.0.113.200").status_code == 429
    assert api(c, token=STAFF, user="BOB", ip="203.0.113.201").status_code == 429      # names are not case games
    assert api(c, token=STAFF, user="alice", ip="203.0.113.200").status_code == 200


def test_console_sign_in_is_throttled_with_the_api(app):
    c = app.test_client()
    before = refused_count("console", "wrong_password")
    for _ in range(10):
        r = sign_in(c, user="carol", password="guess", ip="203.0.113.50")
        assert r.status_code == 401 and "Wrong user name or password" in r.get_data(as_text=True)
    assert refused_count("console", "wrong_password") - before == 10
    r = sign_in(c, ip="203.0.113.50")
    assert r.status_code == 429 and "Too many wrong passwords" in r.get_data(as_text=True)
    assert api(c, ip="203.0.113.50").status_code == 429
    assert sign_in(app.test_client(), user="carol", ip="203.0.113.51").status_code == 429     # carol is held
    assert sign_in(app.test_client(), ip="203.0.113.51").status_code == 302                  # alice is not


# --------------------------------------------------------------------------- item 10: headers
def test_console_pages_send_csp_frame_and_referrer_headers(app):
    c = app.test_client()
    pages = [c.get("/console/login")]
    sign_in(c)
    pages += [c.get("/console/"), c.get("/console/clients/1")]
    for r in pages:
        assert r.status_code == 200
        csp = r.headers["Content-Security-Policy"]
        for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'",
                          "form-action 'self'"):
            assert directive in csp, csp
        assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Referrer-Policy"] == "no-referrer"
        assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Cache-Control"] == "no-store"
        html = r.get_data(as_text=True)
        assert "<style" not in html and " style=" not in html                  # nothing the CSP would block
        assert all('src="' in s or 'type="application/json"' in s for s in re.findall(r"<script[^>]*>", html))
    css = c.get("/console/static/console.css")
    assert css.status_code == 200 and "font-family" in css.get_data(as_text=True)


# --------------------------------------------------------------------------- item 12: logs
def test_database_errors_never_show_statement_parameters(pg_url, caplog):
    from convo.store.db import OutboxMessage, SubscriberPin, make_engine, upgrade

    upgrade(pg_url)
    engine = make_engine(pg_url)
    secret_hash = "$argon2id$v=19$m=19456,t=2,p=1$c2VjcmV0c2FsdA$aGFzaGhhc2hoYXNo"
    errors = []
    with engine.begin() as c:
        c.execute(sa.insert(SubscriberPin.__table__).values(phone=GRACE, client_id=1))
    try:                                                      # a failing update of a PIN being changed
        with engine.begin() as c:
            c.execute(sa.update(SubscriberPin.__table__).values(new_pin_hash=secret_hash, client_id=2 ** 70))
    except sa.exc.DBAPIError as e:
        errors.append(e)
    try:                                                      # a failing outbox insert
        with engine.begin() as c:
            c.execute(sa.insert(OutboxMessage.__table__).values(
                idempotency_key="k", recipient=GRACE * 3, body="Your PIN reset code is 4821", encoding="GSM-7",
                chars=27, segments=1))
    except sa.exc.DBAPIError as e:
        errors.append(e)
    assert len(errors) == 2
    with caplog.at_level(logging.ERROR):
        for e in errors:
            logging.getLogger("convo.test").error("database error", exc_info=e)
    for text in [str(e) for e in errors] + [caplog.text]:
        assert "hidden" in text                               # "[SQL parameters hidden due to hide_parameters=True]"
        for secret in (secret_hash, "c2VjcmV0c2FsdA", GRACE, "4821", "PIN reset code"):
            assert secret not in text, (secret, text)
    engine.dispose()


def test_phone_numbers_are_masked_in_logs_at_info_and_above(tmp_path):
    from convo.logs import mask_phones
    from convo.web import create_app

    assert mask_phones(f"reply for {GRACE} and 0700000101, 254700000101.") == \
        "reply for +254*******01 and 070*****01, 254*******01."
    assert mask_phones("outbox 12, 2026-11-30, KES 125400.00, ATUid_123456789012") == \
        "outbox 12, 2026-11-30, KES 125400.00, ATUid_123456789012"
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    disabled = logging.root.manager.disable          # `convo simulate` (test_cli) turns logging down in-process
    logging.disable(logging.NOTSET)
    try:
        create_app(Settings(redis_url="memory://", flows_reload_seconds=0, database_url=f"sqlite:///{tmp_path}/c.db"))
        lg = logging.getLogger("convo.test.logs")
        lg.setLevel(logging.DEBUG)
        handler.setLevel(logging.DEBUG)
        lg.debug("debug keeps %s", GRACE)
        lg.info("reply queued for %s", GRACE)
        lg.warning("opt-out from %s", "+255750000118")
        try:
            raise ValueError(f"no client for {GRACE}")
        except ValueError:
            lg.exception("lookup failed")
        logging.getLogger("werkzeug").setLevel(logging.INFO)
        logging.getLogger("werkzeug").info(f'"POST /api/subscribers/{GRACE}/pin-reset?token={CB} HTTP/1.1" 200')
    finally:
        root.removeHandler(handler)
        logging.disable(disabled)
    text = out.getvalue()
    assert f"DEBUG debug keeps {GRACE}" in text
    assert "INFO reply queued for +254*******01" in text and "WARNING opt-out from +255*******18" in text
    assert "ValueError: no client for +254*******01" in text
    assert "/api/subscribers/+254*******01/pin-reset?token=***" in text
    assert text.count(GRACE) == 1 and CB not in text
