"""``do:``: run an action (:mod:`convo.actions`) with ``with:`` parameters and go on by its outcome (``on:``)."""
from __future__ import annotations

from convo.actions.shapes import ANY
from convo.flowlang.kinds import FlowRuntimeError, Kind, register
from convo.flowlang.varcheck import OPEN

#: actions that read a client's data from Mifos X: every call is written to the audit log
AUDITED_ACTION_MODULES = frozenset({"convo.actions.mifos", "convo.actions.repay"})
UNAUDITED_ACTIONS = frozenset({"identify_caller"})    # every dial identifies the caller; reveals nothing


@register
class Do(Kind):
    key = "do"
    keys = frozenset({"with", "on"})

    def parse(self, st, p):
        st.action = p.d["do"] if isinstance(p.d["do"], str) else None
        if st.action is None:
            p.error(p.line_of("do"), "'do:' must name an action")
        p.params()
        p.on_map()

    def compile(self, st, b):
        b.params(st)
        a = b.actions.get(st.action)
        if a is None:
            b.err(st, f"unknown action '{st.action}' (known: {', '.join(sorted(b.actions))})")
        else:
            b.bound_actions[st.name] = a
            for o in a.outcomes:
                if o not in st.on:
                    b.err(st, f"outcome '{o}' of action '{a.name}' has no next state in 'on:'")
            for o in st.on:
                if o not in a.outcomes:
                    b.err(st, f"action '{a.name}' has no outcome '{o}' (it has: {', '.join(a.outcomes)})",
                          st.on_lines.get(o))
            for p, required in a.params.items():
                if required and p not in st.params:
                    b.err(st, f"action '{a.name}' needs parameter '{p}' in 'with:'")
            for p in st.params:
                if p not in a.params:
                    b.err(st, f"action '{a.name}' has no parameter '{p}' (it takes: {', '.join(a.params) or 'none'})")
        for o, target in st.on.items():
            b.transition(o, st.name, target)

    def var_edges(self, st, env, flow):
        a = flow.actions.get(st.action)
        for outcome, target in st.on.items():
            out = dict(env)
            if a is not None and not a.declared:
                out[OPEN] = ANY                # an undeclared action may set anything: names are not checked
            if a is not None:
                for var, (shape, outs) in a.provides.items():
                    if outs is None or outcome in outs:
                        out[var] = shape
            yield target, out

    def sets(self, st, actions):
        if st.action not in actions:
            return []
        return [(var, f"action '{st.action}' in state '{st.name}'", None) for var in actions[st.action].provides]

    def run(self, turn, cf, st):
        conv, ctx = turn.conv, turn.ctx
        a = cf.actions[st.name]
        ctx.lang = conv.lang
        outcome = a.fn(ctx, **cf.bind(st, turn.tctx()))
        conv.lang = ctx.lang
        if a.fn.__module__ in AUDITED_ACTION_MODULES and a.name not in UNAUDITED_ACTIONS:
            acc = conv.vars.get("account")
            ctx.events.append({"action": f"data.{a.name}", "outcome": outcome,
                               "detail": {"flow": conv.flow,
                                          "account": acc.get("id") if isinstance(acc, dict) else None}})
        if outcome not in st.on:
            raise FlowRuntimeError(f"action {a.name} returned unknown outcome {outcome!r}")
        turn.fire(cf, outcome)
        return True
