"""An Android phone as gateway (SMS Gateway for Android): sending to a local fake of the app's server
(convo.devkit.fake_smsgate, shapes from capcom6/android-sms-gateway), webhooks signed as the app signs them."""
from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time

import pytest

from convo.devkit.fake_smsgate import start_fake_smsgate
from gateways.base import ConfigError, DeliveryUpdate, OutgoingSms, Unauthorized, WebRequest
from gateways.smsgate import MAX_SKEW, SmsGateGateway, sign

KEY = "signkey1"


@pytest.fixture
def phone():
    with start_fake_smsgate(username="sms", password="phone-pass", signing_key=KEY) as f:
        yield f


def gateway(url="http://127.0.0.1:9", **kw) -> SmsGateGateway:
    return SmsGateGateway("phone-gulu", {"url": url, "username": "sms", "password": "phone-pass",
                                         "signing_key": KEY, **kw}, region="UG")


def sms(i=1, to="+256772000001", body="Balance: UGX 5,000") -> OutgoingSms:
    return OutgoingSms(id=i, to=to, body=body, idempotency_key=f"reply:{i}")


def test_signature_is_the_apps_payload_signing():
    """android-sms-gateway modules/webhooks/plugins/PayloadSingingPlugin.kt: HmacSHA256 over
    ``content.text + timestamp`` with the signing key, hex lower case."""
    body, ts = b'{"event":"sms:received"}', "1764500000"
    assert sign(KEY, body, ts) == hmac.new(KEY.encode(), body + ts.encode(), hashlib.sha256).hexdigest()


def test_send_posts_the_apps_message_request_with_basic_auth(phone):
    gw = gateway(phone.url)
    [r] = gw.send([sms()])
    assert r.status == "sent" and r.provider_id == gw.message_id(sms())
    [m] = phone.fake.messages
    assert (m["phoneNumbers"], m["text"], m["withDeliveryReport"]) == (["+256772000001"], "Balance: UGX 5,000", True)


def test_a_resend_of_the_same_row_is_not_texted_twice(phone):
    gw = gateway(phone.url)
    first, again = gw.send([sms()])[0], gw.send([sms()])[0]     # e.g. the answer to the first was lost
    assert first.status == again.status == "sent" and first.provider_id == again.provider_id
    assert len(phone.fake.messages) == 1


def test_wrong_password_and_5xx_and_a_phone_that_is_off_fail_over(phone):
    [r] = SmsGateGateway("p", {"url": phone.url, "username": "sms", "password": "nope", "signing_key": KEY}
                         ).send([sms()])
    assert r.status == "retry" and r.failover and r.status_code == 401
    phone.fake.http_error = 500
    assert gateway(phone.url).send([sms(2)])[0].failover
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    [r] = gateway(f"http://127.0.0.1:{port}").send([sms(3)])
    assert r.status == "retry" and r.failover


def test_sim_number_picks_the_sim(phone):
    gateway(phone.url, sim_number=2).send([sms()])
    assert phone.fake.messages[0]["simNumber"] == 2


def test_an_empty_text_is_refused_for_good(phone):
    [r] = gateway(phone.url).send([sms(body="")])
    assert r.status == "failed" and "Text message is empty" in r.error


def test_config_needs_a_signing_key():
    with pytest.raises(ConfigError, match="'signing_key'"):
        SmsGateGateway("p", {"url": "http://x", "username": "u", "password": "p"})


# --------------------------------------------------------------------------- webhooks


def hook(event: str, payload: dict, *, key=KEY, ts: float | None = None, now: float | None = None,
         sig: str | None = "good") -> WebRequest:
    body = json.dumps({"id": "evt1", "webhookId": "wh1", "event": event, "deviceId": "dev1",
                       "payload": payload}).encode()
    t = str(int(ts if ts is not None else time.time()))
    headers = {"X-Timestamp": t}
    if sig == "good":
        headers["X-Signature"] = sign(key, body, t)
    elif sig:
        headers["X-Signature"] = sig
    return WebRequest(url="https://convo.example.org/gateways/phone-gulu/webhook", body=body, headers=headers,
                      region="UG", now=now if now is not None else time.time())


RECEIVED = {"messageId": "abc123", "sender": "0772000001", "recipient": None, "simNumber": 1,
            "phoneNumber": "0772000001", "message": "BAL", "receivedAt": "2026-11-30T10:00:00.000+03:00"}


def test_sms_received_becomes_an_inbound_sms_read_in_the_gateways_region():
    got = gateway().inbound()["webhook"](hook("sms:received", RECEIVED))
    assert (got.phone, got.text, got.gateway, got.date) == ("+256772000001", "BAL", "phone-gulu",
                                                             "2026-11-30T10:00:00.000+03:00")
    assert got.id.startswith("abc123-")


def test_two_messages_whose_32_bit_message_ids_collide_are_two_messages():
    """ReceiverService.kt: messageId = InboxMessage.hashCode() (32 bits); a retry is the same payload."""
    a = gateway().inbound()["webhook"](hook("sms:received", RECEIVED))
    b = gateway().inbound()["webhook"](hook("sms:received", {**RECEIVED, "sender": "0772000002"}))
    again = gateway().inbound()["webhook"](hook("sms:received", RECEIVED))
    assert a.id != b.id and a.id == again.id


@pytest.mark.parametrize("req,why", [
    (hook("sms:received", RECEIVED, sig=None), "missing"),
    (hook("sms:received", RECEIVED, key="another-key"), "bad X-Signature"),
    (hook("sms:received", RECEIVED, sig="0" * 64), "bad X-Signature"),
    (hook("sms:received", RECEIVED, ts=time.time() - MAX_SKEW - 5), "stale"),        # replayed later
    (hook("sms:received", RECEIVED, ts=time.time() + MAX_SKEW + 5), "stale"),        # from the future
])
def test_webhooks_refused_unless_signed_now_with_our_key(req, why):
    with pytest.raises(Unauthorized, match=why):
        gateway().inbound()["webhook"](req)


def test_a_tampered_body_is_refused():
    req = hook("sms:received", RECEIVED)
    forged = WebRequest(url=req.url, body=req.body.replace(b"BAL", b"PIN"), headers=req.headers, region="UG")
    with pytest.raises(Unauthorized, match="bad X-Signature"):
        gateway().inbound()["webhook"](forged)


@pytest.mark.parametrize("event,status", [("sms:sent", "submitted"), ("sms:delivered", "delivered"),
                                          ("sms:failed", "failed")])
def test_status_events_move_the_outbox(event, status):
    p = {"messageId": "convo-1-x", "sender": None, "recipient": "+256772000001", "simNumber": 1,
         "phoneNumber": "+256772000001", "reason": "RESULT_ERROR_NO_SERVICE"}
    got = gateway().inbound()["webhook"](hook(event, p))
    assert isinstance(got, DeliveryUpdate) and (got.provider_id, got.status) == ("convo-1-x", status)
    assert (got.failure_reason == "RESULT_ERROR_NO_SERVICE") == (event == "sms:failed")


def test_other_events_are_acknowledged():
    assert gateway().inbound()["webhook"](hook("system:ping", {"health": {}})) is None


# --------------------------------------------------------------------------- end to end over HTTP

GRACE = "+254700000101"


def register_webhooks(phone_url: str, convo_url: str, auth=("sms", "phone-pass")) -> list[dict]:
    """What README "An Android phone as gateway" tells the MFI to run: one POST /webhooks per event."""
    import requests

    out = []
    for event in ("sms:received", "sms:sent", "sms:delivered", "sms:failed"):
        r = requests.post(f"{phone_url}/webhooks", json={"url": convo_url, "event": event}, auth=auth, timeout=10)
        assert r.status_code == 201, r.text
        out.append(r.json())
    return out


@pytest.fixture
def stack(phone, redis_url, pg_url):
    from tests.support.gateway_e2e import TOKEN as CB
    from tests.support.gateway_e2e import routes_stack

    routes = f"""
rates: {{UGX: 0.00027, USD: 1}}
gateways:
  phone-gulu: {{type: smsgate, url: "{phone.url}", username: sms, password: phone-pass, signing_key: {KEY}}}
routes:
  - to: "*"
    via: [{{gateway: phone-gulu, cost: 25, currency: UGX}}]
"""
    with routes_stack(redis_url, pg_url, routes) as (gw, services):
        register_webhooks(phone.url, f"{gw}/gateways/phone-gulu/webhook?token={CB}")
        yield gw, services


def test_help_texted_to_the_phone_is_answered_by_the_phone_and_tracked_to_delivery(phone, stack):
    from tests.support.gateway_e2e import deliver, rows

    gw, services = stack
    [r] = phone.fake.receive(GRACE, "HELP")
    assert r.status_code == 200
    deliver(services)
    [sent] = phone.fake.messages
    assert sent["phoneNumbers"] == [GRACE] and "BAL" in sent["text"]          # the HELP text lists keywords
    [row] = rows(services)
    assert (row.status, row.provider_id, row.gateway) == ("sent", sent["id"], "phone-gulu")
    phone.fake.report(sent["id"], "sms:sent")
    assert rows(services)[0].status == "submitted"
    phone.fake.report(sent["id"], "sms:delivered")
    assert rows(services)[0].status == "delivered"


def test_the_apps_retries_are_answered_once_and_stale_or_forged_hooks_refused(phone, stack):
    from tests.support.gateway_e2e import rows

    gw, services = stack
    assert phone.fake.receive(GRACE, "HELP")[0].status_code == 200
    assert phone.fake.redeliver().status_code == 200            # same event id, signed again: answered once
    assert len(rows(services)) == 1
    phone.fake.clock_skew = -(MAX_SKEW + 60)                    # a captured request replayed 6 minutes later
    assert phone.fake.receive(GRACE, "HELP")[0].status_code == 403
    phone.fake.clock_skew = 0
    assert phone.fake.receive(GRACE, "HELP", signature="0" * 64)[0].status_code == 403
    assert phone.fake.receive(GRACE, "HELP", signature=None)[0].status_code == 403
    assert len(rows(services)) == 1


def test_the_phone_refuses_webhooks_to_plain_http_elsewhere(phone):
    """WebHooksService.replace: https://, or http://127.0.0.1 only (the README says to use HTTPS)."""
    import requests

    r = requests.post(f"{phone.url}/webhooks", json={"url": "http://10.0.0.9/gateways/p/webhook",
                                                     "event": "sms:received"}, auth=("sms", "phone-pass"))
    assert r.status_code == 400 and "https://" in r.json()["message"]


def test_stop_texted_to_the_phone_opts_the_number_out(phone, stack):
    """The phone has no opt-out list of its own: STOP runs the same flow as on any gateway (README table)."""
    from convo.notify.outbox import is_opted_out

    gw, services = stack
    assert phone.fake.receive(GRACE, "STOP")[0].status_code == 200
    assert is_opted_out(services.db, GRACE)
