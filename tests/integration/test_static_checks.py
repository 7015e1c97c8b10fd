"""The code as a reader meets it: ruff (pyflakes, pycodestyle, import order, bugbear) and mypy report nothing.

Both are configured in pyproject.toml. They run here, in the suite, so `./run test` (and CI) keeps them
true; mypy takes ~10 s, which is why this is not in tests/unit.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing():
    r = run("ruff", "check", "convo", "gateways", "tests", "bench")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_mypy_finds_nothing():
    r = run("mypy", "convo", "gateways")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
