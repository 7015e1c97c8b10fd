#!/usr/bin/env python3
"""USSD hop benchmark: the full engine vs a bare Flask+Redis endpoint, same server, same run.

Run on demand (not part of pytest), from the repository root:

    .venv/bin/python bench/ussd_bench.py                 # granian, gunicorn sync, gunicorn gthread
    .venv/bin/python bench/ussd_bench.py --servers granian --duration 5
    .venv/bin/python bench/ussd_bench.py --profile       # also profile one hop in-process

What it does (see bench/README.md):

* starts the Fineract simulator (``convo fineract-sim``) on its own port and uses
  real Redis on a dedicated DB number (14 by default; flushed before and after);
* for each WSGI server (same worker count each), serves ``convo.web:create_app``
  and ``bench/bare_app.py`` (one Redis GET + one SET) in subprocesses, warms the
  Fineract cache, and drives Africa's Talking USSD callbacks with ``wrk`` at 16
  concurrent callers (``bench/ussd.lua``: unique session ids, the dial -> menu ->
  choice sequence of several demo clients, each reply checked for CON/END);
* prints hops/s, p50/p99 for baseline and hop, the ratio hop/baseline against the
  targets (>= 1.0, p99 <= 20 ms), Redis memory per live session (target <= 1 KB)
  and the time to load and validate 100 flows (target < 1 s).

Bounded in time (``--max-seconds``); every subprocess is killed on exit; a server
that does not come up makes it exit with status 2 and the server's log tail.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from convo.cli import SERVE_THREADS  # noqa: E402  (the shipped `convo serve --threads`)

BENCH = REPO / "bench"
LUA = BENCH / "ussd.lua"
USSD_PATH = "/gateways/africastalking/ussd"
CODE = "*384*12#"

#: (phone, cumulative texts): every step but the last answers CON, the last END.
#: The mix walks the whole engine with Fineract answers cached: identify, the
#: main menu, a wrong choice, sub-flows, the next meeting (group and center
#: calendars), a caller in no group, a Swahili-speaking caller. Balance, due and
#: mini-statement ask for the PIN (argon2id, ~30 ms by design), so they are
#: measured separately, not in the hop throughput.
DIALOGS: list[tuple[str, list[str]]] = [
    ("+254700000101", ["", "4"]),                  # next meeting, group in a center
    ("+254700000105", ["", "4"]),
    ("+254700000102", ["", "4"]),                  # every other Wednesday
    ("+254700000106", ["", "4"]),                  # in no group
    ("+254700000103", ["", "9", "9*4"]),           # a wrong choice, then the meeting
    ("+255750000118", ["", "4"]),                  # answered in Swahili
]

TARGET_RATIO = 1.0
TARGET_P99_MS = 20.0
TARGET_SESSION_BYTES = 1024
TARGET_FLOWS_S = 1.0


class BenchError(Exception):
    """A clear reason to stop (exit status 2)."""


# ---------------------------------------------------------------------------- processes

_procs: list[subprocess.Popen] = []
_deadline = float("inf")


def left() -> float:
    remaining = _deadline - time.monotonic()
    if remaining <= 0:
        raise BenchError("time budget (--max-seconds) exhausted")
    return remaining


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    fh = open(log, "wb")
    p = subprocess.Popen(args, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    fh.close()
    p.log = log  # type: ignore[attr-defined]
    _procs.append(p)
    return p


def stop(p: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group we started, then SIGKILL if it lingers."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(5)
    else:  # the leader died; children (server workers) may still be around
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if p in _procs:
        _procs.remove(p)


def stop_all() -> None:
    for p in list(_procs):
        stop(p)


def tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def wait_http(p: subprocess.Popen, url: str, what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + min(timeout, left())
    last = "no answer"
    while time.monotonic() < end:
        if p.poll() is not None:
            raise BenchError(f"{what} exited with status {p.returncode} before answering {url}\n"
                             f"--- its log ({p.log}) ---\n{tail(p.log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
                last = f"HTTP {r.status}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except OSError as e:
            last = str(e)
        time.sleep(0.1)
    raise BenchError(f"{what} did not come up at {url} within {timeout:.0f} s ({last})\n"
                     f"--- its log ({p.log}) ---\n{tail(p.log)}")


def wait_port(p: subprocess.Popen, port: int, what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + min(timeout, left())
    while time.monotonic() < end:
        if p.poll() is not None:
            raise BenchError(f"{what} exited with status {p.returncode}\n--- log ---\n{tail(p.log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{what} did not listen on port {port} within {timeout:.0f} s\n--- log ---\n{tail(p.log)}")


# ---------------------------------------------------------------------------- servers

@dataclass(frozen=True)
class Server:
    name: str
    kind: str                      # granian | gunicorn
    worker_class: str = ""         # gunicorn: sync | gthread
    threads: int = 0               # gunicorn --threads / granian --blocking-threads (0: the server's default)

    def argv(self, target: str, factory: bool, port: int, workers: int) -> list[str]:
        """``target`` is ``module:callable``; ``factory`` means call it to get the app."""
        venv = Path(sys.executable).parent
        if self.kind == "granian":
            argv = [str(venv / "granian"), "--interface", "wsgi", "--workers", str(workers),
                    "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"]
            if self.threads:
                argv += ["--blocking-threads", str(self.threads)]
            return argv + (["--factory"] if factory else []) + [target]
        argv = [str(venv / "gunicorn"), "--workers", str(workers), "--worker-class", self.worker_class,
                "--bind", f"127.0.0.1:{port}", "--log-level", "warning", "--backlog", "1024"]
        if self.threads:
            argv += ["--threads", str(self.threads)]
        return argv + [target + ("()" if factory else "")]


#: granian's WSGI default is backpressure/2 blocking threads per worker (256 with the
#: default backlog): many Python threads contending for one GIL. ``granian-bt1`` runs
#: one blocking thread per worker, like a sync worker.
SERVERS = {
    "granian": Server("granian", "granian"),
    "granian-bt1": Server("granian-bt1", "granian", threads=1),
    "granian-bt2": Server("granian-bt2", "granian", threads=2),
    "granian-bt32": Server("granian-bt32", "granian", threads=32),
    "granian-bt64": Server("granian-bt64", "granian", threads=64),
    "granian-bt128": Server("granian-bt128", "granian", threads=128),
    "gunicorn-sync": Server("gunicorn-sync", "gunicorn", "sync"),
    "gunicorn-gthread": Server("gunicorn-gthread", "gunicorn", "gthread", threads=4),
}
APPS = {
    "bare": ("bench.bare_app:create_app", True),
    "hop": ("convo.web:create_app", True),
}


# ---------------------------------------------------------------------------- HTTP helpers

def post_ussd(base: str, session: str, phone: str, text: str) -> tuple[int, str]:
    body = urllib.parse.urlencode({"sessionId": session, "serviceCode": CODE, "phoneNumber": phone,
                                   "networkCode": "63902", "text": text}).encode()
    req = urllib.request.Request(base + USSD_PATH, data=body, method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def run_dialogs(base: str, tag: str, rounds: int = 1, stop_before_last: bool = False,
                check: bool = True) -> int:
    """Walk every dialog ``rounds`` times; verify CON/END. Returns the number of sessions made."""
    made = 0
    for r in range(rounds):
        for i, (phone, steps) in enumerate(DIALOGS):
            sid = f"ATUid_{tag}_{r}_{i}"
            use = steps[:-1] if stop_before_last else steps
            for j, text in enumerate(use):
                status, body = post_ussd(base, sid, phone, text)
                want = "END" if j == len(steps) - 1 else "CON"
                if check and (status != 200 or not body.startswith(want)):
                    raise BenchError(f"dialog {phone} {steps!r}: step {text!r} answered {status} {body!r}; "
                                     f"expected {want} (did the flows or the seed change? update DIALOGS)")
            made += 1
    return made


# ---------------------------------------------------------------------------- wrk

def dialogs_env() -> str:
    return ";".join(f"{phone}|{','.join(steps)}" for phone, steps in DIALOGS)


def wrk(base: str, mode: str, run: str, duration: float, conns: int) -> dict:
    env = {**os.environ, "BENCH_DIALOGS": dialogs_env(), "BENCH_RUN": run, "BENCH_MODE": mode,
           "BENCH_CODE": CODE}
    d = max(1, int(round(duration)))
    argv = ["wrk", "-t", str(conns), "-c", str(conns), "-d", f"{d}s", "--timeout", "2s", "--latency",
            "-s", str(LUA), base + USSD_PATH]
    budget = d + 30
    if left() < budget:
        raise BenchError("time budget (--max-seconds) too small for another wrk run")
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=budget)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if p.returncode != 0 or line is None:
        raise BenchError(f"wrk failed (status {p.returncode}):\n{p.stdout}\n{p.stderr}")
    res = json.loads(line[len("BENCH_JSON "):])
    res["rps"] = res["requests"] / (res["duration_us"] / 1e6)
    res["errors"] = (res["connect_err"] + res["read_err"] + res["write_err"] + res["status_err"]
                     + res["timeouts"] + res["bad_status"] + res["bad_body"])
    return res


# ---------------------------------------------------------------------------- redis

def redis_client(url: str, db: int):
    import redis

    return redis.Redis.from_url(f"{url.rstrip('/')}/{db}", socket_timeout=5, socket_connect_timeout=2)


# ---------------------------------------------------------------------------- phases

def start_app(server: Server, app: str, env: dict, workers: int, logdir: Path) -> tuple[subprocess.Popen, str]:
    target, factory = APPS[app]
    port = free_port()
    p = spawn(server.argv(target, factory, port, workers), env, logdir / f"{server.name}-{app}.log")
    base = f"http://127.0.0.1:{port}"
    wait_http(p, base + "/healthz", f"{server.name} serving {target}")
    return p, base


_TICK = os.sysconf("SC_CLK_TCK")


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of process group ``pgid``."""
    total = 0.0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            fields = (Path("/proc") / d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:                  # fields after the name: state ppid pgrp ... utime stime
            total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def redis_cpu(r) -> float:
    """CPU seconds the Redis server has used (``INFO cpu``: main thread and its helpers)."""
    info = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def wrk_cpu() -> float:
    import resource

    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def measure_server(server: Server, env: dict, args, logdir: Path, run_no: int, r=None) -> dict:
    """Bare and hop servers up side by side; ``--repeat`` alternating wrk runs; best run of each kept.
    Each run also says where the machine's CPU went per request: the server's processes, Redis, wrk."""
    procs = {}
    try:
        for app in ("bare", "hop"):
            procs[app] = start_app(server, app, env, args.workers, logdir)
        run_dialogs(procs["hop"][1], f"w{run_no}", rounds=2)     # Fineract cache in Redis; checks the dialogs
        for app in ("bare", "hop"):                              # every worker warm (imports, local caches)
            wrk(procs[app][1], "ussd" if app == "hop" else "bare", f"warm{run_no}{app}", args.warmup,
                args.concurrency)
        runs: dict[str, list] = {"bare": [], "hop": []}
        for rep in range(args.repeat):
            for app in ("bare", "hop"):
                load = os.getloadavg()[0]
                cpu0 = (group_cpu(procs[app][0].pid), redis_cpu(r) if r is not None else 0.0, wrk_cpu())
                res = wrk(procs[app][1], "ussd" if app == "hop" else "bare", f"r{run_no}{rep}{app}",
                          args.duration, args.concurrency)
                cpu1 = (group_cpu(procs[app][0].pid), redis_cpu(r) if r is not None else 0.0, wrk_cpu())
                res["loadavg_before"] = load
                res["cpu_us_per_request"] = {k: (b - a) / max(1, res["requests"]) * 1e6
                                             for k, a, b in zip(("server", "redis", "wrk"), cpu0, cpu1)}
                runs[app].append(res)
                if procs[app][0].poll() is not None:
                    raise BenchError(f"{server.name} ({app}) died during the run\n{tail(procs[app][0].log)}")
                cpu = res["cpu_us_per_request"]
                print(f"{server.name:<18}{app:<5} {res['rps']:8.0f} req/s  p50 {ms(res['p50_us'])} ms  "
                      f"p99 {ms(res['p99_us'])} ms  errors {res['errors']}  (load avg before {load:.1f}; CPU us "
                      f"per request: server {cpu['server']:.0f}, redis {cpu['redis']:.0f}, wrk {cpu['wrk']:.0f})",
                      flush=True)
        out = {app: max(rs, key=lambda x: x["rps"]) for app, rs in runs.items()}
        out["runs"] = runs
        return out
    finally:
        for p, _ in procs.values():
            stop(p)


def stats_cost(server: Server, env: dict, args, logdir: Path, r) -> bool:
    """The drop-off counting's cost (convo.dialog.stats): the same hop server with ``CONVO_FLOW_STATS`` off and on,
    side by side, ``--repeat`` alternating wrk runs; judged on the ratio of the medians (>= 0.95): on a shared
    machine the best run of either side is an outlier more often than not."""
    procs = {}
    try:
        for tag, on in (("off", "false"), ("on", "true")):
            e = {**env, "CONVO_FLOW_STATS": on}
            target, factory = APPS["hop"]
            port = free_port()
            p = spawn(server.argv(target, factory, port, args.workers), e, logdir / f"{server.name}-stats-{tag}.log")
            base = f"http://127.0.0.1:{port}"
            wait_http(p, base + "/healthz", f"{server.name} with flow stats {tag}")
            procs[tag] = (p, base)
        run_dialogs(procs["on"][1], "sw", rounds=2)
        runs: dict[str, list] = {"off": [], "on": []}
        for tag in ("off", "on"):
            wrk(procs[tag][1], "ussd", f"swarm{tag}", args.warmup, args.concurrency)
        for rep in range(args.repeat):
            for tag in (("off", "on") if rep % 2 == 0 else ("on", "off")):
                res = wrk(procs[tag][1], "ussd", f"s{rep}{tag}", args.duration, args.concurrency)
                runs[tag].append(res)
                print(f"{server.name:<18}stats {tag:<3} {res['rps']:8.0f} req/s  p50 {ms(res['p50_us'])} ms  "
                      f"p99 {ms(res['p99_us'])} ms  errors {res['errors']}", flush=True)
        best = {tag: max(x["rps"] for x in rs) for tag, rs in runs.items()}
        med = {tag: statistics.median(x["rps"] for x in rs) for tag, rs in runs.items()}
        ratio, mratio = best["on"] / best["off"], med["on"] / med["off"]
        counted = len(r.keys("convo:{stats}:d:*"))
        print(f"\nflow stats on/off: best {best['on']:.0f}/{best['off']:.0f} = {ratio:.3f}, median "
              f"{med['on']:.0f}/{med['off']:.0f} = {mratio:.3f} (target >= 0.95); day hashes written: {counted}")
        return mratio >= 0.95 and counted > 0
    finally:
        for p, _ in procs.values():
            stop(p)


def stats_cost_inprocess(env: dict, rounds: int = 30) -> dict:
    """The same comparison in this process, hop after hop (no server, no wrk): CPU time of this process
    and wall time per hop with counting off and on, alternating blocks, medians. The machine's other load
    moves wall time; this process's CPU time it barely moves."""
    os.environ.update(env)
    from convo.config import Settings
    from convo.web import create_app

    apps = {tag: create_app(Settings.from_env(flow_stats=(tag == "on"))) for tag in ("off", "on")}
    clients = {tag: a.test_client() for tag, a in apps.items()}
    seq = [0]

    def block(tag: str) -> tuple[float, float, int]:
        c, hops = clients[tag], 0
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(5):
            for phone, texts in DIALOGS:
                seq[0] += 1
                for text in texts:
                    r = c.post(USSD_PATH, data={"sessionId": f"ip{seq[0]}", "serviceCode": CODE, "phoneNumber": phone,
                                                "networkCode": "63902", "text": text})
                    assert r.status_code == 200
                    hops += 1
        return (time.process_time() - cpu) / hops * 1e6, (time.perf_counter() - wall) / hops * 1e6, hops

    block("off"), block("on")                                  # warm: Fineract figures cached in Redis
    got: dict[str, list] = {"off": [], "on": []}
    for i in range(rounds):
        for tag in (("off", "on") if i % 2 == 0 else ("on", "off")):
            got[tag].append(block(tag))
    med = {tag: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for tag, v in got.items()}
    out = {"cpu_us_off": med["off"][0], "cpu_us_on": med["on"][0], "wall_us_off": med["off"][1],
           "wall_us_on": med["on"][1], "hops": sum(x[2] for v in got.values() for x in v)}
    print(f"in-process, {out['hops']} hops: CPU per hop {out['cpu_us_off']:.0f} -> {out['cpu_us_on']:.0f} us "
          f"(throughput ratio {out['cpu_us_off'] / out['cpu_us_on']:.3f}); wall per hop {out['wall_us_off']:.0f} -> "
          f"{out['wall_us_on']:.0f} us (ratio {out['wall_us_off'] / out['wall_us_on']:.3f})", flush=True)
    return out


def session_memory(server: Server, env: dict, args, logdir: Path, r) -> dict:
    """Live sessions (each dialog stopped before its last step) and what Redis spends on them."""
    r.flushdb()
    p, base = start_app(server, "hop", env, args.workers, logdir)
    try:
        run_dialogs(base, "memwarm", rounds=1)              # cache entries exist before we count
        r.delete(*[k for k in r.scan_iter("convo:{*", count=1000)] or ["-"])
        time.sleep(0.2)
        before = int(r.info("memory")["used_memory"])
        rounds = max(1, args.sessions // len(DIALOGS))
        made = run_dialogs(base, "mem", rounds=rounds, stop_before_last=True)
        after = int(r.info("memory")["used_memory"])
        keys = [k for k in r.scan_iter("convo:{*", count=1000)       # sessions, not the drop-off counts
                if not k.startswith(b"convo:{stats}")]
        usage = [r.memory_usage(k, samples=0) or 0 for k in keys]
        strlen = [r.strlen(k) for k in keys]
        ttl = r.ttl(keys[0]) if keys else -2
        biggest = keys[strlen.index(max(strlen))] if keys else None
        return {"sessions": made, "keys": len(keys), "used_memory_delta": after - before,
                "per_session_info": (after - before) / made if made else 0.0,
                "memory_usage_mean": statistics.mean(usage) if usage else 0.0,
                "memory_usage_max": max(usage, default=0),
                "value_bytes_mean": statistics.mean(strlen) if strlen else 0.0,
                "value_bytes_max": max(strlen, default=0), "ttl": ttl,
                "biggest_value": (r.get(biggest) or b"").decode() if biggest else ""}
    finally:
        stop(p)
        r.flushdb()


def flows_load(n: int) -> dict:
    """Time ``load_flowset`` over the shipped flows plus ``n`` renamed copies of main.yaml."""
    import re

    from convo.flowlang.compiler import load_flowset

    src = REPO / "flows"
    main = (src / "main.yaml").read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="convo-bench-flows-") as tmp:
        d = Path(tmp) / "flows"
        shutil.copytree(src, d, ignore=shutil.ignore_patterns("tests"))
        for i in range(n):
            text = re.sub(r"(?m)^flow:\s*main\s*$", f"flow: main_{i:03d}", main, count=1)
            (d / f"main_{i:03d}.yaml").write_text(text, encoding="utf-8")
        files = len(list(d.glob("*.yaml"))) - 1                 # channels.yaml is not a flow
        t0 = time.perf_counter()
        fs = load_flowset(d)                                    # cold: YAML, validation, Jinja, machines
        cold = time.perf_counter() - t0
        warm = []
        for _ in range(2):
            t0 = time.perf_counter()
            load_flowset(d)
            warm.append(time.perf_counter() - t0)
        return {"flows": len(fs.flows), "files": files, "cold_s": cold, "warm_s": min(warm)}


# ---------------------------------------------------------------------------- profile

def profile_hop(env: dict, hops: int) -> None:
    """One hop in-process against real Redis: time split, Redis round trips, cProfile top."""
    import cProfile
    import io
    import pstats

    import redis.connection
    from werkzeug.test import EnvironBuilder

    os.environ.update(env)
    from convo.config import Settings
    from convo.dialog.engine import Inbound
    from convo.web import create_app

    app = create_app(Settings.from_env())
    svc = app.extensions["convo"]

    counter = {"n": 0}
    orig = redis.connection.Connection.send_packed_command

    def counted(self, *a, **kw):
        counter["n"] += 1
        return orig(self, *a, **kw)

    redis.connection.Connection.send_packed_command = counted

    def environs(tag: str):
        out = []
        i = 0
        while len(out) < hops:
            for k, (phone, steps) in enumerate(DIALOGS):
                for text in steps:
                    form = {"sessionId": f"ATUid_prof{tag}_{i}_{k}", "serviceCode": CODE,
                            "phoneNumber": phone, "networkCode": "63902", "text": text}
                    out.append(EnvironBuilder(path=USSD_PATH, method="POST", data=form).get_environ())
            i += 1
        return out[:hops]

    def call(environ):
        chunks = []
        body = app(environ, lambda status, headers, exc=None: chunks.append(status))
        b = b"".join(body)
        if hasattr(body, "close"):
            body.close()
        return b

    for e in environs("warm"):                                # Fineract cache + local caches warm
        call(e)
    # round trips per hop, per dialog step
    print("\nRedis round trips per hop (send_packed_command calls; a pipeline or a script = 1):")
    for k, (phone, steps) in enumerate(DIALOGS):
        per = []
        for text in steps:
            e = EnvironBuilder(path=USSD_PATH, method="POST", data={
                "sessionId": f"ATUid_rt_{k}", "serviceCode": CODE, "phoneNumber": phone,
                "networkCode": "63902", "text": text}).get_environ()
            counter["n"] = 0
            call(e)
            per.append(counter["n"])
        print(f"  {phone} {steps!r}: {per}")

    # full WSGI hop (lean entry, and Flask alone) vs engine.handle alone vs Redis alone vs the bare endpoint;
    # alternating blocks, median per hop of wall time and of this process's CPU time (Redis waits excluded)
    sys.path.insert(0, str(BENCH))
    from bare_app import create_app as create_bare

    flask_app = create_app(Settings.from_env(), lean=False)
    bare = create_bare()

    def call_with(wsgi):
        def run(environ):
            b"".join(wsgi(environ, lambda *a: None))
        return run

    def engine_msgs(tag: str):
        out = []
        i = 0
        while len(out) < hops:
            for k, (phone, steps) in enumerate(DIALOGS):
                for text in steps:
                    out.append(Inbound("ussd", "africastalking", f"ATUid_eng{tag}_{i}_{k}", phone, text, CODE))
            i += 1
        return out[:hops]

    r = svc.redis

    def getset(i):
        r.get(f"bench:rt:{i}")
        r.set(f"bench:rt:{i}", b"x", ex=60)

    kinds = {"hop": (call, environs), "flask": (call_with(flask_app), environs),
             "engine": (svc.engine.handle, engine_msgs), "getset": (getset, lambda tag: range(hops)),
             "bare": (call_with(bare), environs)}
    for name, (fn, make) in kinds.items():                   # warm: local caches, first-call imports
        for x in make(f"w{name}")[:60]:
            fn(x)
    got: dict[str, list] = {k: [] for k in kinds}
    counter["n"] = 0
    for block in range(5):
        for name, (fn, make) in kinds.items():
            items = make(f"b{block}{name}")
            if name == "hop":
                counter["n"] = 0
            w0, c0 = time.perf_counter(), time.process_time()
            for x in items:
                fn(x)
            got[name].append(((time.perf_counter() - w0) / len(items) * 1e6,
                              (time.process_time() - c0) / len(items) * 1e6))
            if name == "hop":
                rts = counter["n"] / len(items)
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in got.items()}
    print(f"\nIn-process, one hop (median of 5 blocks of {hops}; dialogs mixed as in the wrk run): wall / CPU us")
    rows = [("hop", f"full WSGI call, lean entry ({rts:.2f} Redis round trips)"),
            ("flask", "full WSGI call through Flask (lean entry off)"),
            ("engine", "engine.handle alone"),
            ("getset", "one Redis GET + one SET (the bare endpoint's Redis work)"),
            ("bare", "bare endpoint, full WSGI call")]
    for k, label in rows:
        print(f"  {label:<60}{med[k][0]:8.1f} {med[k][1]:8.1f}")
    print(f"  ratio bare/hop: wall {med['bare'][0] / med['hop'][0]:.2f}, CPU {med['bare'][1] / med['hop'][1]:.2f};"
          f" Flask/lean hop CPU {med['flask'][1] / med['hop'][1]:.2f}")

    phase_breakdown(app, call, environs("ph"))

    es = environs("t2")
    prof = cProfile.Profile()
    prof.enable()
    for e in es:
        call(e)
    prof.disable()
    for key, title in (("tottime", "own time"), ("cumulative", "cumulative")):
        s = io.StringIO()
        pstats.Stats(prof, stream=s).strip_dirs().sort_stats(key).print_stats(25)
        print(f"\ncProfile over {len(es)} hops, top 25 by {title}:")
        print("\n".join(ln for ln in s.getvalue().splitlines()[5:] if ln.strip()))
    redis.connection.Connection.send_packed_command = orig
    from convo.dialog import stats

    stats.PENDING.flush()                          # the drop-off counts now, before the caller empties the DB


def phase_breakdown(app, call, environs: list) -> None:
    """Inclusive time and calls per hop of the functions on the hop path (timing wrappers)."""
    import importlib

    targets = [
        ("flask view at_ussd_session", None, None),
        ("convo.web.fast", "LeanUssd", "_read_body"),
        ("convo.web.fast", "LeanUssd", "_parse"),
        ("gateways.africastalking", "parse_ussd", None),
        ("convo.text.phone", "normalize", None),
        ("convo.flowlang.compiler", "FlowLibrary", "maybe_reload"),
        ("convo.dialog.sessions", "SessionStore", "acquire"),
        ("convo.dialog.engine", "Engine", "_hop"),
        ("convo.dialog.engine", "Engine", "_feed"),
        ("convo.dialog.engine", "Engine", "_run_auto"),
        ("convo.dialog.engine", "Engine", "_screen"),
        ("convo.dialog.engine", "Engine", "_pages"),
        ("convo.dialog.engine", "Engine", "_fire"),
        ("convo.flowlang.compiler", "Text", "render"),
        ("convo.text.paging", "paginate_menu", None),
        ("convo.text.paging", "paginate_text", None),
        ("convo.dialog.sessions", "SessionStore", "save"),
    ]
    stats: dict[str, list] = {}
    undo = []

    def wrap(label, fn):
        acc = stats.setdefault(label, [0, 0.0])

        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                acc[0] += 1
                acc[1] += time.perf_counter() - t0
        return timed

    view_name = "gateways.at_ussd_session"
    view = app.view_functions[view_name]
    app.view_functions[view_name] = wrap("flask view at_ussd_session", view)
    undo.append(lambda: app.view_functions.__setitem__(view_name, view))
    for mod, name, meth in targets[1:]:
        m = importlib.import_module(mod)
        if meth is None:
            if not hasattr(m, name):
                continue
            orig = getattr(m, name)
            setattr(m, name, wrap(f"{mod}.{name}", orig))
            undo.append(lambda m=m, name=name, orig=orig: setattr(m, name, orig))
        else:
            cls = getattr(m, name, None)
            if cls is None or meth not in cls.__dict__:
                continue
            orig = cls.__dict__[meth]
            if isinstance(orig, staticmethod):
                setattr(cls, meth, staticmethod(wrap(f"{name}.{meth}", orig.__func__)))
            else:
                setattr(cls, meth, wrap(f"{name}.{meth}", orig))
            undo.append(lambda cls=cls, meth=meth, orig=orig: setattr(cls, meth, orig))
    t0 = time.perf_counter()
    for e in environs:
        call(e)
    total = (time.perf_counter() - t0) / len(environs) * 1e6
    for u in undo:
        u()
    n = len(environs)
    print(f"\nWhere one hop's time goes (inclusive, timing wrappers; mean over {n} hops, "
          f"WSGI call total {total:.0f} us incl. wrapper overhead):")
    for label, (calls, secs) in stats.items():
        print(f"  {label:<36}{secs / n * 1e6:8.1f} us/hop {calls / n:6.2f} calls/hop")


# ---------------------------------------------------------------------------- Mifos X slow

SLOW_TARGET_S = 5.0


def slow_phones(batch: int, n: int) -> list[str]:
    """``n`` distinct numbers: the seeded demo clients first (found in Mifos X), then numbers unknown
    to it (a lookup all the same). With the caches emptied before, every first hop asks Mifos X."""
    from convo.devkit.fineract_seed import DEMO_PHONES

    known = [p for p, _ in DEMO_PHONES] if batch < 99 else []
    return (known + [f"+25479{batch % 100:02d}{i:05d}" for i in range(n)])[:n]


def first_hops_at_once(base: str, phones: list[str], tag: str, timeout: float = 60.0) -> list[dict]:
    """Every phone dials at the same instant (a barrier); each result: seconds, HTTP status, answer."""
    import threading

    out: list[dict] = [{} for _ in phones]
    barrier = threading.Barrier(len(phones))

    def one(i: int, phone: str) -> None:
        body = urllib.parse.urlencode({"sessionId": f"ATUid_slow_{tag}_{i}", "serviceCode": CODE,
                                       "phoneNumber": phone, "networkCode": "63902", "text": ""}).encode()
        req = urllib.request.Request(base + USSD_PATH, data=body, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        barrier.wait()
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode(errors="replace")
        except OSError as e:
            status, text = 0, f"transport error: {e}"
        out[i] = {"s": time.perf_counter() - t0, "status": status, "text": text}

    threads = [threading.Thread(target=one, args=(i, p), daemon=True) for i, p in enumerate(phones)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 10)
    return out


def slow_mifos(env: dict, args, logdir: Path, sim_base: str, rdb) -> bool:
    """Mifos X answers every call in ``--slow-delay`` s; ``--slow-callers`` dial at once against
    ``convo serve`` (granian) with each ``--slow-threads`` setting. Reports max / p99 / p50 time to
    answer (queueing included) and how many waited longer than 5 s."""
    ok = True
    rows = []
    batch = 0
    for threads in [int(x) for x in args.slow_threads.split(",")]:
        port = free_port()
        p = spawn([str(Path(sys.executable).parent / "convo"), "serve", "--host", "127.0.0.1", "--port", str(port),
                   "--workers", str(args.workers), "--threads", str(threads)],
                  env, logdir / f"serve-slow-t{threads}.log")
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(p, base + "/healthz", f"convo serve --threads {threads}")
            # every worker process warm (imports, flows, office tree) before the slow part starts
            warm = first_hops_at_once(base, slow_phones(99, 4 * args.workers), f"warm{threads}")
            if any(r["status"] != 200 for r in warm):
                raise BenchError(f"warm-up hops failed: {warm}")
            set_sim_faults(sim_base, {"delay": args.slow_delay})
            try:
                for n in [int(x) for x in args.slow_callers.split(",")]:
                    rdb.flushdb()                   # no caller found in the shared cache...
                    time.sleep(11)                  # ...nor in a worker's own (convo.mifos.cache: 10 s)
                    res = first_hops_at_once(base, slow_phones(batch, n), f"t{threads}n{n}")
                    batch += 1
                    secs = sorted(r["s"] for r in res)
                    bad = [r for r in res if r["status"] != 200 or not r["text"].startswith(("CON ", "END "))]
                    kinds = {}
                    for r in res:
                        if r["status"] != 200:
                            k = f"HTTP {r['status']}"
                        elif r["text"].startswith("END ") and ("try again" in r["text"].lower()
                                                              or "not available" in r["text"]):
                            k = "END try again later"
                        else:
                            k = r["text"][:3]
                        kinds[k] = kinds.get(k, 0) + 1
                    row = {"threads": threads, "workers": args.workers, "callers": n, "max_s": secs[-1],
                           "p99_s": secs[min(len(secs) - 1, int(len(secs) * 0.99))], "p50_s": secs[len(secs) // 2],
                           "over_5s": sum(s > SLOW_TARGET_S for s in secs), "bad": len(bad), "answers": kinds}
                    rows.append(row)
                    print(f"slow Mifos X ({args.slow_delay:g} s/call), {args.workers} workers x {threads} threads, "
                          f"{n} callers at once: max {row['max_s']:.2f} s  p99 {row['p99_s']:.2f} s  "
                          f"p50 {row['p50_s']:.2f} s  over 5 s: {row['over_5s']}  not CON/END: {row['bad']}",
                          flush=True)
                    print(f"    answers: {kinds}", flush=True)
            finally:
                set_sim_faults(sim_base, None)
        finally:
            stop(p)
    print(f"\n=== Mifos X slow ({args.slow_delay:g} s per call): every caller answered within "
          f"{SLOW_TARGET_S:g} s, queueing included ===")
    print(f"{'threads':>8}{'callers':>8}{'max s':>8}{'p99 s':>8}{'p50 s':>8}{'>5 s':>6}{'bad':>5}")
    for r in rows:
        met = r["max_s"] <= SLOW_TARGET_S and not r["bad"]
        if r["threads"] == int(args.slow_threads.split(",")[-1]):
            ok &= met
        print(f"{r['threads']:>8}{r['callers']:>8}{r['max_s']:>8.2f}{r['p99_s']:>8.2f}{r['p50_s']:>8.2f}"
              f"{r['over_5s']:>6}{r['bad']:>5}  {'ok' if met else 'MISS'}")
    if args.json:
        args.json.write_text(json.dumps({"slow_mifos": rows, "delay": args.slow_delay, "cpus": os.cpu_count()},
                                        indent=2))
    return ok


def set_sim_faults(sim_base: str, faults: dict | None) -> None:
    req = urllib.request.Request(sim_base + "/__sim/faults", method="DELETE" if faults is None else "POST",
                                 data=None if faults is None else json.dumps(faults).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


# ---------------------------------------------------------------------------- report

def ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def report(results: dict, mem: dict | None, flows: dict | None, args) -> bool:
    ok = True
    print(f"\n=== USSD hop vs bare Flask+Redis: {args.concurrency} concurrent callers, "
          f"{args.workers} workers, {args.duration:.0f} s each, best of {args.repeat}, {os.cpu_count()} CPUs ===")
    print(f"{'server':<18}{'endpoint':<9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}")
    for name, res in results.items():
        for app in ("bare", "hop"):
            x = res[app]
            print(f"{name:<18}{app:<9}{x['rps']:>9.0f}{ms(x['p50_us']):>9}{ms(x['p99_us']):>9}"
                  f"{ms(x['max_us']):>9}{x['errors']:>8}")
    target = f"(>={TARGET_RATIO:.2f})"
    print(f"\n{'server':<18}{'hop/bare':>9}{target:>10}{'hop p99':>9}{'(<=20ms)':>10}")
    for name, res in results.items():
        ratio = res["hop"]["rps"] / res["bare"]["rps"]
        p99 = res["hop"]["p99_us"] / 1000
        r_ok, p_ok = ratio >= TARGET_RATIO, p99 <= TARGET_P99_MS
        ok &= r_ok and p_ok
        res["ratio"] = ratio
        print(f"{name:<18}{ratio:>9.2f}{'ok' if r_ok else 'MISS':>10}{p99:>9.2f}{'ok' if p_ok else 'MISS':>10}")
    if len(results) > 1:
        best_bare = max(results, key=lambda n: results[n]["bare"]["rps"])
        best_hop = max(results, key=lambda n: results[n]["hop"]["rps"])
        print(f"\nfastest for hops: {best_hop}; hop/s relative to it: " + ", ".join(
            f"{n} {results[n]['hop']['rps'] / results[best_hop]['hop']['rps']:.2f}" for n in results)
            + f"  (bare: fastest {best_bare})")
    if mem:
        per = mem["memory_usage_mean"]
        m_ok = per <= TARGET_SESSION_BYTES and mem["memory_usage_max"] <= TARGET_SESSION_BYTES
        ok &= m_ok
        print(f"\n=== Redis memory per live session ({mem['sessions']} sessions, {mem['keys']} keys, TTL {mem['ttl']} s) ===")
        print(f"  MEMORY USAGE per session key: mean {per:.0f} B, max {mem['memory_usage_max']} B "
              f"-> {per / TARGET_SESSION_BYTES:.2f} of the 1 KB target ({'ok' if m_ok else 'MISS'})")
        print(f"  INFO used_memory delta / sessions: {mem['per_session_info']:.0f} B "
              f"(server-wide figure; other clients of this Redis add noise)")
        print(f"  JSON value: mean {mem['value_bytes_mean']:.0f} B, max {mem['value_bytes_max']} B; biggest:")
        print(f"    {mem['biggest_value']}")
    if flows:
        f_ok = flows["cold_s"] < TARGET_FLOWS_S
        ok &= f_ok
        print(f"\n=== Load and validate flows: {flows['flows']} flows ({flows['files']} files) ===")
        print(f"  cold {flows['cold_s'] * 1000:.0f} ms (warm {flows['warm_s'] * 1000:.0f} ms) "
              f"-> {flows['cold_s'] / TARGET_FLOWS_S:.2f} of the 1 s target ({'ok' if f_ok else 'MISS'})")
    return ok


# ---------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    global _deadline
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", default="granian,granian-bt1,gunicorn-sync,gunicorn-gthread",
                    help=f"comma-separated, from {', '.join(SERVERS)}")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="processes per server")
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent callers (wrk threads = connections)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    ap.add_argument("--repeat", type=int, default=1,
                    help="alternating bare/hop runs per server; the best of each is reported (noisy machines)")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load before each run")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379", help="Redis server (no DB number)")
    ap.add_argument("--redis-db", type=int, default=14, help="dedicated DB number, flushed before and after")
    ap.add_argument("--sessions", type=int, default=1200, help="live sessions for the memory figure (0 = skip)")
    ap.add_argument("--flows", type=int, default=100, help="flow copies for the load figure (0 = skip)")
    ap.add_argument("--profile", action="store_true", help="profile hops in-process after the runs")
    ap.add_argument("--profile-only", action="store_true", help="only the in-process profile (no servers)")
    ap.add_argument("--profile-hops", type=int, default=600)
    ap.add_argument("--flows-reload", type=float, default=2.0, help="CONVO_FLOWS_RELOAD_SECONDS for the app")
    ap.add_argument("--json", type=Path, help="also write all figures to this file")
    ap.add_argument("--max-seconds", type=float, default=600.0, help="hard bound on the whole run")
    ap.add_argument("--slow-mifos", action="store_true",
                    help="only the slow Mifos X case: callers dialling at once against `convo serve`")
    ap.add_argument("--slow-delay", type=float, default=2.0, help="seconds Mifos X takes per call")
    ap.add_argument("--slow-callers", default="24,100", help="comma-separated numbers of simultaneous first hops")
    ap.add_argument("--slow-threads", default=str(SERVE_THREADS),
                    help="comma-separated `convo serve --threads` values to compare (the last one is judged)")
    ap.add_argument("--flow-stats", choices=("on", "off"), default="on",
                    help="CONVO_FLOW_STATS of the hop server (the drop-off counts; on by default, as shipped)")
    ap.add_argument("--switch-interval", type=float, default=0.0,
                    help="sys.setswitchinterval(S) in every server process, bare and hop alike (0: Python's 5 ms)")
    ap.add_argument("--stats-cost", action="store_true",
                    help="only the drop-off counting's cost: hop server with CONVO_FLOW_STATS off vs on")
    args = ap.parse_args(argv)
    _deadline = time.monotonic() + args.max_seconds
    signal.alarm(int(args.max_seconds) + 30)           # last resort if something hangs outside our checks

    servers = []
    for name in args.servers.split(","):
        if name.strip() not in SERVERS:
            raise BenchError(f"unknown server {name!r}; choose from {', '.join(SERVERS)}")
        servers.append(SERVERS[name.strip()])
    if shutil.which("wrk") is None and not args.slow_mifos:
        raise BenchError("wrk is not installed (apt-get install -y wrk)")
    for s in servers:
        if not (Path(sys.executable).parent / s.kind).exists():
            raise BenchError(f"{s.kind} is not installed in {Path(sys.executable).parent}")

    r = redis_client(args.redis_url, args.redis_db)
    try:
        r.ping()
    except Exception as e:  # noqa: BLE001
        raise BenchError(f"Redis at {args.redis_url} does not answer ({e}); start it (redis-server)") from None
    r.flushdb()

    logdir = Path(tempfile.mkdtemp(prefix="convo-bench-logs-"))
    print(f"logs: {logdir}")
    sim_port = free_port()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVO_", "GRANIAN_", "GUNICORN_"))}
    site = []
    if args.switch_interval:                        # a sitecustomize the servers' interpreters run at start
        (logdir / "site").mkdir()
        (logdir / "site" / "sitecustomize.py").write_text(f"import sys\nsys.setswitchinterval({args.switch_interval!r})\n")
        site = [str(logdir / "site")]
        print(f"servers run with sys.setswitchinterval({args.switch_interval:g})")
    base_env["PYTHONPATH"] = os.pathsep.join(filter(None, [*site, str(REPO), base_env.get("PYTHONPATH")]))
    sim = spawn([str(Path(sys.executable).parent / "convo"), "fineract-sim", "--port", str(sim_port)],
                base_env, logdir / "fineract-sim.log")
    wait_port(sim, sim_port, "Fineract simulator")
    env = {**base_env,
           "CONVO_REDIS_URL": f"{args.redis_url.rstrip('/')}/{args.redis_db}",
           "CONVO_FINERACT_URL": f"http://127.0.0.1:{sim_port}/fineract-provider/api/v1",
           "CONVO_FINERACT_USER": "mifos", "CONVO_FINERACT_PASSWORD": "password",
           "CONVO_CLIENT_CACHE_TTL": "3600", "CONVO_FIGURES_CACHE_TTL": "3600",
           "CONVO_FLOWS_RELOAD_SECONDS": str(args.flows_reload),
           # per-phone abuse limits would stop a load test of six phones; a migrated database of its own
           "CONVO_USSD_SESSIONS_PER_HOUR": "0", "CONVO_SMS_INBOUND_PER_HOUR": "0",
           "CONVO_DATABASE_URL": f"sqlite:///{logdir}/bench.db",
           "CONVO_FLOW_STATS": "true" if args.flow_stats == "on" else "false"}
    from convo.store.db import upgrade
    upgrade(env["CONVO_DATABASE_URL"])

    if args.profile_only:
        profile_hop(env, args.profile_hops)
        r.flushdb()
        return 0
    if args.stats_cost:
        ip = stats_cost_inprocess(env)
        ok = stats_cost(servers[0], env, args, logdir, r) and ip["cpu_us_off"] / ip["cpu_us_on"] >= 0.95
        r.flushdb()
        return 0 if ok else 1
    if args.slow_mifos:
        ok = slow_mifos(env, args, logdir, f"http://127.0.0.1:{sim_port}", r)
        r.flushdb()
        return 0 if ok else 1
    flows = flows_load(args.flows) if args.flows else None
    if flows:
        print(f"flows: {flows['flows']} loaded in {flows['cold_s'] * 1000:.0f} ms")

    results: dict[str, dict] = {}
    for i, server in enumerate(servers):
        r.flushdb()
        results[server.name] = measure_server(server, env, args, logdir, i, r)

    mem = session_memory(servers[0], env, args, logdir, r) if args.sessions else None
    ok = report(results, mem, flows, args)
    if any(x["errors"] for res in results.values() for a in ("bare", "hop") for x in res["runs"][a]):
        print("\nWARNING: some requests failed or answered unexpectedly (see 'errors'); logs in", logdir)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "session_memory": mem, "flows": flows,
                                         "workers": args.workers, "concurrency": args.concurrency,
                                         "duration": args.duration, "cpus": os.cpu_count()}, indent=2))
    if args.profile:
        r.flushdb()
        profile_hop(env, args.profile_hops)
    r.flushdb()
    print("\nall targets met" if ok else "\nsome targets missed (see MISS above)")
    return 0 if ok else 1


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    signal.signal(signal.SIGALRM, _on_signal)
    try:
        code = main()
    except BenchError as e:
        print(f"\nbench failed: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    finally:
        stop_all()
    sys.exit(code)
