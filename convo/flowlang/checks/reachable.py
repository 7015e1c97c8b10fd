"""States no path from the flow's start reaches."""
from __future__ import annotations

from convo.flowlang.checks import flow_check
from convo.flowlang.spec import FlowError, FlowSpec


def edges(spec: FlowSpec) -> dict[str, list[str]]:
    """state -> the states of the same flow it can go to."""
    states = spec.states
    return {n: [t for t, _ in s.targets() if t in states] for n, s in states.items()}


def reached(spec: FlowSpec) -> set[str]:
    """The states some path from the start reaches."""
    states, out = spec.states, edges(spec)
    seen, todo = set(), [spec.start]
    while todo:
        n = todo.pop()
        if n in seen or n not in states:
            continue
        seen.add(n)
        todo.extend(out[n])
    return seen


@flow_check
def unreachable_states(spec: FlowSpec, specs: dict[str, FlowSpec], errors: list[FlowError]) -> None:
    seen = reached(spec)
    for n in spec.states:
        if n not in seen:
            errors.append(FlowError(spec.where(n),
                                    f"state '{n}' cannot be reached from the start state '{spec.start}'"))
