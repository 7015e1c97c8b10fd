"""``flow:``: call another flow (a sub-flow) with ``with:`` variables; go on by what it ``return:``s (``on:``)."""
from __future__ import annotations

from convo.actions.shapes import shape_of_value
from convo.flowlang.kinds import Kind, register


@register
class Flow(Kind):
    key = "flow"
    keys = frozenset({"with", "on"})

    def parse(self, st, p):
        st.subflow = p.d["flow"] if isinstance(p.d["flow"], str) else None
        if st.subflow is None:
            p.error(p.line_of("flow"), "'flow:' must name a flow")
        p.params()
        p.on_map(optional=True)       # a sub-flow that only ends (never returns) needs no 'on:'

    def compile(self, st, b):
        b.params(st)
        sub = b.specs.get(st.subflow)
        if sub is None:
            b.err(st, f"unknown flow '{st.subflow}'")
        else:
            outs = sub.outcomes
            for o in outs - set(st.on):
                b.err(st, f"outcome '{o}' of flow '{st.subflow}' has no next state in 'on:'")
            for o in set(st.on) - outs:
                returns = ", ".join(sorted(outs)) or "nothing"
                b.err(st, f"flow '{st.subflow}' never returns '{o}' (it returns: {returns})", st.on_lines.get(o))
        for o, target in st.on.items():
            b.transition(o, st.name, target)

    def exits(self, st, specs):
        sub = specs.get(st.subflow)
        return bool(sub) and any(x.kind == "end" for x in sub.states.values())

    def var_edges(self, st, env, flow):
        with_vars = {k: shape_of_value(v) for k, v in st.params.items()}
        call_env = {**env, **with_vars}
        flow.call(st.subflow, call_env)
        for outcome, target in st.on.items():
            added = flow.returned(st.subflow, outcome)
            if added is None:
                continue                      # the sub-flow's result is not known yet (next round)
            yield target, {**call_env, **added}

    def sets(self, st, actions):
        return [(var, f"'with:' of state '{st.name}'", None) for var in st.params]

    def run(self, turn, cf, st):
        conv = turn.conv
        conv.stack.append([conv.flow, conv.state])
        conv.vars.update(cf.bind(st, turn.tctx()))
        conv.enter(st.subflow, turn.fs.flows[st.subflow].spec.start)
        return True
