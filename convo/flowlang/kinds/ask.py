"""``ask:``: a question whose answer, once valid (``validate:``), is saved in a variable (``save:``)."""
from __future__ import annotations

import re

from convo.actions.shapes import Leaf
from convo.flowlang.kinds import Kind, register
from convo.flowlang.spec import NAME_RE, VALIDATORS
from convo.flowlang.validators import validate

#: the validators' own keys, kept in ``st.validate`` beside ``type``
VALIDATOR_KEYS = ("min", "max", "min_length", "max_length", "pattern", "choices")


@register
class Ask(Kind):
    key = "ask"
    keys = frozenset({"validate", *VALIDATOR_KEYS, "save", "next", "error", "secret"})
    waits_for_input = True

    def parse(self, st, p):
        d, line = p.d, p.line
        st.text = p.text("ask")
        st.error = p.text("error", required=False)
        st.next = p.target("next")
        save = d.get("save")
        if not isinstance(save, str) or not NAME_RE.match(save):
            p.error(p.line_of("save"), "'save:' must name the variable that keeps the answer")
        st.save = save
        v = d.get("validate", "text")
        if v not in VALIDATORS:
            p.error(p.line_of("validate"), f"unknown validator {v!r} (use one of: {', '.join(VALIDATORS)})")
        st.validate = {"type": v}
        for k in VALIDATOR_KEYS:
            if k in d:
                st.validate[k] = d[k]
        if v == "regex":
            pat = d.get("pattern")
            try:
                re.compile(pat)
            except (re.error, TypeError):
                p.error(p.line_of("pattern"), f"'pattern:' {pat!r} is not a valid regular expression")
        if v == "choice" and (not isinstance(d.get("choices"), list) or not d.get("choices")):
            p.error(p.line_of("choices", line), "the choice validator needs 'choices:' (a list)")
        st.secret = bool(d.get("secret", v == "pin"))

    def compile(self, st, b):
        b.transition("answer", st.name, st.next, before="save")

    def var_edges(self, st, env, flow):
        t = {"amount": "amount", "digits": "number", "pin": "secret"}.get(st.validate.get("type"), "text")
        yield st.next, {**env, st.save: Leaf(t)} if st.save else env

    def sets(self, st, actions):
        return [(st.save, f"the answer to state '{st.name}'", None)] if st.save else []

    def secret(self, st):
        return st.secret

    def feed(self, turn, cf, st, raw):
        tctx = turn.tctx()
        ok, value = validate(st.validate, raw)
        if not ok:
            return turn.error(cf, st)
        if st.secret:
            turn.conv.secrets.add(st.save)
        turn.fire(cf, "answer", var=st.save, value=value, ctx=tctx)
        return None
