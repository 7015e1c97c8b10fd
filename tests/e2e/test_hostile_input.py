"""Hostile input gets a 4xx with the reason, never a 500 and never a stack trace (issue 10, items 4 and 5).

Every test runs the app against real PostgreSQL (which refuses NUL bytes in text and integers beyond
64 bits, where SQLite takes them) and real Redis, in-process through Flask's test client.
"""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.support.e2e import pg_app

CB = "cb-token-hostile-0123456789"
STAFF = "staff-token-hostile-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {STAFF}", "X-Staff-User": "alice"}
GRACE = "+254700000101"
HOOK = f"/hooks/fineract/{CB}/"
TENANT = {"Fineract-Platform-TenantId": "default"}


@pytest.fixture
def app(sim, redis_url, pg_url):
    with pg_app(sim.url, redis_url, pg_url, callback_token=CB, staff_token=STAFF, pin_argon2_memory_kib=1024, pin_argon2_time_cost=1) as a:
        yield a


def refused(r, status: int, *words: str) -> str:
    """``r`` is a ``status`` answer whose text gives the reason (each of ``words``) and no stack trace."""
    body = r.get_data(as_text=True)
    assert r.status_code == status, (r.status_code, body[:500])
    assert "Traceback" not in body and 'File "' not in body, body[:500]
    for w in words:
        assert w.lower() in body.lower(), (w, body[:500])
    return body


def rows(app, table: str) -> list:
    with app.extensions["convo"].db.connect() as c:
        return c.execute(sa.text(f"SELECT * FROM {table}")).all()


# --------------------------------------------------------------------------- NUL bytes
def test_a_nul_byte_in_an_inbound_sms_is_refused_and_nothing_is_stored(app):
    c = app.test_client()
    sms = {"id": "ATXid_nul", "from": GRACE, "to": "22384", "text": "BAL", "linkId": "L1", "date": "2026-01-01"}
    for field in ("to", "linkId", "text", "date", "id", "from"):
        r = c.post(f"/gateways/africastalking/sms?token={CB}", data={**sms, field: sms[field] + "\x00x"})
        refused(r, 400, "NUL", field)
    assert rows(app, "outbox") == []
    r = c.post(f"/gateways/africastalking/sms?token={CB}", data={**sms, "linkId": "L" * 101})  # found by the fuzz
    refused(r, 400, "linkId", "longer than 100")


def test_a_nul_byte_in_any_delivery_report_field_is_refused(app):
    c = app.test_client()
    report = {"id": "ATXid_1", "status": "Success", "phoneNumber": GRACE, "networkCode": "63902",
              "failureReason": "DeliveryFailure", "retryCount": "0"}
    for field in report:
        r = c.post(f"/gateways/africastalking/delivery?token={CB}", data={**report, field: "a\x00b"})
        refused(r, 400, "NUL", field)
    assert rows(app, "delivery_reports") == []
    ok = c.post(f"/gateways/africastalking/delivery?token={CB}", data=report)
    assert ok.status_code == 200 and len(rows(app, "delivery_reports")) == 1


def test_a_nul_byte_in_a_staff_message_or_its_variables_is_refused(app):
    c = app.test_client()
    r = c.post("/api/clients/1/messages", json={"text": "Hello\x00 Grace"}, headers=AUTH)
    refused(r, 400, "NUL")
    r = c.post("/api/clients/1/messages", json={"template": "branch_visit", "variables": {"date": "Mon\x00"}},
               headers=AUTH)
    refused(r, 400, "NUL")
    r = c.post("/api/clients/1/messages", data=b'{"text": "a\\u0000b"}', content_type="application/json",
               headers=AUTH)
    refused(r, 400, "NUL")
    assert rows(app, "outbox") == []


def test_a_nul_byte_in_the_path_query_or_a_header_is_refused(app):
    c = app.test_client()
    refused(c.get("/api/subscribers/%2B2547%00", headers=AUTH), 400, "NUL")
    refused(c.post(f"/gateways/africastalking/ussd?token={CB}&x=%00"), 400, "NUL")
    refused(c.get("/healthz", headers={"X-Anything": "a\x00b"}), 400, "NUL")


# --------------------------------------------------------------------------- numbers beyond 64 bits
def test_client_ids_beyond_64_bits_are_not_found_and_the_largest_bigint_works(app):
    c = app.test_client()
    for big in ("99999999999999999999999", "9223372036854775808", "9" * 500):
        refused(c.get(f"/api/clients/{big}/messages", headers=AUTH), 404, "beyond 64 bits")
        refused(c.post(f"/api/clients/{big}/messages", json={"text": "hi"}, headers=AUTH), 404, "beyond 64 bits")
    refused(c.get(f"/api/clients/{'9' * 5000}/messages", headers=AUTH), 414)
    r = c.get("/api/clients/9223372036854775807/messages", headers=AUTH)
    assert r.status_code == 200 and r.get_json()["messages"] == []
    refused(c.get("/console/clients/99999999999999999999999"), 404)


def test_numbers_beyond_64_bits_or_nan_in_json_are_refused(app):
    c = app.test_client()
    refused(c.post("/api/clients/1/messages", data=b'{"text": "hi", "idempotency_key": 99999999999999999999999}',
                   content_type="application/json", headers=AUTH), 400, "64 bits")
    refused(c.post("/api/clients/1/messages", data=b'{"text": "hi", "x": NaN}', content_type="application/json",
                   headers=AUTH), 400, "NaN")
    refused(c.post("/api/clients/1/messages", data=b'{"text": "\\ud800"}', content_type="application/json",
                   headers=AUTH), 400, "UTF-8")
    hook = {"entityName": "LOAN", "actionName": "REPAYMENT", "loanId": 2 ** 70, "clientId": 1}
    refused(c.post(HOOK, json=hook,
                   headers={**TENANT, "X-Fineract-Entity": "LOAN", "X-Fineract-Action": "REPAYMENT"}), 400, "64 bits")


# --------------------------------------------------------------------------- nesting and size
def test_a_deeply_nested_60kb_hook_is_refused_not_a_recursion_error(app, caplog):
    c = app.test_client()
    nested = ("[" * 30000 + "]" * 30000).encode()             # 60 KB: Python's json raises RecursionError
    r = c.post(HOOK, data=nested, content_type="application/json",
               headers={**TENANT, "X-Fineract-Entity": "LOAN", "X-Fineract-Action": "REPAYMENT"})
    refused(r, 400, "nested")
    shallow_but_too_deep = json.dumps({"a": [[[[[[[[[[{"b": [[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]}]]]]]]]]]]})
    r = c.post("/api/clients/1/messages", data=shallow_but_too_deep, content_type="application/json", headers=AUTH)
    refused(r, 400, "nested")
    assert "RecursionError" not in caplog.text and "unhandled error" not in caplog.text


def test_bodies_are_limited_per_endpoint(app):
    c = app.test_client()
    ussd = {"sessionId": "ATUid_big", "serviceCode": "*384*12#", "phoneNumber": GRACE, "text": ""}
    refused(c.post(f"/gateways/africastalking/ussd?token={CB}", data={**ussd, "junk": "x" * 9000}), 413,
            "at most 8192 bytes")
    refused(c.post("/api/clients/1/messages", json={"text": "x" * 20_000}, headers=AUTH), 413, "16384")
    refused(c.post(HOOK, json={"x": "y" * 100_000}, headers=TENANT), 413, "65536")
    refused(c.post("/console/login", data={"token": "x" * 20_000}), 413, "16384")
    refused(c.get("/healthz?x=" + "y" * 100_000), 414)
    assert c.post(f"/gateways/africastalking/ussd?token={CB}", data=ussd).status_code == 200


def test_session_end_fields_have_length_limits_and_nothing_long_is_stored(app):
    c = app.test_client()
    r = app.extensions["convo"].redis
    ev = {"sessionId": "ATUid_end", "status": "Success", "phoneNumber": GRACE, "serviceCode": "*384*12#",
          "networkCode": "63902", "hopsCount": "3", "durationInMillis": "9000", "cost": "KES 1.5000"}
    for field, value in (("serviceCode", "*" * 1000), ("networkCode", "6" * 1000), ("cost", "K" * 1000),
                         ("hopsCount", "9" * 50), ("durationInMillis", "²")):
        refused(c.post(f"/gateways/africastalking/ussd/events?token={CB}", data={**ev, field: value}), 400, field)
    refused(c.post(f"/gateways/africastalking/ussd/events?token={CB}", data={**ev, "cost": "K" * 60_000}), 413)
    assert r.llen("convo:ussd-events") == 0
    assert c.post(f"/gateways/africastalking/ussd/events?token={CB}", data=ev).status_code == 200
    stored = json.loads(r.lindex("convo:ussd-events", 0))
    assert stored["service_code"] == "*384*12#" and stored["cost"] == "KES 1.5000" and stored["hops"] == 3


def test_a_delivery_report_keeps_a_bounded_raw_copy(app):
    c = app.test_client()
    report = {"id": "ATXid_raw", "status": "Success", "retryCount": "²"}
    refused(c.post(f"/gateways/africastalking/delivery?token={CB}", data=report), 400, "retryCount")
    extra = {f"k{i}": "v" * 250 for i in range(25)}
    r = c.post(f"/gateways/africastalking/delivery?token={CB}", data={**report, "retryCount": "1", **extra})
    assert r.status_code == 200
    (raw,) = [row.raw for row in rows(app, "delivery_reports")]
    raw = raw if isinstance(raw, dict) else json.loads(raw)
    assert len(raw) <= 20 and all(len(v) <= 200 for v in raw.values())


# --------------------------------------------------------------------------- staff template variables (item 5)
def test_staff_template_variables_have_a_length_limit(app):
    c = app.test_client()
    url = "/api/clients/1/messages"
    r = c.post(url, json={"template": "branch_visit", "variables": {"date": "M" * 60_000}}, headers=AUTH)
    refused(r, 413)                                          # the 60 KB date of the issue: over the body limit
    r = c.post(url, json={"template": "branch_visit", "variables": {"date": "M" * 5000}}, headers=AUTH)
    refused(r, 400, "'date'", "longer than 100")
    r = c.post(url, json={"template": "branch_visit", "variables": {"date": ["Monday"]}}, headers=AUTH)
    refused(r, 400, "text or a number")
    r = c.post(url, json={"template": "branch_visit", "variables": {f"v{i}": "x" for i in range(21)} | {
        "date": "Monday"}}, headers=AUTH)
    refused(r, 400, "more than 20")
    assert rows(app, "outbox") == []
    r = c.post(url, json={"template": "branch_visit", "variables": {"date": "Monday 3 June " + "x" * 86}},
               headers=AUTH)
    assert r.status_code == 202, r.get_data(as_text=True)
    assert r.get_json()["segments"] <= 2 and len(r.get_json()["body"]) < 200


def test_the_template_name_is_not_echoed_at_length(app):
    r = app.test_client().post("/api/clients/1/messages", json={"template": "t" * 5000}, headers=AUTH)
    body = refused(r, 400, "unknown template")
    assert len(body) < 300
