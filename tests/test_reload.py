"""A product manager edits the flows while the service runs: good edits apply, bad ones are refused."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import requests

from tests.e2e import Phone, give_pin, running_gateway

FLOWS = Path(__file__).resolve().parent.parent / "flows"


def test_edits_apply_without_restart_and_a_bad_edit_keeps_the_last_good_version(tmp_path, redis_url):
    flows = tmp_path / "flows"
    shutil.copytree(FLOWS, flows)
    en = flows / "locales" / "en.yaml"
    with running_gateway(redis_url, flows_dir=str(flows)) as (gw, _, services):
        services.flows.interval = 0.01
        give_pin(services, "+254700000101", "246802")
        grace = Phone(gw, "+254700000101")
        assert grace.dial().startswith("CON Welcome Grace. Choose:")
        in_flight = Phone(gw, "+254700000101")
        in_flight.dial()

        en.write_text(en.read_text().replace("Welcome {{ client.first_name }}. Choose:",
                                             "Hello {{ client.first_name }}! Pick one:"))
        time.sleep(0.05)
        assert grace.dial().startswith("CON Hello Grace! Pick one:")
        assert in_flight.answer("1") == "CON Enter your PIN:"      # the old dialog finishes on its version
        assert "Balance: KES" in in_flight.answer("246802")

        main = flows / "main.yaml"
        main.write_text(main.read_text().replace("next: due\n", "next: duee\n"))
        time.sleep(0.05)
        assert grace.dial().startswith("CON Hello Grace! Pick one:")  # still serving the last good version
        health = requests.get(f"{gw}/healthz", timeout=5).json()
        assert "flows/main.yaml:" in health["flows_error"] and "state 'menu'" in health["flows_error"]
        assert "unknown target state 'duee'" in health["flows_error"]
