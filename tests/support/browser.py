"""The Chromium the browser tests drive (Playwright with a system browser, never a downloaded build).

Found at ``$CONVO_CHROMIUM``, else ``chromium`` / ``chromium-browser`` on the PATH (Debian, Ubuntu,
Fedora, Homebrew). Without one the browser tests are skipped with a message saying how to get one,
except under ``CI=true``: there a missing browser fails the run (``./run test`` installs it as root).
"""
from __future__ import annotations

import os
import shutil

import pytest

NAMES = ("chromium", "chromium-browser")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_chromium(env=None) -> str | None:
    env = os.environ if env is None else env
    given = env.get("CONVO_CHROMIUM")
    if given:
        return given if os.access(given, os.X_OK) else None
    for name in NAMES:
        found = shutil.which(name, path=env.get("PATH"))
        if found:
            return found
    return None


def in_ci(env=None) -> bool:
    env = os.environ if env is None else env
    return env.get("CI", "").strip().lower() in ("1", "true", "yes")


def chromium_or_skip(env=None) -> str:
    """The browser's path; skips the test when there is none (fails under ``CI=true``)."""
    path = find_chromium(env)
    if path:
        return path
    why = ("no Chromium found (CONVO_CHROMIUM, or chromium / chromium-browser on the PATH): "
           "install it (Debian/Ubuntu: apt-get install chromium; `./run test` does so as root) "
           "or set CONVO_CHROMIUM=/path/to/chromium")
    if in_ci(env):
        pytest.fail(f"CI=true and {why}")
    pytest.skip(f"browser test skipped: {why}")
