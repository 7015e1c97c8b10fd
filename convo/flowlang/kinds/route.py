"""``route:``: go on by the first ``if:`` condition that holds, else by the ``else:`` clause."""
from __future__ import annotations

from collections.abc import Callable

from convo.flowlang.kinds import Kind, register
from convo.flowlang.spec import Clause


def route_condition(expr: Callable) -> Callable:
    """A transition condition: the compiled ``if:`` against the conversation's variables."""
    def check(event) -> bool:
        return bool(expr(**event.kwargs["ctx"]))
    return check


@register
class Route(Kind):
    key = "route"

    def parse(self, st, p):
        clauses = p.d["route"]
        if not isinstance(clauses, list) or not clauses:
            p.error(p.line_of("route"), "'route:' must be a list of 'if:'/'next:' clauses ending with 'else:'")
            return
        for i, c in enumerate(clauses):
            cline = clauses.item_lines[i]
            if (isinstance(c, dict) and set(c) == {"if", "next"}
                    and isinstance(c["if"], str) and isinstance(c["next"], str)):
                st.routes.append(Clause(c["if"], c["next"], cline))
            elif isinstance(c, dict) and set(c) == {"else"} and isinstance(c["else"], str):
                st.routes.append(Clause(None, c["else"], cline))
            else:
                p.error(cline,
                        f"route clause {i + 1} must be 'if: <condition>' with 'next: <state>', or 'else: <state>'")
        if st.routes and st.routes[-1].when is not None:
            p.error(p.line_of("route"), "a route must end with an 'else:' clause")
        if any(c.when is None for c in st.routes[:-1]):
            p.error(p.line_of("route"), "'else:' must be the last clause of a route")

    def compile(self, st, b):
        for i, c in enumerate(st.routes):
            conditions = None
            if c.when is not None:
                fn = b.cond(st, c.when, c.line)
                if fn:
                    conditions = f"route:{st.name}:{i}"
                    b.callables[conditions] = route_condition(fn)
            b.transition("route", st.name, c.next, conditions=conditions)

    def var_edges(self, st, env, flow):
        for c in st.routes:
            yield c.next, env

    def run(self, turn, cf, st):
        turn.fire(cf, "route", ctx=turn.tctx())
        return True
