"""Reachable states from which no path ever leaves the flow (an ``end:``, a ``return:``, a sub-flow that ends)."""
from __future__ import annotations

from convo.flowlang.checks import flow_check
from convo.flowlang.checks.reachable import edges, reached
from convo.flowlang.kinds import kind_of
from convo.flowlang.spec import FlowError, FlowSpec


@flow_check
def dead_ends(spec: FlowSpec, specs: dict[str, FlowSpec], errors: list[FlowError]) -> None:
    states = spec.states
    rev: dict[str, list[str]] = {n: [] for n in states}
    for n, ts in edges(spec).items():
        for t in ts:
            rev[t].append(n)
    good, todo = set(), [n for n, s in states.items() if kind_of(s).exits(s, specs)]
    while todo:
        n = todo.pop()
        if n in good:
            continue
        good.add(n)
        todo.extend(rev[n])
    seen = reached(spec)
    for n in states:
        if n not in good and n in seen:
            errors.append(FlowError(spec.where(n),
                                    f"dead end: no path from state '{n}' ever reaches an 'end:' or 'return:'"))
