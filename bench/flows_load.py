"""Time to load and validate 100 flows (DESIGN.md target: < 1 s), lint included.

    .venv/bin/python bench/flows_load.py              # this tree
    .venv/bin/python bench/flows_load.py --repo /tmp/old-tree   # the same measure on another checkout

The flow set is the shipped flows plus renamed copies of main.yaml, balance.yaml and
repay.yaml (menus, sub-flows, actions, PIN guard, locale texts) up to ``--flows`` flows.
Prints the cold load (first in the process: YAML, validation, variable analysis, every text
rendered in every language, machines) and the best of ``--repeat`` warm loads, wall clock and
CPU time of the process (on a shared, busy machine compare the CPU times).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--flows", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    sys.path.insert(0, str(args.repo))
    from convo.flowlang.compiler import load_flowset

    src = args.repo / "flows"
    with tempfile.TemporaryDirectory(prefix="convo-bench-flows-") as tmp:
        d = Path(tmp) / "flows"
        shutil.copytree(src, d, ignore=shutil.ignore_patterns("tests"))
        shipped = len(load_flowset(d).flows)
        models = [(n, (src / f"{n}.yaml").read_text(encoding="utf-8")) for n in ("main", "balance", "repay")]
        for i in range(max(0, args.flows - shipped)):
            name, text = models[i % len(models)]
            text = re.sub(rf"(?m)^flow:\s*{name}\s*$", f"flow: {name}_{i:03d}", text, count=1)
            (d / f"{name}_{i:03d}.yaml").write_text(text, encoding="utf-8")
        t0, c0 = time.perf_counter(), time.process_time()
        fs = load_flowset(d)
        cold, cold_cpu = time.perf_counter() - t0, time.process_time() - c0
        warm, warm_cpu = [], []
        for _ in range(args.repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            load_flowset(d)
            warm.append(time.perf_counter() - t0)
            warm_cpu.append(time.process_time() - c0)
    out = {"repo": str(args.repo), "flows": len(fs.flows), "cold_s": round(cold, 3), "warm_s": round(min(warm), 3),
           "cold_cpu_s": round(cold_cpu, 3), "warm_cpu_s": round(min(warm_cpu), 3), "target_s": 1.0}
    print(json.dumps(out))
    sys.exit(0 if cold < 1.0 else 1)


if __name__ == "__main__":
    main()
