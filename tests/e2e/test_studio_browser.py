"""The studio in a real Chromium (Playwright on the system browser, tests/support/browser.py): every shipped flow's
diagram renders, the browser phone completes BAL and a PIN change against the Fineract simulator, an
edited flow with a mistake shows its error in the page, and callers' dialogs show up as counts on the
diagram. Gateway and simulator over HTTP, real Redis."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from convo.flowlang.compiler import load_flowset
from tests.support.browser import LAUNCH_ARGS, chromium_or_skip
from tests.support.e2e import Phone, give_pin, running_gateway

FLOWS = Path(__file__).resolve().parents[2] / "flows"
SHOTS = os.environ.get("CONVO_STUDIO_SCREENSHOTS")   # a folder: the docs' screenshots are taken here
GRACE = "+254700000101"


@pytest.fixture
def stack(redis_url):
    with running_gateway(redis_url, secret_key="secret-key-studio-0123456789abcdef0123456",
                         pin_argon2_memory_kib=1024, pin_argon2_time_cost=1) as s:
        yield s


def shot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def sign_in(page, gw: str) -> None:
    page.goto(f"{gw}/console/flows")
    assert "/console/login" in page.url
    page.fill("#username", "mifos")
    page.fill("#password", "password")
    page.click("#signin")
    page.wait_for_url(f"{gw}/console/flows")


def ussd(page, answer: str) -> str:
    before = page.get_attribute("#phone", "data-steps") or "0"
    page.fill("#phone-input", answer)
    page.click("#phone-send")
    page.wait_for_selector(f'#phone[data-steps="{int(before) + 1}"]')
    return page.inner_text("#phone-screen")


def dial(page, phone: str = GRACE) -> str:
    before = page.get_attribute("#phone", "data-steps") or "0"
    page.select_option("#phone-number", phone)
    page.click("#phone-dial")
    page.wait_for_selector(f'#phone[data-steps="{int(before) + 1}"]')
    return page.inner_text("#phone-screen")


def test_the_studio_in_chromium(stack):
    chromium = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    gw, _sim, services = stack
    fs = load_flowset(FLOWS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "404" not in m.text else None)
            page.on("response", lambda r: errors.append(r.url) if r.status == 404 and "favicon" not in r.url else None)
            sign_in(page, gw)
            assert page.locator("#flows tbody tr").count() == len(fs.flows)
            assert page.locator("#flows tr[data-flow=repay] .pin").inner_text() == "yes"
            shot(page, "studio-flows")
            # every shipped flow is drawn: one box per state, arrows, in the browser's layout
            for name, cf in fs.flows.items():
                page.goto(f"{gw}/console/flows/{name}")
                nodes = page.locator("svg.diagram g.node")
                assert nodes.count() == len(cf.spec.states), name
                box = nodes.first.bounding_box()
                assert box and box["width"] > 100 and box["height"] > 30, name
            # sub-flows are links: main -> balance
            page.goto(f"{gw}/console/flows/main")
            page.click("#state-balance a")
            page.wait_for_url(f"{gw}/console/flows/balance")
            # the phone: BAL against the simulator
            screen = dial(page)
            assert screen == "Enter your PIN:"
            screen = ussd(page, "2468")
            assert "Balance: KES 8,637.50" in screen and page.get_attribute("#phone-screen", "data-end") == "true"
            names = page.locator("#phone-vars .var-name").all_inner_texts()
            assert "account" in names and "pin" not in names
            shot(page, "studio-phone-balance")
            # a PIN dialog: change the PIN (old, new twice)
            page.goto(f"{gw}/console/flows/pin")
            assert dial(page).startswith("Enter your current PIN")
            screen = ussd(page, "2468")
            screen = ussd(page, "5813")
            screen = ussd(page, "5813")
            assert "changed" in screen.lower(), screen
            # an edited flow with a mistake: its error in the page, the file untouched
            before = (FLOWS / "balance.yaml").read_text()
            page.goto(f"{gw}/console/flows")
            page.fill("#preview-name", "balance.yaml")
            page.fill("#preview-content", before.replace("on: {found: pick}", "on: {found: pik}"))
            page.click("#preview-check")
            page.wait_for_selector("#lint-issues")
            row = page.locator("#lint-issues tr.issue.error").first
            assert row.locator(".file").inner_text() == "balance.yaml" and "pik" in row.inner_text()
            assert page.inner_text("#preview-file") == "balance.yaml"
            shot(page, "studio-lint")
            assert (FLOWS / "balance.yaml").read_text() == before
            # callers' dialogs (over the real gateway) become counts on the diagram
            give_pin(services, GRACE, "2468")
            for _ in range(3):
                ph = Phone(gw, GRACE)
                ph.dial()
                ph.answer("1")
                ph.answer("2468")
            Phone(gw, GRACE).dial()
            page.goto(f"{gw}/console/flows/main")
            edge = page.locator('svg.diagram g.edge[data-from="menu"][data-to="balance"]')
            assert edge.get_attribute("data-count") == "3" and edge.locator("text").text_content().endswith("· 3")
            assert page.locator("#state-menu .tally").text_content() == "in 4 · left 1"
            assert page.inner_text("#funnel tr[data-state=menu] .entered") == "4"
            shot(page, "studio-counts")
            assert not errors, errors                  # no script errors, no CSP refusals
        finally:
            browser.close()
