"""The loan officer's console in a real Chromium (Playwright on the system browser, tests/support/browser.py):
sign in with a Mifos X user, find a client by the phone number as staff type it, reset the locked PIN,
send an SMS and see it delivered (the worker sends it to the fake Africa's Talking, whose delivery report
comes back over HTTP). Real Redis and PostgreSQL; gateway and simulator over HTTP."""
from __future__ import annotations

import time

import pytest

from convo.jobs.worker import run_worker
from tests.support.browser import LAUNCH_ARGS, chromium_or_skip
from tests.support.e2e import running_sms_stack

GRACE = "+254700000101"


@pytest.fixture
def stack(redis_url, pg_url):
    with running_sms_stack(redis_url, pg_url, secret_key="secret-key-browser-0123456789abcdef0123",
                           pin_argon2_memory_kib=1024, pin_argon2_time_cost=1) as s:
        yield s


def wait_for(check, timeout: float = 15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    return check()


def lock_graces_pin(services) -> None:
    from convo.security import PinHasher
    from convo.store import subscribers

    hasher = PinHasher.from_settings(services.settings)
    subscribers.set_pin(services.db, hasher, GRACE, 1, "4821")
    for _ in range(3):
        subscribers.verify(services.db, hasher, GRACE, 1, "1111", max_attempts=3)


@pytest.mark.postgres
def test_a_loan_officer_signs_in_finds_a_client_resets_the_pin_and_sends_an_sms(stack):
    chromium = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    from convo.store import subscribers

    gw, fake, services = stack
    lock_graces_pin(services)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{gw}/console/")
            assert "/console/login" in page.url
            page.fill("#username", "mifos")
            page.fill("#password", "not-the-password")
            page.click("#signin")
            assert page.inner_text("#login-error") == "Wrong user name or password."
            page.fill("#username", "mifos")
            page.fill("#password", "password")
            page.click("#signin")
            page.wait_for_url(f"{gw}/console/")
            assert page.inner_text("#who").startswith("mifos · Head Office")
            # find Grace by her number as a Kenyan officer types it
            page.fill("#q", "0700 000 101")
            page.click("#search")
            row = page.locator("#results tbody tr")
            assert row.count() == 1 and "Grace Wanjiru Kamau" in row.inner_text()
            assert row.locator(".shared").inner_text() == "no"
            page.click("#results a")
            page.wait_for_url(f"{gw}/console/clients/1")
            assert page.locator("#pin-state").get_attribute("data-state") == "locked"
            # reset: the browser will not submit without the identity check ticked
            page.click("#pin-reset")
            assert page.url == f"{gw}/console/clients/1"
            assert subscribers.status(services.db, GRACE, 1).state == "locked"
            page.check("#confirm")
            page.fill("#reason", "forgot PIN, national ID seen")
            page.click("#pin-reset")
            page.wait_for_selector("#done-note")
            assert page.locator("#pin-state").get_attribute("data-state") == "none"
            assert subscribers.status(services.db, GRACE, 1).state == "none"
            # send an SMS, watch the live counter, see it delivered
            page.fill("#text", "Habari Grace, your new PIN can be chosen on *384*12#.")
            assert page.locator("#counter").inner_text().startswith("GSM-7 · 53 characters · 1 SMS")
            page.click("#send")
            page.wait_for_selector("#sent-note")
            assert page.locator("#messages tbody tr .status").first.inner_text() == "queued"
            run_worker(services.settings, once=True, handle_signals=False, engine=services.db)

            def delivered():
                page.reload()
                first = page.locator("#messages tbody tr").first
                return first if first.locator(".status").inner_text() == "delivered" else None

            row = wait_for(delivered)
            assert row is not None, page.locator("#messages tbody tr").first.inner_text()
            assert row.locator(".gateway").inner_text() != "" and row.locator(".cost").inner_text() != ""
            assert "mifos" in row.inner_text()
            # the README's bookmarklet: from a client's page in the Mifos X web app to the console
            from pathlib import Path

            readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
            js = next(l for l in readme.splitlines() if l.startswith("javascript:"))
            js = js[len("javascript:"):].replace("https://<host>", gw)
            for mifos_url in (f"{gw}/console/login#/clients/1/general", f"{gw}/console/login#/viewclient/1"):
                page.goto(mifos_url)
                with page.context.expect_page() as opened:
                    page.evaluate(js)
                popup = opened.value
                popup.wait_for_load_state()
                assert popup.url == f"{gw}/console/clients/1" and popup.inner_text("#client-name") == \
                    "Grace Wanjiru Kamau"
                popup.close()
        finally:
            browser.close()
    assert [m["message"] for m in fake.fake.accepted()] == ["Habari Grace, your new PIN can be chosen on *384*12#."]
    import sqlalchemy as sa

    from convo.store.db import AuditEvent

    with services.db.connect() as c:
        actors = c.execute(sa.select(AuditEvent.action, AuditEvent.actor)
                           .where(AuditEvent.action.in_(["pin.reset", "staff.console_send"]))).all()
    assert sorted(actors) == [("pin.reset", "staff:mifos"), ("staff.console_send", "staff:mifos")]
