"""``end:``: the last screen; the dialog (and a USSD session) closes on it."""
from __future__ import annotations

from convo.flowlang.kinds import Kind, register


@register
class End(Kind):
    key = "end"
    ends_dialog = True

    def parse(self, st, p):
        st.text = p.text("end")
