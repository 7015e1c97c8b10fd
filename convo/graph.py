"""Mermaid diagrams drawn from a compiled flow's shared machine."""
from __future__ import annotations

from convo.compiler import CompiledFlow


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
