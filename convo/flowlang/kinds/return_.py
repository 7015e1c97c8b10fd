"""``return:``: end a sub-flow, handing an outcome back to the calling ``flow:`` state."""
from __future__ import annotations

from convo.flowlang.kinds import FlowRuntimeError, Kind, register
from convo.flowlang.spec import NAME_RE


@register
class Return(Kind):
    key = "return"

    def parse(self, st, p):
        out = p.d["return"]
        if not isinstance(out, str) or not NAME_RE.match(out):
            p.error(p.line_of("return"), "'return:' must name the outcome handed back to the calling flow")
        st.outcome = out

    def exits(self, st, specs):
        return True

    def run(self, turn, cf, st):
        conv = turn.conv
        if not conv.stack:
            raise FlowRuntimeError(f"flow {conv.flow} returned with no caller")
        conv.enter(*conv.stack.pop())
        turn.fire(turn.fs.flows[conv.flow], st.outcome)
        return True
