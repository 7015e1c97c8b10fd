"""A product manager edits the flows while the service runs: good edits apply, bad ones are refused.

Every test runs the whole stack over HTTP (gateway + Fineract simulator) on a temporary copy
of flows/, edits it like a product manager would and dials again. A refused edit keeps callers
on the last good version, and /healthz names the refused version and its first errors.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import requests
import sqlalchemy as sa

from tests.support.e2e import Phone, give_pin, running_gateway

FLOWS = Path(__file__).resolve().parents[2] / "flows"
GRACE = "+254700000101"


def copy_flows(tmp_path) -> Path:
    flows = tmp_path / "flows"
    shutil.copytree(FLOWS, flows)
    return flows


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def settle(services) -> None:
    """Wait for the background check of an edited folder (lint + conversation tests) to finish."""
    w = services.flows._worker
    if w is not None:
        w.join(300)
        assert not w.is_alive(), "the flows check never finished"


def health(gw: str) -> dict:
    return requests.get(f"{gw}/healthz", timeout=10).json()


def test_edits_apply_without_restart_and_a_bad_edit_keeps_the_last_good_version(tmp_path, redis_url):
    flows = copy_flows(tmp_path)
    en = flows / "locales" / "en.yaml"
    with running_gateway(redis_url, flows_dir=str(flows), flows_reload_tests=False) as (gw, _, services):
        services.flows.interval = 0.01
        give_pin(services, GRACE, "246802")
        grace = Phone(gw, GRACE)
        assert grace.dial().startswith("CON Welcome Grace. Choose:")
        in_flight = Phone(gw, GRACE)
        in_flight.dial()

        edit(en, "Welcome {{ client.first_name }}. Choose:", "Hello {{ client.first_name }}! Pick one:")
        services.flows._next_check = 0
        assert grace.dial().startswith("CON Hello Grace! Pick one:")
        assert in_flight.answer("1") == "CON Enter your PIN:"      # the old dialog finishes on its version
        assert "Balance: KES" in in_flight.answer("246802")
        good = health(gw)["flows_version"]

        main = flows / "main.yaml"
        edit(main, "next: due\n", "next: duee\n")
        services.flows._next_check = 0
        assert grace.dial().startswith("CON Hello Grace! Pick one:")  # still serving the last good version
        h = health(gw)
        assert h["flows_version"] == good
        assert "flows/main.yaml:" in h["flows_error"] and "state 'menu'" in h["flows_error"]
        assert "unknown target state 'duee'" in h["flows_error"]
        assert h["flows_refused"]["version"] != good and h["flows_refused"]["count"] >= 1
        assert "unknown target state 'duee'" in h["flows_refused"]["errors"][0]


def test_a_misspelt_attribute_is_refused_and_callers_keep_the_last_good_version(tmp_path, redis_url, caplog):
    """The issue's own example: `client.firstname` passed lint and every English caller got an error."""
    flows = copy_flows(tmp_path)
    en = flows / "locales" / "en.yaml"
    with running_gateway(redis_url, flows_dir=str(flows), flows_reload_tests=False) as (gw, _, services):
        services.flows.interval = 0.01
        grace = Phone(gw, GRACE)
        assert grace.dial().startswith("CON Welcome Grace. Choose:")
        good = health(gw)["flows_version"]

        edit(en, "Welcome {{ client.first_name }}", "Welcome {{ client.firstname }}")
        with caplog.at_level(logging.ERROR, logger="convo.flowlang.compiler"):
            for _ in range(3):
                services.flows._next_check = 0
                assert grace.dial().startswith("CON Welcome Grace. Choose:")
        h = health(gw)
        assert h["flows_version"] == good
        first = h["flows_refused"]["errors"][0]
        assert first.startswith("flows/locales/en.yaml:") and "state 'menu'" in first and "'main.menu' (en)" in first
        assert "did you mean `client.first_name`?" in first
        assert sum("flow edit refused" in r.getMessage() for r in caplog.records) == 1   # logged once

        edit(en, "Welcome {{ client.firstname }}", "Welcome back {{ client.first_name }}")  # fixed: goes live
        services.flows._next_check = 0
        assert grace.dial().startswith("CON Welcome back Grace. Choose:")
        h = health(gw)
        assert h["flows_refused"] is None and h["flows_error"] is None and h["flows_version"] != good


def test_an_edit_that_breaks_a_conversation_test_is_refused(tmp_path, redis_url):
    """CONVO_FLOWS_RELOAD_TESTS (on by default): flows/tests/*.yaml must pass before an edit goes live;
    the check runs beside the callers, who are answered on the last good version meanwhile."""
    flows = copy_flows(tmp_path)
    en = flows / "locales" / "en.yaml"
    with running_gateway(redis_url, flows_dir=str(flows)) as (gw, _, services):
        assert services.settings.flows_reload_tests is True
        services.flows.interval = 0.01
        grace = Phone(gw, GRACE)
        good = health(gw)["flows_version"]

        edit(en, "Welcome {{ client.first_name }}. Choose:", "Hi {{ client.first_name }}. Choose:")
        services.flows._next_check = 0
        assert grace.dial().startswith("CON Welcome Grace. Choose:")     # answered at once, on the good version
        settle(services)
        assert grace.dial().startswith("CON Welcome Grace. Choose:")
        h = health(gw)
        assert h["flows_version"] == good and h["flows_checking"] is None
        assert any("conversation test failed" in e and "expected 'Welcome Grace'" in e
                   for e in h["flows_refused"]["errors"])

        edit(en, "Hi {{ client.first_name }}. Choose:", "Welcome {{ client.first_name }}. Choose:")
        edit(en, 'menu: "Choose your language:"', 'menu: "Choose your language, please:"')
        services.flows._next_check = 0
        grace.dial()
        settle(services)
        screen = grace.dial()
        assert screen.startswith("CON Welcome Grace. Choose:")
        assert "Choose your language, please:" in grace.answer("5")
        h = health(gw)
        assert h["flows_version"] != good and h["flows_refused"] is None


def test_staff_alert_rules_fire_once_on_a_refused_edit(tmp_path, redis_url):
    flows = copy_flows(tmp_path)
    with (flows / "alerts.yaml").open("a", encoding="utf-8") as f:
        f.write("\n  - name: flows_refused\n    when: flows_refused\n    to: [{phone: \"+254711000099\"}]\n"
                "    text: notify.alert.flows_refused\n")
    for lang in ("en", "sw", "fr"):
        loc = flows / "locales" / f"{lang}.yaml"
        edit(loc, "  alert:\n", "  alert:\n    flows_refused: \"Flows edit refused ({{ count }}): {{ first_error }}\"\n")
    with running_gateway(redis_url, flows_dir=str(flows), flows_reload_tests=False) as (gw, _, services):
        services.flows.interval = 0.01
        grace = Phone(gw, GRACE)
        edit(flows / "main.yaml", "next: due\n", "next: duee\n")
        for _ in range(2):
            services.flows._next_check = 0
            assert grace.dial().startswith("CON Welcome Grace")
        with services.db.connect() as c:
            rows = c.execute(sa.text("select body from outbox where recipient = '+254711000099'")).all()
        assert len(rows) == 1 and "Flows edit refused (" in rows[0][0] and "duee" in rows[0][0]


def test_a_production_service_still_takes_a_good_edit_its_tests_pass_in_a_sandbox(tmp_path, redis_url,
                                                                                   monkeypatch):
    """The conversation tests run with default settings: the service's callback token (every callback
    of the tests would be refused with it) or its limits never decide whether an edit goes live."""
    flows = copy_flows(tmp_path)
    token = "t" * 40
    monkeypatch.setenv("CONVO_CALLBACK_TOKEN", token)                # the service's environment
    with running_gateway(redis_url, flows_dir=str(flows)) as (gw, _, services):
        assert services.settings.callback_token == token
        services.flows.interval = 0.01
        grace = Phone(gw, GRACE, token=token)
        good = health(gw)["flows_version"]
        edit(flows / "locales" / "en.yaml", "  mini: Mini-statement\n", "  mini: Last transactions\n")
        services.flows._next_check = 0
        grace.dial()
        settle(services)
        assert "3. Last transactions" in grace.dial()
        h = health(gw)
        assert h["flows_version"] != good and h["flows_refused"] is None
