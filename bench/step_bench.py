"""In-process cost of one USSD hop (``Engine.handle``) in this tree against another checkout.

    .venv/bin/python bench/step_bench.py --baseline /tmp/old-tree          # ratio this/baseline
    .venv/bin/python bench/step_bench.py --baseline /tmp/old-tree --rounds 5 --hops 3000

Each measure runs in its own process (``--child``): the Fineract simulator, an in-memory Redis
(``memory://``), a throwaway SQLite, the shipped flows; the dialogs of ``bench/ussd_bench.py``
(``DIALOGS``: menu, a wrong choice, sub-flows, the next meeting) warmed once, then ``--hops`` hops
timed (CPU time of the process and wall clock). The two trees run ``--rounds`` times, taking turns
to go first; the median of each is printed with the ratio this tree / baseline (1.00 = same cost).
No network, no shared Redis or database is touched. Nothing is asserted: a ratio is read, not a timing.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(repo: Path, hops: int) -> dict:
    sys.path.insert(0, str(repo))
    sys.path.insert(1, str(HERE))
    from ussd_bench import DIALOGS

    from convo.cli import start_simulator
    from convo.config import Settings
    from convo.dialog.engine import Inbound
    from convo.services import build_services
    from convo.store.db import upgrade

    sim = start_simulator()
    tmp = tempfile.mkdtemp(prefix="convo-step-bench-")
    settings = Settings().replace(
        env="development", fineract_url=f"{sim.url}/fineract-provider/api/v1", fineract_user="mifos",
        fineract_password="password", fineract_tenant="default", flows_dir=str(repo / "flows"),
        redis_url="memory://step-bench", database_url=f"sqlite:///{tmp}/bench.db", flows_reload_tests=False,
        ussd_sessions_per_hour=0, client_cache_ttl=3600, figures_cache_ttl=3600)
    sv = build_services(settings)
    upgrade(sv.db)

    def msgs(tag: str, n: int) -> list:
        out, i = [], 0
        while len(out) < n:
            for k, (phone, steps) in enumerate(DIALOGS):
                out += [Inbound("ussd", "africastalking", f"{tag}_{i}_{k}", phone, t, "*384*12#") for t in steps]
            i += 1
        return out[:n]

    for m in msgs("warm", 200):
        sv.engine.handle(m)
    batch = msgs("t", hops)
    c0, w0 = time.process_time(), time.perf_counter()
    for m in batch:
        sv.engine.handle(m)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"cpu_us": cpu / hops * 1e6, "wall_us": wall / hops * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", type=Path, required=False)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hops", type=int, default=2000)
    ap.add_argument("--child", type=Path)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.hops)))
        return
    trees = {"this": HERE.parent}
    if args.baseline:
        trees = {"baseline": args.baseline, **trees}
    res: dict[str, list[dict]] = {k: [] for k in trees}
    for r in range(args.rounds):
        order = list(trees.items())
        for name, repo in order if r % 2 == 0 else order[::-1]:     # alternate who goes first
            out = subprocess.run([sys.executable, __file__, "--child", str(repo), "--hops", str(args.hops)],
                                 cwd=repo, capture_output=True, text=True, check=True,
                                 env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"})
            res[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("cpu_us", "wall_us")} for k, v in res.items()}
    for k, m in med.items():
        print(f"{k:9} {m['cpu_us']:8.0f} us CPU/hop  {m['wall_us']:8.0f} us wall/hop   ({args.rounds} x {args.hops} hops)")
    if args.baseline:
        print(f"ratio this/baseline: CPU {med['this']['cpu_us'] / med['baseline']['cpu_us']:.2f}, "
              f"wall {med['this']['wall_us'] / med['baseline']['wall_us']:.2f}")


if __name__ == "__main__":
    main()
