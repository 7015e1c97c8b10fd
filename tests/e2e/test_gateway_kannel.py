"""Kannel gateway against a local fake smsbox speaking Kannel's wire format (convo.devkit.fake_kannel; strings from
Kannel's gw/smsbox.c, escape codes from gw/urltrans.c and the user guide)."""
from __future__ import annotations

import pytest

from convo.devkit.fake_kannel import fill_escape_codes, start_fake_kannel
from gateways.base import ConfigError, DeliveryUpdate, InboundSms, OutgoingSms, WebRequest
from gateways.kannel import KannelGateway


@pytest.fixture
def kannel():
    with start_fake_kannel(username="convo", password="kannel-pass") as k:
        yield k


def gateway(sendsms_url="http://127.0.0.1:9/cgi-bin/sendsms", **kw) -> KannelGateway:
    return KannelGateway("operator", {"sendsms_url": sendsms_url, "username": "convo", "password": "kannel-pass",
                                      "from": "22384", "public_url": "https://convo.example.org",
                                      "callback_token": "cb-tok_1", **kw}, region="UG")


def sms(i=1, to="+256772000001", body="Balance: UGX 5,000", encoding="GSM-7") -> OutgoingSms:
    return OutgoingSms(id=i, to=to, body=body, encoding=encoding, idempotency_key=f"r{i}")


def test_escape_codes_as_kannel_fills_them():
    """gw/urltrans.c urltrans_fill_escape_codes: %a words joined by '+', %% a percent, unknown codes kept."""
    url = fill_escape_codes("x?t=%a&k=%k&d=%d&q=100%%&u=%Z", {"text": "BAL  now", "dlr": 8})
    assert url == "x?t=BAL+now&k=BAL&d=8&q=100%&u=%Z"


def test_sendsms_with_dlr_mask_and_dlr_url(kannel):
    gw = gateway(kannel.sendsms_url)
    [r] = gw.send([sms()])
    assert r.status == "sent" and r.provider_status == "0: Accepted for delivery"
    [m] = kannel.fake.messages
    assert (m["to"], m["from"], m["text"], m["charset"], m["coding"], m["dlr_mask"]) == \
        ("+256772000001", "22384", "Balance: UGX 5,000", "UTF-8", "0", 31)
    assert m["dlr_url"] == (f"https://convo.example.org/gateways/operator/dlr?token=cb-tok_1&id={r.provider_id}"
                            "&status=%d&answer=%A&ts=%T")


def test_ucs2_text_goes_as_coding_2(kannel):
    gateway(kannel.sendsms_url).send([sms(body="Salio: KES 1,000 ✓", encoding="UCS-2")])
    assert kannel.fake.messages[0]["coding"] == "2" and kannel.fake.messages[0]["text"].endswith("✓")


@pytest.mark.parametrize("ack,status,failover", [("buffered", "sent", False), ("failed", "retry", True),
                                                 ("failed_tmp", "retry", True)])
def test_kannels_answers(kannel, ack, status, failover):
    kannel.fake.acks["+256772000001"] = ack
    [r] = gateway(kannel.sendsms_url).send([sms()])
    assert (r.status, r.failover) == (status, failover)


def test_authorization_failure_fails_over_and_a_bad_request_does_not(kannel):
    [r] = gateway(kannel.sendsms_url, password="nope").send([sms()])
    assert r.status == "retry" and r.failover and "Authorization failed for sendsms" in r.error
    [r] = gateway(kannel.sendsms_url).send([sms(to="")])
    assert r.status == "failed" and "Empty receiver number not allowed" in r.error


def test_a_kannel_that_does_not_answer_fails_over():
    from tests.support.gateway_e2e import free_port

    [r] = gateway(f"http://127.0.0.1:{free_port()}/cgi-bin/sendsms").send([sms()])
    assert r.status == "retry" and r.failover


def test_a_token_kannel_would_misread_is_a_config_error():
    with pytest.raises(ConfigError, match="URL-safe"):
        gateway(callback_token="a%C3b")


@pytest.mark.parametrize("dlr,status", [(1, "delivered"), (2, "failed"), (4, "buffered"), (8, "submitted"),
                                        (16, "rejected"), (32, None)])
def test_dlr_types_map_to_outbox_states(dlr, status):
    url = f"https://convo.example.org/gateways/operator/dlr?token=t&id=operator.1.ab&status={dlr}&answer=id%3A1+stat%3AX"
    got = gateway().inbound()["dlr"](WebRequest(url=url, method="GET", region="UG"))
    assert isinstance(got, DeliveryUpdate) and (got.provider_id, got.status) == ("operator.1.ab", status)


def test_get_url_utf8_and_ucs2():
    gw = gateway()
    url = "https://c/gateways/operator/sms?from=%2B256772000001&to=22384&text=BAL&charset=UTF-8&id=u-1&ts=1"
    assert gw.inbound()["sms"](WebRequest(url=url, method="GET", region="UG")) == InboundSms(
        id="u-1", phone="+256772000001", text="BAL", gateway="operator", to="22384", date="1")
    ucs2 = "".join(f"%{b:02X}" for b in "Salio ✓".encode("utf-16-be"))
    url = f"https://c/gateways/operator/sms?from=0772000001&to=22384&text={ucs2}&charset=UTF-16BE&id=u-2"
    assert gw.inbound()["sms"](WebRequest(url=url, method="GET", region="UG")).text == "Salio ✓"


def test_inbound_is_answered_with_an_empty_body_so_kannel_texts_nothing_itself():
    assert gateway().ack("sms", None) == ("", "text/plain")


# --------------------------------------------------------------------------- end to end over HTTP

GRACE = "+254700000101"


@pytest.fixture
def stack(kannel, redis_url, pg_url):
    from tests.support.gateway_e2e import TOKEN as CB
    from tests.support.gateway_e2e import routes_stack

    routes = f"""
rates: {{KES: 0.0077, USD: 1}}
gateways:
  operator: {{type: kannel, sendsms_url: "{kannel.sendsms_url}", username: convo, password: kannel-pass,
             from: "22384", public_url: "{{PUBLIC}}", callback_token: "{{TOKEN}}"}}
routes:
  - to: "*"
    via: [{{gateway: operator, cost: 0.2, currency: KES}}]
"""
    with routes_stack(redis_url, pg_url, routes) as (gw, services):
        # the sms-service of README "Kannel": get-url with Kannel's escape codes
        kannel.fake.get_url = (f"{gw}/gateways/operator/sms?token={CB}&from=%p&to=%P&text=%b&charset=%C"
                               "&id=%I&ts=%T")
        yield gw, services


def test_help_over_the_operator_bind_is_answered_through_kannel_and_tracked_to_delivery(kannel, stack):
    from tests.support.gateway_e2e import deliver, rows

    gw, services = stack
    r = kannel.fake.mo(GRACE, "HELP")
    assert r.status_code == 200 and kannel.fake.replies == []       # Kannel texts nothing of its own
    deliver(services)
    [sent] = kannel.fake.messages
    assert sent["to"] == GRACE and sent["from"] == "22384" and "BAL" in sent["text"] and sent["dlr_mask"] == 31
    [row] = rows(services)
    assert (row.status, row.gateway) == ("sent", "operator")
    assert kannel.fake.dlr(GRACE, 8).status_code == 200
    assert rows(services)[0].status == "submitted"
    kannel.fake.dlr(GRACE, 1)
    kannel.fake.dlr(GRACE, 4)                                       # late and out of order: never backwards
    assert rows(services)[0].status == "delivered"


def test_kannels_retry_of_one_mo_is_answered_once_and_unicode_arrives_whole(kannel, stack):
    from tests.support.gateway_e2e import rows

    gw, services = stack
    assert kannel.fake.mo(GRACE, "HELP", mo_uuid="0b7e-1").status_code == 200
    assert kannel.fake.mo(GRACE, "HELP", mo_uuid="0b7e-1").status_code == 200
    assert len(rows(services)) == 1
    assert kannel.fake.mo(GRACE, "Msaada ✓", coding=2).status_code == 200        # UCS-2, recoded (mo-recode)
    assert len(rows(services)) == 2
    # without mo-recode %b is UTF-16BE, whose NUL bytes the app refuses in a URL: README says mo-recode = true
    r = kannel.fake.mo(GRACE, "Msaada ✓", coding=2, mo_recode=False)
    assert r.status_code == 400 and "NUL" in r.text


def test_callbacks_without_the_token_are_refused(kannel, stack):
    import requests

    gw, services = stack
    assert requests.get(f"{gw}/gateways/operator/sms?from=%2B254700000101&text=HELP&id=x").status_code == 403
    assert requests.get(f"{gw}/gateways/operator/dlr?id=operator.1.aa&status=1").status_code == 403


def test_a_pin_texted_over_kannel_stays_out_of_the_access_log(kannel, stack, caplog):
    """get-url puts the client's number and text in the query string; the access log shows from=*** text=***."""
    import logging

    gw, services = stack
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        assert kannel.fake.mo(GRACE, "BAL").status_code == 200
        assert kannel.fake.mo(GRACE, "8642").status_code == 200
    lines = [r.getMessage() for r in caplog.records if "/gateways/operator/sms" in r.getMessage()]
    assert len(lines) == 2 and all("text=***" in x and "from=***" in x for x in lines)
    assert not any("8642" in x or "0000101" in x for x in lines)
