"""Mermaid diagrams drawn from a compiled flow's shared machine."""
from __future__ import annotations

from convo.flowlang.compiler import CompiledFlow


def mermaid(cf: CompiledFlow) -> str:
    """``stateDiagram-v2`` text: one arrow per transition of the machine, labelled by its trigger."""
    spec = cf.spec
    lines = ["stateDiagram-v2", f"    [*] --> {spec.start}"]
    for name, st in spec.states.items():
        kind = st.action or st.subflow or st.outcome or st.kind
        lines.append(f"    {name}: {name} ({st.kind}{'' if kind == st.kind else ' ' + kind})")
    for trigger, event in cf.machine.events.items():
        for source, transitions in event.transitions.items():
            for t in transitions:
                label = trigger
                if trigger.startswith("opt"):
                    label = f"{trigger[3:]}"
                lines.append(f"    {source} --> {t.dest}: {label}")
    for name, st in spec.states.items():
        if st.kind in ("end", "return"):
            lines.append(f"    {name} --> [*]")
    return "\n".join(lines)


def edges(cf: CompiledFlow) -> list[tuple[str, str, str]]:
    """``(source, dest, label)`` for every transition of the machine: a menu option by its number, an
    action or sub-flow by its outcome, ``answer``/``choose``/``route`` as they are."""
    out = []
    for trigger, event in cf.machine.events.items():
        for source, transitions in event.transitions.items():
            for t in transitions:
                if t.dest is None:      # an internal transition: the compiler makes none
                    continue
                out.append((source, t.dest, trigger[3:] if trigger.startswith("opt") else trigger))
    return out


def layers(cf: CompiledFlow) -> list[list[str]]:
    """The states in rows, breadth first from the start (a state's row: fewest steps to reach it);
    states nothing reaches come last. Within a row, states keep the order of the flow file."""
    order = list(cf.spec.states)
    nxt: dict[str, list[str]] = {}
    for s, d, _ in edges(cf):
        nxt.setdefault(s, []).append(d)
    depth = {cf.spec.start: 0}
    queue = [cf.spec.start]
    for s in queue:
        for d in sorted(nxt.get(s, ()), key=order.index):
            if d not in depth:
                depth[d] = depth[s] + 1
                queue.append(d)
    rows: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
    for name in order:
        if name in depth:
            rows[depth[name]].append(name)
    rest = [n for n in order if n not in depth]
    return rows + ([rest] if rest else [])
