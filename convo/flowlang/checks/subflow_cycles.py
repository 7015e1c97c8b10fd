"""A flow that calls itself, directly or through other flows (``flow:`` states)."""
from __future__ import annotations

from convo.flowlang.checks import spec_check
from convo.flowlang.spec import FlowError, FlowSpec


@spec_check
def subflow_cycles(specs: dict[str, FlowSpec], errors: list[FlowError]) -> None:
    calls = {n: [(s.subflow, s) for s in sp.states.values() if s.kind == "flow"] for n, sp in specs.items()}

    def visit(n: str, path: list[str]) -> None:
        for sub, st in calls.get(n, ()):
            if sub in path:
                errors.append(FlowError(specs[n].where(st.name), f"sub-flow cycle: {' -> '.join(path + [sub])}"))
            elif sub in calls:
                visit(sub, path + [sub])

    for n in specs:
        visit(n, [n])
    # report each cycle once per starting point is enough; duplicates are harmless
