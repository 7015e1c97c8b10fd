"""Cycles of states that never wait for input (the engine would spin until its step limit)."""
from __future__ import annotations

from convo.flowlang.checks import flow_check
from convo.flowlang.checks.reachable import edges
from convo.flowlang.spec import FlowError, FlowSpec


@flow_check
def loops_without_input(spec: FlowSpec, specs: dict[str, FlowSpec], errors: list[FlowError]) -> None:
    states, out = spec.states, edges(spec)
    auto = {n for n, s in states.items() if not s.waits_for_input}
    colour: dict[str, int] = {}

    def dfs(n: str, path: list[str]) -> None:
        colour[n] = 1
        for t in out[n]:
            if t not in auto:
                continue
            if colour.get(t) == 1:
                cyc = path[path.index(t):] + [t] if t in path else [n, t]
                errors.append(FlowError(spec.where(t), "loop without input: " + " -> ".join(cyc)))
            elif t not in colour:
                dfs(t, path + [t])
        colour[n] = 2

    for n in auto:
        if n not in colour:
            dfs(n, [n])
