"""Twilio gateway: the official SDK sending to a local fake of Twilio's REST API, webhooks signed as Twilio
signs them (convo.devkit.fake_twilio), verified by the SDK's RequestValidator."""
from __future__ import annotations

import socket

import pytest

from convo.devkit.fake_twilio import start_fake_twilio, twilio_signature
from gateways.base import ConfigError, DeliveryUpdate, InboundSms, OptOutUpdate, OutgoingSms, Unauthorized, WebRequest
from gateways.twilio import TwilioGateway, classify

SID, TOKEN = "AC" + "1" * 32, "twilio-auth-token"
PUBLIC = "https://convo.example.org"


@pytest.fixture
def fake():
    with start_fake_twilio(account_sid=SID, auth_token=TOKEN) as f:
        yield f


def gateway(base_url="http://127.0.0.1:9", **kw) -> TwilioGateway:
    conf = {"account_sid": SID, "auth_token": TOKEN, "from": "+15005550006", "base_url": base_url,
            "public_url": PUBLIC, "callback_token": "cbtok", **kw}
    return TwilioGateway("twilio", conf, region="UG")


def sms(to="+256772000001", body="Your balance is UGX 5,000", i=1) -> OutgoingSms:
    return OutgoingSms(id=i, to=to, body=body, idempotency_key=f"k{i}")


def test_signature_contract_matches_twilios_published_vector():
    """The fake signs as Twilio does: vector from twilio-python tests/unit/test_request_validator.py
    (ValidationTest.setUp / test_compute_signature), token "12345"."""
    params = {"CallSid": "CA1234567890ABCDE", "Digits": "1234", "From": "+14158675309", "To": "+18005551212",
              "Caller": "+14158675309"}
    assert twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", params) \
        == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_send_goes_through_the_sdk_to_the_configured_base_url(fake):
    gw = gateway(fake.url)
    [r] = gw.send([sms()])
    assert r.status == "sent" and r.provider_id.startswith("SM") and r.parts == 1 and not r.failover
    [m] = fake.fake.messages
    assert (m["to"], m["from"], m["body"]) == ("+256772000001", "+15005550006", "Your balance is UGX 5,000")
    assert m["status_callback"] == f"{PUBLIC}/gateways/twilio/status?token=cbtok"
    assert fake.fake.requests[0]["account"] == SID


def test_messaging_service_instead_of_a_number(fake):
    gw = gateway(fake.url, **{"from": None, "messaging_service_sid": "MG" + "2" * 32})
    assert gw.send([sms()])[0].status == "sent"
    assert fake.fake.messages[0]["messaging_service_sid"] == "MG" + "2" * 32


def test_a_wrong_auth_token_fails_over_rather_than_losing_the_message(fake):
    gw = TwilioGateway("twilio", {"account_sid": SID, "auth_token": "wrong", "from": "+15005550006",
                                  "base_url": fake.url})
    [r] = gw.send([sms()])
    assert r.status == "retry" and r.failover and r.status_code == 20003 and not fake.fake.messages


@pytest.mark.parametrize("code,status,failover,opted_out", [
    (21211, "failed", False, False), (21614, "failed", False, False), (21635, "failed", False, False),
    (30005, "failed", False, False),
    (21610, "failed", False, True),
    (20429, "retry", True, False), (30003, "retry", True, False), (30008, "retry", True, False),
    (30500, "retry", True, False), (21408, "retry", True, False), (21612, "retry", True, False),
])
def test_error_codes_are_classified(fake, code, status, failover, opted_out):
    fake.fake.errors["+256772000009"] = code
    [r] = gateway(fake.url).send([sms(to="+256772000009")])
    assert (r.status, r.failover, r.opted_out, r.status_code) == (status, failover, opted_out, code)


def test_5xx_and_an_unreachable_api_fail_over(fake):
    fake.fake.http_error = 503
    [r] = gateway(fake.url).send([sms()])
    assert r.status == "retry" and r.failover
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    [r] = gateway(f"http://127.0.0.1:{port}").send([sms()])
    assert r.status == "retry" and r.failover


def test_classify_by_http_status():
    assert classify(None, 500) == "failover" and classify(None, 429) == "failover"
    assert classify(None, 400) == "failed"


def test_lease_deadline_stops_before_a_request(fake):
    [r] = gateway(fake.url).send([sms()], deadline=0.0)
    assert r.status == "retry" and not fake.fake.messages


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="'auth_token'"):
        TwilioGateway("tw", {"account_sid": SID, "from": "+1500"})
    with pytest.raises(ConfigError, match="'from'"):
        TwilioGateway("tw", {"account_sid": SID, "auth_token": TOKEN})


# --------------------------------------------------------------------------- webhooks, verified


def signed(url: str, form: dict, token: str = TOKEN, **kw) -> WebRequest:
    return WebRequest(url=url, form=form, headers={"X-Twilio-Signature": twilio_signature(token, url, form)},
                      region="UG", **kw)


INBOUND = {"MessageSid": "SM" + "a" * 32, "SmsSid": "SM" + "a" * 32, "AccountSid": SID, "From": "+256772000001",
           "To": "+15005550006", "Body": "BAL", "NumMedia": "0", "NumSegments": "1", "ApiVersion": "2010-04-01"}
URL = f"{PUBLIC}/gateways/twilio/sms?token=cbtok"


def test_inbound_sms_good_signature():
    got = gateway().inbound()["sms"](signed(URL, INBOUND))
    assert got == InboundSms(id="SM" + "a" * 32, phone="+256772000001", text="BAL", gateway="twilio",
                             to="+15005550006")


@pytest.mark.parametrize("req,why", [
    (WebRequest(url=URL, form=INBOUND, region="UG"), "missing"),                               # no header
    (signed(URL, INBOUND, token="another-account-token"), "bad"),                               # forged
    (WebRequest(url=URL, form={**INBOUND, "Body": "PIN 1234"},                                  # tampered body
                headers={"X-Twilio-Signature": twilio_signature(TOKEN, URL, INBOUND)}), "bad"),
    (WebRequest(url=URL, form=INBOUND, headers={"X-Twilio-Signature": twilio_signature(                # signed
        TOKEN, "https://evil.example/gateways/twilio/sms?token=cbtok", INBOUND)}), "bad"),          # for another URL
    (signed(URL, {**INBOUND, "AccountSid": "AC" + "9" * 32}), "AccountSid"),                   # another account
])
def test_inbound_sms_refused_unless_twilio_signed_it_for_us(req, why):
    with pytest.raises(Unauthorized, match=why):
        gateway().inbound()["sms"](req)


def test_stop_through_advanced_opt_out_marks_the_number():
    got = gateway().inbound()["sms"](signed(URL, {**INBOUND, "Body": "STOP", "OptOutType": "STOP"}))
    assert isinstance(got[0], InboundSms) and got[1] == OptOutUpdate(
        gateway="twilio", phone="+256772000001", opted_out=True, sender_id="+15005550006",
        raw={"OptOutType": "STOP", "MessageSid": INBOUND["MessageSid"]})


@pytest.mark.parametrize("word,status", [("queued", "sent"), ("sent", "submitted"), ("delivered", "delivered"),
                                         ("undelivered", "failed"), ("failed", "failed"),
                                         ("partially_delivered", None)])
def test_status_callbacks_map_to_outbox_states(word, status):
    form = {"AccountSid": SID, "MessageSid": "SM" + "b" * 32, "MessageStatus": word, "To": "+256772000001",
            "From": "+15005550006", "ApiVersion": "2010-04-01"}
    got = gateway().inbound()["status"](signed(f"{PUBLIC}/gateways/twilio/status?token=cbtok", form))
    assert isinstance(got, DeliveryUpdate) and got.status == status and got.provider_id == "SM" + "b" * 32


def test_start_through_advanced_opt_out_unmarks_the_number():
    got = gateway().inbound()["sms"](signed(URL, {**INBOUND, "Body": "START", "OptOutType": "START"}))
    assert got[1].opted_out is False and got[1].phone == "+256772000001"


def test_status_21610_marks_the_number_opted_out():
    form = {"AccountSid": SID, "MessageSid": "SM" + "c" * 32, "MessageStatus": "failed", "ErrorCode": "21610",
            "To": "+256772000001", "From": "+15005550006"}
    upd, opt = gateway().inbound()["status"](signed(f"{PUBLIC}/gateways/twilio/status?token=cbtok", form))
    assert upd.status == "failed" and upd.failure_reason == "ErrorCode 21610"
    assert opt.phone == "+256772000001" and opt.opted_out


def test_twilio_is_answered_with_empty_twiml():
    body, ctype = gateway().ack("sms", None)
    assert body.endswith("<Response/>") and ctype == "text/xml"


# --------------------------------------------------------------------------- end to end over HTTP

GRACE = "+254700000101"


@pytest.fixture
def stack(fake, redis_url, pg_url):
    from tests.support.e2e import give_pin
    from tests.support.gateway_e2e import routes_stack

    routes = f"""
rates: {{USD: 1}}
gateways:
  twilio: {{type: twilio, account_sid: "{SID}", auth_token: "{TOKEN}", from: "+15005550006",
           base_url: "{fake.url}", public_url: "{{PUBLIC}}", callback_token: "{{TOKEN}}"}}
routes:
  - to: "*"
    via: [{{gateway: twilio, cost: 0.05, currency: USD}}]
"""
    with routes_stack(redis_url, pg_url, routes) as (gw, services):
        from tests.support.gateway_e2e import TOKEN as CB

        fake.fake.sms_url = f"{gw}/gateways/twilio/sms?token={CB}"
        give_pin(services, GRACE, "2468")
        yield gw, services


def test_bal_by_twilio_is_answered_through_twilio_and_tracked_to_delivery(fake, stack):
    from tests.support.gateway_e2e import deliver, rows

    gw, services = stack
    r = fake.fake.text(GRACE, "BAL")
    assert r.status_code == 200 and r.text.endswith("<Response/>") and "xml" in r.headers["Content-Type"]
    deliver(services)
    assert "PIN" in fake.fake.messages[-1]["body"] and fake.fake.messages[-1]["to"] == GRACE     # the PIN prompt
    fake.fake.text(GRACE, "2468")
    deliver(services)
    answer = fake.fake.messages[-1]
    assert "Balance: KES 8,637.50" in answer["body"]
    assert answer["status_callback"] == f"{gw}/gateways/twilio/status?token=e2e-token_1"
    row = rows(services)[-1]
    assert (row.status, row.provider_id, row.gateway) == ("sent", answer["sid"], "twilio")
    assert fake.fake.report(answer["sid"], "sent").status_code == 200
    assert rows(services)[-1].status == "submitted"
    fake.fake.report(answer["sid"], "delivered")
    fake.fake.report(answer["sid"], "sent")                     # late and out of order: never backwards
    assert rows(services)[-1].status == "delivered"


def test_a_replayed_webhook_is_answered_once_and_forged_ones_not_at_all(fake, stack):
    from tests.support.gateway_e2e import rows

    gw, services = stack
    sid = "SM" + "d" * 32
    assert fake.fake.text(GRACE, "HELP", sid=sid).status_code == 200
    assert fake.fake.text(GRACE, "HELP", sid=sid).status_code == 200        # Twilio's retry, or a replay
    assert len(rows(services)) == 1
    assert fake.fake.text(GRACE, "HELP", signature=None).status_code == 403
    assert fake.fake.text(GRACE, "HELP", signature="bm90IGEgc2lnbmF0dXJl").status_code == 403
    no_token = fake.fake.text(GRACE, "HELP", url=f"{gw}/gateways/twilio/sms")   # signed, but without ?token=
    assert no_token.status_code == 403
    assert len(rows(services)) == 1


def test_behind_a_proxy_the_signature_is_checked_over_convo_public_url(fake, redis_url, pg_url):
    """Twilio signs the URL it called (https://convo.example.org/...); the app sees http://127.0.0.1:PORT."""
    from tests.support.gateway_e2e import TOKEN as CB
    from tests.support.gateway_e2e import routes_stack

    routes = f"""
rates: {{USD: 1}}
gateways:
  twilio: {{type: twilio, account_sid: "{SID}", auth_token: "{TOKEN}", from: "+15005550006", base_url: "{fake.url}"}}
routes: [{{to: "*", via: [{{gateway: twilio, cost: 0.05, currency: USD}}]}}]
"""
    with routes_stack(redis_url, pg_url, routes, public_url="https://convo.example.org") as (gw, services):
        path = f"/gateways/twilio/sms?token={CB}"
        assert fake.fake.text(GRACE, "HELP", url=gw + path, sign_url="https://convo.example.org" + path
                              ).status_code == 200
        assert fake.fake.text(GRACE, "HELP", url=gw + path).status_code == 403     # signed for the inside URL


@pytest.fixture
def twilio_then_phone(fake, redis_url, pg_url):
    from convo.devkit.fake_smsgate import start_fake_smsgate
    from tests.support.gateway_e2e import routes_stack

    with start_fake_smsgate(signing_key="k") as phone:
        routes = f"""
rates: {{USD: 1, KES: 0.0077}}
gateways:
  twilio: {{type: twilio, account_sid: "{SID}", auth_token: "{TOKEN}", from: "+15005550006", base_url: "{fake.url}"}}
  phone-nbo: {{type: smsgate, url: "{phone.url}", username: sms, password: phone-pass, signing_key: k}}
routes:
  - to: [KE]
    via: [{{gateway: twilio, cost: 0.01, currency: USD}}, {{gateway: phone-nbo, cost: 2, currency: KES}}]
  - to: "*"
    via: [{{gateway: twilio, cost: 0.05, currency: USD}}]
"""
        with routes_stack(redis_url, pg_url, routes) as (gw, services):
            yield services, phone


def _notice(services, key: str) -> None:
    from convo.notify.outbox import enqueue

    enqueue(services.db, idempotency_key=key, to=GRACE, body="Your repayment of KES 500 was received.",
            kind="receipt", region="KE")


def test_twilio_5xx_fails_over_to_the_phone(fake, twilio_then_phone):
    from tests.support.gateway_e2e import deliver, rows

    services, phone = twilio_then_phone
    fake.fake.http_error = 503
    _notice(services, "receipt:1")
    deliver(services)
    [row] = rows(services)
    assert row.status == "sent" and row.gateway == "phone-nbo" and phone.fake.messages[0]["phoneNumbers"] == [GRACE]


def test_twilio_21610_marks_the_number_and_is_never_sent_elsewhere(fake, twilio_then_phone):
    from convo.notify.outbox import is_opted_out
    from tests.support.gateway_e2e import deliver, rows

    services, phone = twilio_then_phone
    fake.fake.errors[GRACE] = 21610
    _notice(services, "receipt:2")
    deliver(services)
    [row] = rows(services)
    assert row.status == "failed" and not phone.fake.messages
    assert is_opted_out(services.db, GRACE)
