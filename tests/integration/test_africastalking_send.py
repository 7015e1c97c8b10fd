"""Africa's Talking sending with the REAL SDK against the fake AT server over HTTP, end to end."""
from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa
from flask import Flask, request
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from convo.config import Settings
from convo.devkit.fake_at import start_fake_at
from convo.jobs.worker import Worker, run_worker
from convo.notify.outbox import apply_delivery_report, enqueue
from convo.store.db import DeliveryReport, OutboxMessage, make_engine, upgrade
from gateways.africastalking import (
    AfricasTalkingSender,
    BadCallback,
    classify_status_code,
    parse_delivery_report,
    parse_optout,
)
from gateways.base import LogSender, sender_from_settings

PHONE = "+254712345678"


@pytest.fixture
def engine(tmp_path):
    url = f"sqlite:///{tmp_path / 'convo.db'}"
    upgrade(url)
    eng = make_engine(url)
    yield eng
    eng.dispose()


@pytest.fixture
def fake():
    with start_fake_at(api_key="secret-key") as server:
        yield server


def at_settings(engine, fake, **kw):
    return Settings(database_url=str(engine.url), at_username="mfi", at_api_key="secret-key",
                    at_base_url=fake.url, **kw)


def rows(engine):
    with Session(engine) as s:
        return s.scalars(sa.select(OutboxMessage).order_by(OutboxMessage.id)).all()


class Clock:
    def __init__(self):
        self.now = dt.datetime.now(dt.timezone.utc)

    def __call__(self):
        return self.now


class DeliveryReceiver:
    """What the web route will do: parse AT's form, apply it. Served over HTTP for the fake to call."""

    def __init__(self, engine):
        app = Flask("receiver")
        self.results = []

        @app.post("/delivery")
        def delivery():
            try:
                update = parse_delivery_report(request.form)
            except BadCallback as exc:
                return str(exc), 400
            self.results.append(apply_delivery_report(engine, update))
            return "", 200

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/delivery"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


# ------------------------------------------------------------------ configuration


def test_base_url_points_the_sdk_elsewhere_and_sandbox_works_as_the_sdk_intends():
    local = AfricasTalkingSender("mfi", "k", base_url="http://127.0.0.1:9/")
    sandbox = AfricasTalkingSender("sandbox", "k")
    live = AfricasTalkingSender("mfi", "k")
    assert local.service._baseUrl == local.service._contentUrl == "http://127.0.0.1:9/version1"
    assert sandbox.service._baseUrl == "https://api.sandbox.africastalking.com/version1"
    assert live.service._baseUrl == "https://api.africastalking.com/version1"
    assert live.service._contentUrl == "https://content.africastalking.com/version1"


def test_sender_from_settings_picks_africastalking_when_a_username_is_set():
    assert isinstance(sender_from_settings(Settings()), LogSender)
    at = sender_from_settings(Settings(at_username="sandbox", at_api_key="k", at_sender_id="MFI"))
    assert isinstance(at, AfricasTalkingSender) and at.sender_id == "MFI" and at.name == "africastalking"


def test_status_code_table():
    assert [classify_status_code(c) for c in (100, 101, 102)] == ["sent"] * 3
    assert [classify_status_code(c) for c in (401, 405, 407, 500, 501)] == ["retry"] * 5
    assert [classify_status_code(c) for c in (402, 403, 404, 406, 409, 502)] == ["failed"] * 6
    assert (classify_status_code(199), classify_status_code(599), classify_status_code(499)) == ("sent", "retry", "failed")


# ------------------------------------------------------------------ end to end over HTTP


def test_enqueue_then_worker_once_sends_exactly_that_message(engine, fake):
    enqueue(engine, idempotency_key="reply:1", to="0712345678", body="Your balance is KES 1,200.00")
    run_worker(at_settings(engine, fake, at_sender_id="MFI"), once=True, handle_signals=False)

    [got] = fake.fake.messages
    assert (got["number"], got["message"], got["username"], got["from"]) == (PHONE, "Your balance is KES 1,200.00", "mfi", "MFI")
    assert got["bulkSMSMode"] == "1" and got["linkId"] is None
    [m] = rows(engine)
    assert (m.status, m.provider_id, m.cost, m.parts, m.status_code, m.gateway, m.attempts) == (
        "sent", got["messageId"], "KES 0.8000", 1, 101, "africastalking", 1)


def test_premium_reply_goes_with_link_id_and_short_code(engine, fake):
    enqueue(engine, idempotency_key="reply:2", to=PHONE, body="Balance KES 5", link_id="SampleLinkId123",
            requested_by_client=True)
    run_worker(at_settings(engine, fake, at_sender_id="22384"), once=True, handle_signals=False)
    [got] = fake.fake.messages
    assert (got["linkId"], got["from"], got["bulkSMSMode"]) == ("SampleLinkId123", "22384", "0")
    assert rows(engine)[0].status == "sent"


def test_identical_bodies_go_in_one_bulk_request(engine, fake):
    for i in range(3):
        enqueue(engine, idempotency_key=f"alert:{i}", to=f"+25471234560{i}", body="Branch closed today")
    enqueue(engine, idempotency_key="alert:dup", to="+254712345600", body="Branch closed today")
    run_worker(at_settings(engine, fake), once=True, handle_signals=False)
    tos = sorted(r["form"]["to"] for r in fake.fake.requests)
    assert tos == ["+254712345600", "+254712345600,+254712345601,+254712345602"]
    assert {m.status for m in rows(engine)} == {"sent"}
    assert len({m.provider_id for m in rows(engine)}) == 4


def test_403_fails_at_once_405_retries_with_backoff(engine, fake):
    fake.fake.status_codes.update({"+254700000403": 403, "+254700000405": 405})
    clock = Clock()
    bad = enqueue(engine, idempotency_key="bad", to="+254700000403", body="hi", not_before=clock.now)
    broke = enqueue(engine, idempotency_key="broke", to="+254700000405", body="hi", not_before=clock.now)
    sender = AfricasTalkingSender("mfi", "secret-key", base_url=fake.url)
    w = Worker(engine, sender, clock=clock, retry_base_seconds=60, retry_max_seconds=3600)
    w.run(once=True)
    by_key = {m.idempotency_key: m for m in rows(engine)}
    assert (by_key["bad"].status, by_key["bad"].last_error, by_key["bad"].status_code) == (
        "failed", "403 InvalidPhoneNumber", 403)
    m = by_key["broke"]
    assert (m.status, m.attempts, m.status_code, m.last_error) == ("queued", 1, 405, "405 InsufficientBalance")
    assert 30 <= (m.next_attempt_at - clock.now).total_seconds() <= 60
    assert w.run(once=True) == 0 and len(fake.fake.messages) == 2  # nothing due before the backoff

    fake.fake.status_codes.clear()  # balance topped up
    clock.now = m.next_attempt_at
    w.run(once=True)
    by_key = {m.idempotency_key: m for m in rows(engine)}
    assert (by_key["broke"].status, by_key["broke"].attempts) == ("sent", 2)
    assert by_key["bad"].status == "failed" and by_key["bad"].id == bad.id and broke.id
    assert len(fake.fake.accepted()) == 1


def test_http_500_and_unreachable_server_are_retried(engine, fake):
    clock = Clock()
    enqueue(engine, idempotency_key="m", to=PHONE, body="hi", not_before=clock.now)
    fake.fake.configure(http_error=500, http_error_count=1)
    w = Worker(engine, AfricasTalkingSender("mfi", "secret-key", base_url=fake.url), clock=clock, retry_base_seconds=1)
    w.run(once=True)
    m = rows(engine)[0]
    assert m.status == "queued" and "AfricasTalkingException" in m.last_error and "Internal Server Error" in m.last_error

    clock.now = m.next_attempt_at
    down = Worker(engine, AfricasTalkingSender("mfi", "k", base_url="http://127.0.0.1:9"), clock=clock,
                  retry_base_seconds=1)
    down.run(once=True)
    m = rows(engine)[0]
    assert (m.status, m.attempts) == ("queued", 2) and "ConnectionError" in m.last_error

    clock.now = m.next_attempt_at
    w.run(once=True)
    assert rows(engine)[0].status == "sent" and len(fake.fake.accepted()) == 1


def test_wrong_api_key_is_retried_not_lost(engine, fake):
    enqueue(engine, idempotency_key="m", to=PHONE, body="hi")
    Worker(engine, AfricasTalkingSender("mfi", "wrong", base_url=fake.url)).run(once=True)
    m = rows(engine)[0]
    assert m.status == "queued" and "authentication is invalid" in m.last_error


def test_delivery_reports_posted_back_update_the_row(engine):
    receiver = DeliveryReceiver(engine)
    try:
        with start_fake_at(receiver.url, dlr_statuses=["Sent", "Buffered", "Success"], dlr_duplicate=True,
                           dlr_shuffle=True) as fake:
            fake.fake.status_codes["+254700000002"] = 101
            for i in range(5):
                enqueue(engine, idempotency_key=f"m{i}", to=f"+25470000000{i}", body=f"hello {i}")
            run_worker(at_settings(engine, fake).replace(at_api_key="k"), once=True, handle_signals=False)
            assert fake.fake.wait_reports(10)
            assert {r["_response"] for r in fake.fake.reports_sent} == {200}
            assert len(fake.fake.reports_sent) == 5 * 3 * 2
            # a report can pass the worker's commit of its id; the worker's sweep attaches it
            run_worker(at_settings(engine, fake).replace(at_api_key="k"), once=True, handle_signals=False)
    finally:
        receiver.stop()
    assert {m.status for m in rows(engine)} == {"delivered"}
    with Session(engine) as s:
        # every report was stored; those that raced ahead of the worker were attached afterwards
        assert s.scalar(sa.select(sa.func.count()).select_from(DeliveryReport)) == 30
        assert s.scalar(sa.select(sa.func.count()).where(DeliveryReport.outbox_id.is_(None))) == 0


def test_failed_delivery_report_over_http(engine):
    receiver = DeliveryReceiver(engine)
    try:
        with start_fake_at(receiver.url, dlr_statuses=["Submitted", "Failed"]) as fake:
            enqueue(engine, idempotency_key="m", to=PHONE, body="hello")
            run_worker(at_settings(engine, fake).replace(at_api_key="k"), once=True, handle_signals=False)
            assert fake.fake.wait_reports(10)
    finally:
        receiver.stop()
    m = rows(engine)[0]
    assert (m.status, m.provider_status, m.last_error) == ("failed", "Failed", "DeliveryFailure")


def test_fake_server_inspection_and_config_over_http(fake):
    import requests

    assert requests.post(fake.url + "/__fake/config", json={"status_codes": {PHONE: 406}}).ok
    sender = AfricasTalkingSender("mfi", "secret-key", base_url=fake.url)
    from gateways.base import OutgoingSms

    [r] = sender.send([OutgoingSms(1, PHONE, "hi")])
    assert (r.status, r.status_code, r.error) == ("failed", 406, "406 UserInBlacklist")
    got = requests.get(fake.url + "/__fake/messages").json()
    assert [m["statusCode"] for m in got["messages"]] == [406]
    assert requests.delete(fake.url + "/__fake/messages").status_code == 204
    assert requests.post(fake.url + "/__fake/config", json={"nope": 1}).status_code == 400


# ------------------------------------------------------------------ callback parsing


def test_parse_delivery_report():
    u = parse_delivery_report({"id": "ATXid_1", "status": "Failed", "phoneNumber": PHONE, "networkCode": "63902",
                               "failureReason": "UserInBlacklist", "retryCount": "2"})
    assert (u.provider_id, u.status, u.provider_status, u.failure_reason, u.retry_count, u.network_code) == (
        "ATXid_1", "failed", "Failed", "UserInBlacklist", 2, "63902")
    assert parse_delivery_report({"id": "x", "status": "Success"}).status == "delivered"
    assert parse_delivery_report({"id": "x", "status": "SomethingNew"}).status is None
    for form, why in [({"status": "Success"}, "missing field 'id'"), ({"id": "x"}, "missing field 'status'"),
                      ({"id": "x", "status": "Success", "retryCount": "a"}, "retryCount"),
                      ({"id": "x" * 500, "status": "Success"}, "longer than")]:
        with pytest.raises(BadCallback, match=why):
            parse_delivery_report(form)


def test_parse_optout():
    u = parse_optout({"senderId": "MFI", "phoneNumber": "+254712345678"})
    assert (u.phone, u.sender_id, u.opted_out, u.gateway) == (PHONE, "MFI", True, "africastalking")
    with pytest.raises(BadCallback, match="phoneNumber"):
        parse_optout({"senderId": "MFI"})
    with pytest.raises(BadCallback, match="not a phone number"):
        parse_optout({"phoneNumber": "12"})
    assert issubclass(BadCallback, ValueError)
