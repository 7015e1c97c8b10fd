"""`convo demo` (issue 14 item 5): the console is on, signed in to with the simulator's Mifos X user
mifos / password, and its URL is printed beside the demo phones. Runs the real command in its own process."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import requests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_demo_prints_the_console_and_signs_in_with_the_simulators_user(tmp_path):
    port, sim_port = _free_port(), _free_port()
    env = {**os.environ, "CONVO_DATABASE_URL": f"sqlite:///{tmp_path}/demo.db", "CONVO_REDIS_URL": "memory://demo"}
    env.pop("CONVO_AT_USERNAME", None)
    proc = subprocess.Popen([sys.executable, "-c", "from convo.cli import main; main()", "demo", "--port", str(port),
                             "--sim-port", str(sim_port)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Dial from a terminal phone"):
                break
        out = "".join(lines)
        base = f"http://127.0.0.1:{port}"
        assert f"Staff console:      {base}/console/  (sign in as Mifos X user mifos / password" in out, out
        assert "+254700000101  Grace Wanjiru Kamau" in out
        assert f"console: {base}/console/?q=%2B254700000101" in out
        http = requests.Session()
        for _ in range(100):                                  # the server starts after the banner
            try:
                login = http.get(f"{base}/console/login", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        csrf = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
        r = http.post(f"{base}/console/login", data={"csrf": csrf, "username": "mifos", "password": "password",
                                                      "next": "/console/?q=%2B254700000101"}, timeout=10)
        assert r.status_code == 200 and "Grace Wanjiru Kamau" in r.text, r.text[:500]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
