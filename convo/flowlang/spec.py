"""YAML flow files -> validated, plain-data flow specs, with file:line:state errors.

A flow file is a mapping with a ``states:`` mapping; each state has exactly one
*kind* key (``menu``, ``ask``, ``do``, ``route``, ``flow``, ``end``/``return``).
This module only checks shape (schema, unknown keys, types) and records where
every state and key was written. Cross-references (targets, actions, outcomes,
locale keys, reachability, loops) are checked by :mod:`convo.flowlang.compiler`, which
sees all flows at once. flows.md documents the language for product managers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convo.yamlfiles import FlowError, FlowValidationError, Where, line_of, load_yaml

__all__ = ["FlowError", "FlowValidationError", "Where", "line_of", "load_yaml"]  # re-exported: flow code imports them here

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
KINDS = ("menu", "ask", "do", "route", "flow", "end", "return")
VALIDATORS = ("digits", "amount", "pin", "regex", "choice", "text")

# keys allowed per kind (besides the kind key itself)
_COMMON = {"note"}
_ALLOWED = {
    "menu": {"options", "choose", "error"},
    "ask": {"validate", "min", "max", "min_length", "max_length", "pattern", "choices",
            "save", "next", "error", "secret"},
    "do": {"with", "on"},
    "route": set(),
    "flow": {"with", "on"},
    "end": set(),
    "return": set(),
}
_FLOW_KEYS = {"flow", "description", "start", "settings", "states"}


# --------------------------------------------------------------------------- spec
Text = Any  # str (locale key or inline template) or {lang: template}


@dataclass
class Option:
    label: Text
    next: str
    when: str | None
    line: int


@dataclass
class Choose:
    source: str          # variable holding the list
    label: Text          # template with ``item``
    save: str
    next: str
    line: int


@dataclass
class Clause:
    when: str | None     # None = else
    next: str
    line: int


@dataclass
class State:
    name: str
    kind: str
    line: int
    text: Text = None                       # menu title / ask prompt / end text
    options: list[Option] = field(default_factory=list)
    choose: Choose | None = None
    validate: dict = field(default_factory=dict)
    save: str | None = None
    next: str | None = None
    error: Text = None
    secret: bool = False
    action: str | None = None               # do
    subflow: str | None = None              # flow
    params: dict = field(default_factory=dict)
    on: dict[str, str] = field(default_factory=dict)
    on_lines: dict[str, int] = field(default_factory=dict)
    routes: list[Clause] = field(default_factory=list)
    outcome: str | None = None              # return

    @property
    def waits_for_input(self) -> bool:
        return self.kind in ("menu", "ask")

    def targets(self) -> list[tuple[str, int]]:
        """(target state, line) for every transition out of this state."""
        out = [(o.next, o.line) for o in self.options]
        if self.choose:
            out.append((self.choose.next, self.choose.line))
        if self.next:
            out.append((self.next, self.line))
        out += [(t, self.on_lines.get(k, self.line)) for k, t in self.on.items()]
        out += [(c.next, c.line) for c in self.routes]
        return out


@dataclass
class FlowSpec:
    name: str
    file: str
    start: str
    states: dict[str, State]
    settings: dict
    description: str = ""
    line: int = 1

    def where(self, state: str | None = None, line: int | None = None) -> Where:
        if line is None:
            line = self.states[state].line if state in self.states else self.line
        return Where(self.file, line, state)

    @property
    def outcomes(self) -> set[str]:
        return {s.outcome for s in self.states.values() if s.kind == "return"}


# --------------------------------------------------------------------------- parsing
class _Errors:
    def __init__(self, file: str):
        self.file = file
        self.items: list[FlowError] = []

    def add(self, line: int, state: str | None, msg: str) -> None:
        self.items.append(FlowError(Where(self.file, line, state), msg))


def _is_text(v: Any) -> bool:
    if isinstance(v, str):
        return True
    return isinstance(v, dict) and bool(v) and all(isinstance(k, str) and isinstance(t, str) for k, t in v.items())


def parse_flow(text: str, file: str) -> FlowSpec:
    """Parse one flow file. Raises FlowValidationError listing every shape problem."""
    errs = _Errors(file)
    try:
        doc = load_yaml(text, file)
    except FlowError as e:
        raise FlowValidationError([e]) from None
    if not isinstance(doc, dict):
        raise FlowValidationError([FlowError(Where(file, line_of(doc)), "a flow file must be a mapping with 'states:'")])
    for key in doc:
        if key not in _FLOW_KEYS:
            errs.add(line_of(doc, key), None, f"unknown key '{key}' (allowed: {', '.join(sorted(_FLOW_KEYS))})")
    name = doc.get("flow") or Path(file).stem
    if not isinstance(name, str) or not NAME_RE.match(name):
        errs.add(line_of(doc, "flow"), None, f"flow name {name!r} must be lower_case letters, digits and _")
    states_doc = doc.get("states")
    if not isinstance(states_doc, dict) or not states_doc:
        errs.add(line_of(doc, "states"), None, "'states:' must be a non-empty mapping of state name -> definition")
        raise FlowValidationError(errs.items)
    settings = doc.get("settings") or {}
    if not isinstance(settings, dict):
        errs.add(line_of(doc, "settings"), None, "'settings:' must be a mapping")
        settings = {}
    states: dict[str, State] = {}
    for sname, sdef in states_doc.items():
        line = line_of(states_doc, sname)
        if not NAME_RE.match(sname):
            errs.add(line, sname, "state names are lower_case letters, digits and _")
        st = _parse_state(sname, sdef, line, errs)
        if st:
            states[sname] = st
    start = doc.get("start", next(iter(states_doc)))
    if start not in states_doc:
        errs.add(line_of(doc, "start"), None, f"start state '{start}' is not defined")
    if errs.items:
        raise FlowValidationError(errs.items)
    return FlowSpec(name=name, file=file, start=start, states=states, settings=dict(settings),
                    description=str(doc.get("description", "")), line=line_of(doc))


def _parse_state(name: str, d: Any, line: int, errs: _Errors) -> State | None:
    if not isinstance(d, dict):
        errs.add(line, name, "a state must be a mapping with one of: " + ", ".join(KINDS))
        return None
    kinds = [k for k in KINDS if k in d]
    if len(kinds) != 1:
        what = "none" if not kinds else " and ".join(kinds)
        errs.add(line, name, f"a state needs exactly one kind key ({', '.join(KINDS)}); found {what}")
        return None
    kind = kinds[0]
    allowed = _ALLOWED[kind] | _COMMON | {kind}
    for key in d:
        if key not in allowed:
            errs.add(line_of(d, key), name, f"unknown key '{key}' in a {kind} state "
                                            f"(allowed: {', '.join(sorted(allowed - {kind}))})")
    st = State(name=name, kind=kind, line=line)

    def target(key: str) -> str | None:
        v = d.get(key)
        if not isinstance(v, str) or not v:
            errs.add(line_of(d, key), name, f"'{key}' must name a state")
            return None
        return v

    def text(key: str, required: bool = True):
        v = d.get(key)
        if v is None and not required:
            return None
        if not _is_text(v):
            errs.add(line_of(d, key), name, f"'{key}' must be a text key, an inline text, "
                                            "or a mapping language -> text")
            return None
        return v

    def on_map(optional: bool = False) -> None:
        on = d.get("on")
        if optional and on is None:
            return
        if not isinstance(on, dict) or not on:
            errs.add(line_of(d, "on", line), name, "'on:' must map each outcome to a state")
            return
        for k, v in on.items():
            if not isinstance(v, str):
                errs.add(line_of(on, k), name, f"outcome '{k}' must name a state")
                continue
            st.on[k] = v
            st.on_lines[k] = line_of(on, k)

    def params() -> None:
        w = d.get("with", {})
        if not isinstance(w, dict):
            errs.add(line_of(d, "with"), name, "'with:' must be a mapping of parameters")
        else:
            st.params = dict(w)

    if kind == "menu":
        st.text = text("menu")
        st.error = text("error", required=False)
        opts, choose = d.get("options"), d.get("choose")
        if (opts is None) == (choose is None):
            errs.add(line, name, "a menu needs either 'options:' (a list) or 'choose:' (a list from data)")
        if opts is not None:
            if not isinstance(opts, list) or not opts:
                errs.add(line_of(d, "options"), name, "'options:' must be a non-empty list")
            else:
                for i, o in enumerate(opts):
                    oline = opts.item_lines[i] if hasattr(opts, "item_lines") else line
                    if not isinstance(o, dict) or set(o) - {"label", "next", "when"} or "label" not in o or "next" not in o:
                        errs.add(oline, name, f"option {i + 1} needs 'label:' and 'next:' (and optionally 'when:')")
                        continue
                    if not _is_text(o["label"]) or not isinstance(o["next"], str):
                        errs.add(oline, name, f"option {i + 1}: 'label' must be text and 'next' a state name")
                        continue
                    when = o.get("when")
                    if when is not None and not isinstance(when, str):
                        errs.add(oline, name, f"option {i + 1}: 'when' must be a condition")
                        continue
                    st.options.append(Option(o["label"], o["next"], when, line_of(o, "next", oline)))
        if choose is not None:
            cline = line_of(d, "choose")
            req = {"from", "label", "save", "next"}
            if not isinstance(choose, dict) or set(choose) != req:
                errs.add(cline, name, "'choose:' needs exactly 'from:', 'label:', 'save:' and 'next:'")
            elif not all(isinstance(choose[k], str) for k in ("from", "save", "next")) or not _is_text(choose["label"]):
                errs.add(cline, name, "'choose:' values: from/save are variable names, next a state, label a text")
            else:
                st.choose = Choose(choose["from"], choose["label"], choose["save"], choose["next"], cline)
    elif kind == "ask":
        st.text = text("ask")
        st.error = text("error", required=False)
        st.next = target("next")
        save = d.get("save")
        if not isinstance(save, str) or not NAME_RE.match(save):
            errs.add(line_of(d, "save"), name, "'save:' must name the variable that keeps the answer")
        st.save = save
        v = d.get("validate", "text")
        if v not in VALIDATORS:
            errs.add(line_of(d, "validate"), name, f"unknown validator {v!r} (use one of: {', '.join(VALIDATORS)})")
        st.validate = {"type": v}
        for k in ("min", "max", "min_length", "max_length", "pattern", "choices"):
            if k in d:
                st.validate[k] = d[k]
        if v == "regex":
            pat = d.get("pattern")
            try:
                re.compile(pat)
            except (re.error, TypeError):
                errs.add(line_of(d, "pattern"), name, f"'pattern:' {pat!r} is not a valid regular expression")
        if v == "choice" and (not isinstance(d.get("choices"), list) or not d.get("choices")):
            errs.add(line_of(d, "choices", line), name, "the choice validator needs 'choices:' (a list)")
        st.secret = bool(d.get("secret", v == "pin"))
    elif kind == "do":
        st.action = d["do"] if isinstance(d["do"], str) else None
        if st.action is None:
            errs.add(line_of(d, "do"), name, "'do:' must name an action")
        params()
        on_map()
    elif kind == "flow":
        st.subflow = d["flow"] if isinstance(d["flow"], str) else None
        if st.subflow is None:
            errs.add(line_of(d, "flow"), name, "'flow:' must name a flow")
        params()
        on_map(optional=True)       # a sub-flow that only ends (never returns) needs no 'on:'

    elif kind == "route":
        clauses = d["route"]
        if not isinstance(clauses, list) or not clauses:
            errs.add(line_of(d, "route"), name, "'route:' must be a list of 'if:'/'next:' clauses ending with 'else:'")
        else:
            for i, c in enumerate(clauses):
                cline = clauses.item_lines[i]
                if isinstance(c, dict) and set(c) == {"if", "next"} and isinstance(c["if"], str) and isinstance(c["next"], str):
                    st.routes.append(Clause(c["if"], c["next"], cline))
                elif isinstance(c, dict) and set(c) == {"else"} and isinstance(c["else"], str):
                    st.routes.append(Clause(None, c["else"], cline))
                else:
                    errs.add(cline, name, f"route clause {i + 1} must be 'if: <condition>' with 'next: <state>', or 'else: <state>'")
            if st.routes and st.routes[-1].when is not None:
                errs.add(line_of(d, "route"), name, "a route must end with an 'else:' clause")
            if any(c.when is None for c in st.routes[:-1]):
                errs.add(line_of(d, "route"), name, "'else:' must be the last clause of a route")
    elif kind == "end":
        st.text = text("end")
    elif kind == "return":
        out = d["return"]
        if not isinstance(out, str) or not NAME_RE.match(out):
            errs.add(line_of(d, "return"), name, "'return:' must name the outcome handed back to the calling flow")
        st.outcome = out
    return st
