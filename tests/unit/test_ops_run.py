"""Issue 14 item 11: `./run test` without root and outside Debian. The browser test is skipped with a
clear message when no Chromium is found, except under CI=true where it must run (./run, tests/support/browser.py)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.browser import chromium_or_skip, find_chromium

ROOT = Path(__file__).resolve().parents[2]


def test_no_chromium_skips_the_browser_test_with_a_message(tmp_path):
    env = {"PATH": str(tmp_path)}                                   # nothing on this PATH
    assert find_chromium(env) is None
    with pytest.raises(pytest.skip.Exception, match="browser test skipped: no Chromium found.*CONVO_CHROMIUM"):
        chromium_or_skip(env)


def test_under_ci_a_missing_chromium_fails_instead(tmp_path):
    with pytest.raises(pytest.fail.Exception, match="CI=true and no Chromium found"):
        chromium_or_skip({"PATH": str(tmp_path), "CI": "true"})


def test_chromium_is_found_on_the_path_or_where_convo_chromium_says(tmp_path):
    browser = tmp_path / "chromium-browser"
    browser.write_text("#!/bin/sh\n")
    browser.chmod(0o755)
    assert chromium_or_skip({"PATH": str(tmp_path), "CI": "true"}) == str(browser)
    elsewhere = tmp_path / "opt-chrome"
    elsewhere.write_text("#!/bin/sh\n")
    elsewhere.chmod(0o755)
    assert find_chromium({"PATH": "", "CONVO_CHROMIUM": str(elsewhere)}) == str(elsewhere)
    assert find_chromium({"PATH": str(tmp_path), "CONVO_CHROMIUM": str(tmp_path / "missing")}) is None


def _ensure_chromium(tmp_path, **env) -> subprocess.CompletedProcess:
    """./run's ensure_chromium as a user who is not root (no `id`, no apt-get on PATH) and has no browser."""
    script = (ROOT / "run").read_text()
    function = ""
    for name in ("ensure_tool", "ensure_chromium"):
        start = script.index(f"{name}() {{")
        function += script[start:script.index("\n}\n", start) + 3]
    return subprocess.run(["/bin/bash", "-c", function + "\nensure_chromium && echo CONTINUES"],
                          env={"PATH": str(tmp_path), **env}, capture_output=True, text=True, timeout=30)


def test_run_goes_on_without_chromium_outside_ci(tmp_path):
    r = _ensure_chromium(tmp_path)
    assert r.returncode == 0 and "CONTINUES" in r.stdout
    assert "browser test will be skipped" in r.stderr


def test_run_stops_without_chromium_under_ci(tmp_path):
    r = _ensure_chromium(tmp_path, CI="true")
    assert r.returncode == 2 and "CONTINUES" not in r.stdout
    assert "CI=true: the browser test needs Chromium" in r.stderr


def test_the_browser_test_uses_the_shared_skip_logic():
    text = (ROOT / "tests" / "integration" / "test_staff_messages.py").read_text()
    assert "chromium_or_skip()" in text and "/usr/bin/chromium" not in text
    assert os.access(ROOT / "run", os.X_OK)
