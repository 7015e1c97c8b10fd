"""Staff messages: the API (bearer token, staff user) and the console page's send form in a real browser
(Debian's chromium driven by Playwright), through the outbox, worker and fake Africa's Talking."""
from __future__ import annotations

import time

import pytest
import requests

from convo.jobs.worker import run_worker
from tests.support.browser import LAUNCH_ARGS, chromium_or_skip
from tests.support.e2e import running_sms_stack

STAFF_TOKEN = "staff-token-42"
AUTH = {"Authorization": f"Bearer {STAFF_TOKEN}", "X-Staff-User": "alice"}


@pytest.fixture
def stack(redis_url, pg_url):
    with running_sms_stack(redis_url, pg_url, staff_token=STAFF_TOKEN) as s:
        yield s


def deliver(services) -> None:
    run_worker(services.settings, once=True, handle_signals=False, engine=services.db)


def wait_for(check, timeout: float = 10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    return check()


@pytest.mark.postgres
def test_staff_api_sends_to_the_clients_mobile_and_lists_it(stack):
    gw, fake, services = stack
    url = f"{gw}/api/clients/1/messages"
    assert requests.post(url, json={"text": "hi"}, timeout=10).status_code in (401, 403)
    assert requests.post(url, json={"text": "hi"}, headers={**AUTH, "Authorization": "Bearer nope"},
                         timeout=10).status_code == 401
    bad = requests.post(url, json={"text": "hi", "template": "branch_visit"}, headers=AUTH, timeout=10)
    assert bad.status_code == 400
    r = requests.post(url, json={"text": "Please bring your ID on Monday.", "idempotency_key": "k1"}, headers=AUTH,
                      timeout=10)
    assert r.status_code == 202, r.text
    sent = r.json()
    assert sent["to"] == "+254700000101" and sent["status"] == "queued" and sent["segments"] == 1
    again = requests.post(url, json={"text": "Please bring your ID on Monday.", "idempotency_key": "k1"},
                          headers=AUTH, timeout=10)
    assert again.json()["id"] == sent["id"]                               # a retried POST sends once
    t = requests.post(url, json={"template": "branch_visit", "variables": {"date": "Monday 3 June"}}, headers=AUTH,
                      timeout=10)
    assert t.status_code == 202 and t.json()["body"] == "Dear Grace, please visit your branch on Monday 3 June. Thank you."
    missing = requests.post(url, json={"template": "branch_visit"}, headers=AUTH, timeout=10)
    assert missing.status_code == 400 and "date" in missing.text
    assert requests.post(f"{gw}/api/clients/424242/messages", json={"text": "x"}, headers=AUTH,
                         timeout=10).status_code == 404
    assert requests.post(f"{gw}/api/clients/7/messages", json={"text": "x"}, headers=AUTH,  # Esther: no accounts
                         timeout=10).status_code == 202
    deliver(services)
    assert sorted(m["message"] for m in fake.fake.accepted())[0].startswith("Dear Grace")

    def delivered():
        msgs = requests.get(url, headers=AUTH, timeout=10).json()["messages"]
        return msgs if all(m["status"] == "delivered" for m in msgs) else None

    msgs = wait_for(delivered) or requests.get(url, headers=AUTH, timeout=10).json()["messages"]
    assert [m["kind"] for m in msgs] == ["staff", "staff"]
    assert {m["sent_by"] for m in msgs} == {"alice"}
    assert all(m["status"] in ("sent", "submitted", "delivered") for m in msgs)
    assert all(m["segments"] == 1 and m["encoding"] == "GSM-7" for m in msgs)
    assert any(m["cost"] for m in msgs)


@pytest.mark.postgres
def test_console_send_form_in_a_real_browser(stack):
    chromium = chromium_or_skip()        # skipped without a Chromium, except under CI=true (tests/support/browser.py)
    from playwright.sync_api import sync_playwright

    gw, fake, services = stack
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{gw}/console/clients/1")                     # the link from Mifos X "View Client"
            assert "/console/login" in page.url
            page.fill("#username", "mifos")                         # the simulator's Mifos X user
            page.fill("#password", "wrong")
            page.click("#signin")
            assert page.inner_text("#login-error") == "Wrong user name or password."
            page.fill("#username", "mifos")
            page.fill("#password", "password")
            page.click("#signin")
            page.wait_for_url(f"{gw}/console/clients/1")
            assert page.inner_text("#client-name") == "Grace Wanjiru Kamau"
            counter = page.locator("#counter")
            page.fill("#text", "Hello Grace")
            assert counter.inner_text().startswith("GSM-7 · 11 characters · 1 SMS")
            page.fill("#text", "x" * 160)
            assert counter.get_attribute("data-segments") == "1"
            page.fill("#text", "x" * 161)
            assert counter.get_attribute("data-segments") == "2"
            assert "161 characters · 2 SMS segments · 145 left" in counter.inner_text()
            page.fill("#text", "€" * 80)                             # extension characters cost 2 septets
            assert counter.inner_text().startswith("GSM-7 · 160 characters · 1 SMS")
            page.fill("#text", "Asante sana 🙏")                      # an emoji: UCS-2, 2 units
            assert counter.get_attribute("data-encoding") == "UCS-2"
            assert counter.inner_text().startswith("UCS-2 · 14 characters · 1 SMS")
            page.fill("#text", "“Quoted” – fine")                     # look-alikes become GSM-7 in the outbox
            assert counter.get_attribute("data-encoding") == "GSM-7"
            page.fill("#text", "Your loan documents are ready at the branch.")
            page.click("#send")
            page.wait_for_selector("#sent-note")
            row = page.locator("#messages tbody tr").first
            assert "Your loan documents are ready at the branch." in row.inner_text()
            assert row.locator(".status").inner_text() == "queued"
            deliver(services)

            def shows_sent():
                page.reload()
                status = page.locator("#messages tbody tr .status").first.inner_text()
                return status if status in ("sent", "submitted", "delivered") else None

            assert wait_for(shows_sent) in ("sent", "submitted", "delivered")
            # templates: pick one, fill its variable
            page.select_option("#template", "branch_visit")
            page.fill("input[name=var_date]", "Friday")
            page.click("#send")
            page.wait_for_selector("#sent-note")
            assert "please visit your branch on Friday" in page.locator("#messages tbody tr").first.inner_text()
            # the JS counter agrees with the server's count for what was stored
            from convo.text.sms import sms_info

            for text in ("x" * 306, "x" * 307, "ü" * 70, "Ω" * 71 + "[", "日本" * 40):
                js = page.evaluate("t => window.convoSmsInfo(t)", text)
                py = sms_info(text)
                assert (js["encoding"], js["chars"], js["segments"]) == (py.encoding, py.chars, py.segments), text
        finally:
            browser.close()
    assert [m["message"] for m in fake.fake.accepted()] == ["Your loan documents are ready at the branch."]
