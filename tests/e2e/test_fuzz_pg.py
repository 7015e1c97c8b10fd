"""Fuzz every endpoint against PostgreSQL and Redis: at least 10,000 requests, zero 5xx, no stack trace.

The endpoints are enumerated from ``app.url_map``, so a route added tomorrow is fuzzed tomorrow: each
rule gets its path arguments filled by converter (``int``: small ids, 64-bit edges, 30-digit numbers;
``path``/``string``: hostile text, and the callback token where the argument is called ``token``), one
of its methods or another, and a body that is absent, a form, JSON (hostile leaves, deep nesting, huge
numbers, NaN), raw bytes or oversize. Authentication is right, wrong or absent, so both the guards and
what they protect are reached; a console session is opened for half the examples.

Requests go through Flask's test client in-process (no sockets, fast); storage is real: a fresh
PostgreSQL schema (``pg_url``, which refuses NUL and 2**70 where SQLite takes them), Redis
(``redis_url``) and the Fineract simulator.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

CB = "cb-token-fuzz-0123456789abcdef"
STAFF = "staff-token-fuzz-0123456789abcdef0123"
EXAMPLES = 11_500                             # one request each (~350 per URL rule: 32 rules with the studio)
MIN_REQUESTS = 10_000
LEAKS = ("Traceback (most recent call last)", 'File "/', "sqlalchemy.", "psycopg.", "RecursionError",
         "werkzeug.exceptions", "jinja2.exceptions")

# --------------------------------------------------------------------------- strategies
HOSTILE = [
    "", " ", "0", "1", "7", "-1", "*", "**", "1*2*3", "#", "*384*12#", "' OR 1=1 --",
    "'; DROP TABLE outbox; --", "{{ 7*7 }}", "{% for x in ().__class__.__base__.__subclasses__() %}{{x}}{% endfor %}",
    "${jndi:ldap://x/a}", "<script>alert(1)</script>", "\x00", "a\x00b", "\r\n", "\ud800", "é" * 3, "🙂" * 10,
    "٣٤٥٦", "²", "A" * 600, "9" * 2000, "+254700000101", "0700000101", "+254799999999", "+255700000201",
    "ATUid_x", "Success", "Failed", "Incomplete", "1e309", "NaN", "Infinity", "null", "[]", "{}", "true",
    "Queued", "Submitted", "DeliveryFailure", "99999999999999999999999", "9223372036854775807",
    "9223372036854775808", "-9223372036854775809", "../../etc/passwd", "..%2f..%2f", "%00", "%", "/", "//x",
    "LOAN", "REPAYMENT", "SAVINGSACCOUNT", "DEPOSIT", "default", "branch_visit", "documents_ready", "BAL",
    CB, STAFF,
]
text = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=20),
                 st.tuples(st.sampled_from(["A", "9", "é", "🙂", "*1", "\x00"]), st.integers(50, 3000)).map(
                     lambda t: t[0] * t[1]))
FIELDS = ["sessionId", "serviceCode", "phoneNumber", "networkCode", "text", "status", "input", "hopsCount",
          "durationInMillis", "cost", "errorMessage", "from", "to", "id", "linkId", "date", "retryCount",
          "failureReason", "senderId", "lastAppResponse", "user", "token", "csrf", "next", "template", "var_date",
          "idempotency_key", "client", "reason", "unlock_only", "client_id", "variables", "entityName",
          "actionName", "clientId", "loanId", "savingsId", "resourceId", "officeId", "transactionId", "changes",
          "\x00", "x" * 300]


def _json_leaf():
    return st.one_of(text, st.integers(), st.integers(min_value=2 ** 63 - 2, max_value=2 ** 80),
                     st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none())


json_value = st.recursive(_json_leaf(), lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner, max_size=5)),
    max_leaves=12)


def _wire(v: str) -> bytes:
    """Text as the bytes a client would send (a lone surrogate becomes the invalid UTF-8 it stands for)."""
    return v.encode("utf-8", "surrogatepass")


def _deep(n: int) -> bytes:
    return ("[" * n + "]" * n).encode()


def _as_json(v) -> bytes:
    return json.dumps(v, allow_nan=True, ensure_ascii=False).encode("utf-8", "surrogatepass")


bodies = st.one_of(
    st.none(),
    st.tuples(st.just("form"), st.dictionaries(st.sampled_from(FIELDS), text, max_size=10)),
    st.tuples(st.just("json"), st.dictionaries(st.sampled_from(FIELDS), json_value, max_size=6).map(_as_json)),
    st.tuples(st.just("json"), json_value.map(_as_json)),
    st.tuples(st.just("json"), st.sampled_from([_deep(40), _deep(3000), _deep(30000), b'{"a":' * 50 + b"1" + b"}" * 50,
                                                b"\xff\xfe{}", b'{"text": "\\u0000"}', b'{"x": 1e999}',
                                                b'{"clientId": 123456789012345678901234567890}',
                                                b'{"text": "\\ud800"}', b"{" * 5, b""])),
    st.tuples(st.just("raw"), st.binary(max_size=200)),
    st.tuples(st.just("big"), st.sampled_from([9_000, 20_000, 70_000, 110_000])),
)

# Valid-looking requests per endpoint, with a few fields swapped for hostile values, so the fuzz gets past
# the parsers into the engine, the outbox, the hooks and the console (an endpoint not listed here is
# still fuzzed with random bodies).
PHONES = ["+254700000101", "+254700000105", "+254700000107", "+255750000118", "0700000101", "+254799999999"]
_n = iter(range(10 ** 9))


def _ussd():
    return st.fixed_dictionaries({
        "sessionId": st.builds(lambda: f"ATUid_fz_{next(_n)}") | st.sampled_from(["ATUid_fz_same", "ATUid_x"]),
        "serviceCode": st.just("*384*12#"), "phoneNumber": st.sampled_from(PHONES),
        "networkCode": st.sampled_from(["63902", ""]),
        "text": st.lists(st.sampled_from(["1", "2", "3", "4", "5", "0", "98", "1234", "482617", "500", "x"]),
                         max_size=5).map("*".join)})


BASES = {
    "gateways.at_ussd_session": ("form", _ussd()),
    "gateways.at_ussd_event": ("form", st.fixed_dictionaries({
        "sessionId": st.just("ATUid_fz_same"), "status": st.sampled_from(["Success", "Incomplete", "Failed"]),
        "phoneNumber": st.sampled_from(PHONES), "serviceCode": st.just("*384*12#"), "networkCode": st.just("63902"),
        "hopsCount": st.just("3"), "durationInMillis": st.just("9000"), "cost": st.just("KES 1.5"),
        "input": st.just("1*1234")})),
    "gateways.at_sms_inbound": ("form", st.fixed_dictionaries({
        "id": st.builds(lambda: f"ATXid_fz_{next(_n)}"), "from": st.sampled_from(PHONES), "to": st.just("22384"),
        "text": st.sampled_from(["BAL", "DUE", "MINI", "HELP", "STOP", "START", "PIN", "1", "482617", "hello"]),
        "linkId": st.sampled_from(["", "L-1"]), "date": st.just("2026-01-01 10:00:00"),
        "networkCode": st.just("63902")})),
    "gateways.at_delivery_report": ("form", st.fixed_dictionaries({
        "id": st.sampled_from(["ATXid_1", "log-1-1", "unknown"]),
        "status": st.sampled_from(["Success", "Failed", "Rejected", "Sent", "Buffered", "Weird"]),
        "phoneNumber": st.sampled_from(PHONES), "networkCode": st.just("63902"),
        "failureReason": st.sampled_from(["", "DeliveryFailure"]), "retryCount": st.sampled_from(["0", "1", ""])})),
    "gateways.at_optout": ("form", st.fixed_dictionaries({"senderId": st.just("22384"),
                                                          "phoneNumber": st.sampled_from(PHONES)})),
    "notify_api.post_message": ("json", st.one_of(
        st.fixed_dictionaries({"text": st.sampled_from(["Please visit the branch.", "Habari", "é" * 80])},
                              optional={"idempotency_key": st.sampled_from(["k1", "k2"])}),
        st.fixed_dictionaries({"template": st.sampled_from(["branch_visit", "documents_ready"]),
                               "variables": st.fixed_dictionaries({"date": st.sampled_from(["Monday", "x" * 100])})}))),
    "staff.pin_reset": ("json", st.fixed_dictionaries({"client_id": st.sampled_from([1, 1, 1, 424242])},
                                                      optional={"unlock_only": st.booleans(),
                                                                "reason": st.just("ID checked")})),
    "notify_console.client_send": ("form", st.fixed_dictionaries(
        {"csrf": st.just("fuzz-csrf"), "text": st.sampled_from(["Hello from the branch", ""])},
        optional={"template": st.sampled_from(["branch_visit", "documents_ready", ""]),
                  "var_date": st.just("Monday"), "idempotency_key": st.just("c1")})),
    "notify_console.login": ("form", st.fixed_dictionaries(
        {"csrf": st.just("fuzz-csrf"), "username": st.sampled_from(["mifos", "peter", ""]),
         "password": st.sampled_from(["password", "wrong"]), "next": st.sampled_from(["/console/clients/1", "//evil"])})),
    "notify_console.client_pin": ("form", st.fixed_dictionaries(
        {"csrf": st.just("fuzz-csrf"), "action": st.sampled_from(["reset", "unlock", "x"])},
        optional={"confirm": st.just("yes"), "reason": st.just("forgot")})),
    "notify_console.logout": ("form", st.fixed_dictionaries({"csrf": st.just("fuzz-csrf")})),
    "hooks.fineract_hook": ("json", st.fixed_dictionaries(
        {"officeId": st.just(2), "clientId": st.sampled_from([1, 2, 5])},
        optional={"loanId": st.sampled_from([29, 30, 424242]), "savingsId": st.sampled_from([101, 102]),
                  "resourceId": st.integers(1, 10 ** 6), "transactionId": st.integers(1, 10 ** 6),
                  "changes": st.fixed_dictionaries({"transactionAmount": st.sampled_from(["500", "1e3", "x"])})})),
}


def based(endpoint: str):
    """The endpoint's valid-looking body with 0-2 fields (or values) made hostile, as the test client sends it."""
    if endpoint not in BASES:
        return st.nothing()
    kind, base = BASES[endpoint]

    @st.composite
    def make(draw):
        d = dict(draw(base))
        for _ in range(draw(st.integers(0, 2))):
            if d and draw(st.booleans()):
                d[draw(st.sampled_from(sorted(d)))] = draw(text if kind == "form" else json_value)
            else:
                d[draw(st.sampled_from(FIELDS))] = draw(text if kind == "form" else json_value)
        if kind == "form":
            return "form", {k: v if isinstance(v, str) else json.dumps(v) for k, v in d.items()}
        return "json", _as_json(d)
    return make()


_ARG = re.compile(r"<(?:([a-zA-Z_]\w*)(?:\((.*?)\))?:)?([a-zA-Z_]\w*)>")
INT_VALUES = st.one_of(st.integers(0, 12).map(str), st.sampled_from(
    ["0", "9223372036854775807", "9223372036854775808", "99999999999999999999999", "1" + "0" * 30, "٣",
     "-1", "00000000000000000000001"]), st.integers(0, 2 ** 63 - 1).map(str))


def path_value(converter: str | None, name: str):
    if converter == "int":
        return INT_VALUES
    if name == "token":
        return st.one_of(st.just(CB), text)
    if name == "phone":
        return st.one_of(st.just(PHONES[0]), st.sampled_from(PHONES), text)
    return text


def fill(rule: str, draw) -> str:
    def sub(m):
        conv, name = m.group(1), m.group(3)
        v = draw(path_value(conv, name))
        return v if conv == "int" else quote(_wire(v), safe="/" if conv == "path" else "")
    return _ARG.sub(sub, rule)


# --------------------------------------------------------------------------- the app
@pytest.fixture(scope="module")
def sim():
    from convo.devkit.fineract_sim import start_simulator

    s = start_simulator()
    yield s
    s.stop()


def _app(sim, redis_url, pg_url, **overrides):
    from convo.cli import sim_settings
    from convo.store.db import upgrade
    from convo.web import create_app

    upgrade(pg_url)
    # the same schema and checks; only the commit does not wait for the disk (the fuzz makes ~1,000 of them)
    pg_url = pg_url.replace("options=", "options=-csynchronous_commit%3Doff%20")
    values = dict(redis_url=redis_url, database_url=pg_url, flows_reload_seconds=0, callback_token=CB,
                  staff_token=STAFF, pin_argon2_memory_kib=1024, pin_argon2_time_cost=1, ussd_sessions_per_hour=0,
                  sms_inbound_per_hour=0, sms_replies_per_hour=0, staff_auth_failures=0)
    values.update(overrides)
    return create_app(sim_settings(sim.url, **values))


def _sign_in(app, client) -> None:
    from convo.web import console

    with app.test_request_context():
        mark = console._server_mark()
    with client.session_transaction("/console/") as s:          # the cookie's path
        s.update(staff_user="fuzz", office_id=1, office_name="Head Office", perms=["ALL_FUNCTIONS"],
                 server_mark=mark, csrf="fuzz-csrf")


def check(r, where) -> None:
    body = r.get_data(as_text=True)
    assert r.status_code < 500, (where, r.status_code, body[:400])
    for leak in LEAKS:
        assert leak not in body, (where, leak, body[:400])


def _fuzz(app, n_examples: int) -> Counter:
    rules = [r for r in app.url_map.iter_rules()]
    assert len(rules) >= 15, [r.rule for r in rules]
    seen: Counter = Counter()
    statuses = app.config.setdefault("FUZZ_STATUSES", Counter())
    all_methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]

    good_auth = {"Authorization": f"Bearer {STAFF}", "X-Staff-User": "alice"}
    hook_headers = {"Fineract-Platform-TenantId": "default", "X-Fineract-Entity": "LOAN",
                    "X-Fineract-Action": "REPAYMENT"}
    # (query, headers) most requests carry: authenticated or not, right or wrong token (few draws: fast)
    contexts = [({"token": CB}, good_auth), ({"token": CB}, good_auth), ({"token": CB}, {}), ({}, good_auth),
                ({"token": "nope"}, {"Authorization": "Bearer nope", "X-Staff-User": "alice"}), ({}, {}),
                ({"token": CB}, {**good_auth, **hook_headers}), ({"token": CB}, {**hook_headers,
                                                                                "X-Fineract-Action": "DEPOSIT",
                                                                                "X-Fineract-Entity": "SAVINGSACCOUNT"}),
                ({"token": CB}, {"Authorization": f"Bearer {STAFF}"})]
    header_names = ["Authorization", "X-Staff-User", "Fineract-Platform-TenantId", "X-Fineract-Entity",
                    "X-Fineract-Action", "X-Forwarded-For", "Content-Type", "Cookie"]

    @st.composite
    def request(draw):
        rule = draw(st.sampled_from(rules))
        own = sorted(rule.methods - {"OPTIONS"})
        method = draw(st.sampled_from(own * 6 + all_methods))
        path = fill(rule.rule, draw)
        query, headers = (dict(x) for x in draw(st.sampled_from(contexts)))
        if draw(st.integers(0, 3)) == 0:                      # one hostile query field or header
            value = draw(text)
            if draw(st.booleans()):
                query[draw(st.sampled_from(FIELDS))] = value
            else:
                headers[draw(st.sampled_from(header_names))] = value
        # what a WSGI server hands the app: header bytes read as latin-1 (PEP 3333), never a line break
        headers = {k: _wire(v).decode("latin-1") for k, v in headers.items() if "\n" not in v and "\r" not in v}
        query = {k: _wire(v) for k, v in query.items()}
        body = draw(based(rule.endpoint)) if rule.endpoint in BASES and draw(st.integers(0, 2)) else draw(bodies)
        return rule.endpoint, method, path, query, headers, body, draw(st.booleans())

    signed_in, anonymous = app.test_client(), app.test_client()
    _sign_in(app, signed_in)

    @hsettings(max_examples=n_examples, deadline=None, database=None, derandomize=True,
               suppress_health_check=list(HealthCheck))
    @given(request())
    def run(req):
        endpoint, method, path, query, headers, body, console = req
        kw = {"method": method, "query_string": query, "headers": headers}
        if body is not None:
            kind, data = body
            if kind == "form":
                if data.get("csrf") == "":
                    data["csrf"] = "fuzz-csrf"                  # the signed-in client's CSRF token
                kw["data"] = {k: _wire(v) for k, v in data.items()}
            elif kind == "json":
                kw["data"], kw["content_type"] = data, "application/json"
            elif kind == "raw":
                kw["data"], kw["content_type"] = data, "application/octet-stream"
            else:
                kw["data"], kw["content_type"] = b"x=" + b"y" * data, "application/x-www-form-urlencoded"
        if console:
            _sign_in(app, signed_in)          # again: a fuzzed sign-out or sign-in may have replaced the session
        r = (signed_in if console else anonymous).open(path, **kw)
        check(r, (endpoint, method, path[:200], query, body if body is None else (body[0], str(body[1])[:200])))
        seen[endpoint] += 1
        statuses[(endpoint, method, r.status_code)] += 1

    run()
    return seen


def test_every_endpoint_answers_10000_hostile_requests_without_a_5xx_on_postgresql(sim, redis_url, pg_url):
    from tests.support.e2e import give_pin

    app = _app(sim, redis_url, pg_url)
    give_pin(app.extensions["convo"], "+254700000101", "482617")       # a PIN staff can reset
    seen = _fuzz(app, EXAMPLES)
    assert sum(seen.values()) >= MIN_REQUESTS, sum(seen.values())
    endpoints = {r.endpoint for r in app.url_map.iter_rules()}
    assert endpoints <= set(seen), endpoints - set(seen)                # every endpoint, new ones included
    assert min(seen.values()) >= 100, seen
    # deep, not only at the door: every endpoint with a valid-looking body template answered it with success
    ok = {e for (e, m, status), n in app.config["FUZZ_STATUSES"].items() if m == "POST" and 200 <= status < 400}
    assert set(BASES) <= ok, set(BASES) - ok
    app.extensions["convo"].db.dispose()


def test_fuzzing_with_the_staff_throttle_on_still_answers_4xx(sim, redis_url, pg_url):
    """The throttle (429 after 10 wrong tokens) in the path of every staff call: still never a 5xx."""
    app = _app(sim, redis_url, pg_url, staff_auth_failures=10)
    seen = _fuzz(app, 1000)
    assert sum(seen.values()) >= 900
    app.extensions["convo"].db.dispose()
