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

# re-exported: flow code imports them here
__all__ = ["FlowError", "FlowValidationError", "Where", "line_of", "load_yaml"]

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
VALIDATORS = ("digits", "amount", "pin", "regex", "choice", "text")

# keys allowed in every state besides its kind's (the kinds' own: convo.flowlang.kinds)
_COMMON = {"note"}
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
        from convo.flowlang.kinds import REGISTRY

        return REGISTRY[self.kind].waits_for_input

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
        return {s.outcome for s in self.states.values() if s.kind == "return" and s.outcome is not None}


def __getattr__(name: str):
    if name == "KINDS":                              # the kind keys, in order (convo.flowlang.kinds)
        from convo.flowlang.kinds import names

        return names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- parsing
class _Errors:
    def __init__(self, file: str):
        self.file = file
        self.items: list[FlowError] = []

    def add(self, line: int, state: str | None, msg: str) -> None:
        self.items.append(FlowError(Where(self.file, line, state), msg))


def is_text(v: Any) -> bool:
    """A text value: a string, or a non-empty mapping language -> string."""
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
        raise FlowValidationError([FlowError(Where(file, line_of(doc)),
                                             "a flow file must be a mapping with 'states:'")])
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
    from convo.flowlang.kinds import REGISTRY

    keys = tuple(REGISTRY)                          # the kind keys, in order
    if not isinstance(d, dict):
        errs.add(line, name, "a state must be a mapping with one of: " + ", ".join(keys))
        return None
    kinds = [k for k in keys if k in d]
    if len(kinds) != 1:
        what = "none" if not kinds else " and ".join(kinds)
        errs.add(line, name, f"a state needs exactly one kind key ({', '.join(keys)}); found {what}")
        return None
    kind = REGISTRY[kinds[0]]
    allowed = kind.keys | _COMMON | {kind.key}
    for key in d:
        if key not in allowed:
            errs.add(line_of(d, key), name, f"unknown key '{key}' in a {kind.key} state "
                                            f"(allowed: {', '.join(sorted(allowed - {kind.key}))})")
    st = State(name=name, kind=kind.key, line=line)
    kind.parse(st, StateParser(name, d, line, errs, st))
    return st


class StateParser:
    """What a kind's ``parse`` works with: the state's mapping ``d`` and readers for common keys.

    Every problem is reported (``error``) at the line of the key it is about; parsing goes on."""

    def __init__(self, name: str, d: dict, line: int, errs: _Errors, st: State):
        self.name, self.d, self.line, self.errs, self.st = name, d, line, errs, st

    def error(self, line: int, msg: str) -> None:
        self.errs.add(line, self.name, msg)

    def line_of(self, key: str, default: int | None = None) -> int:
        """The line of ``key`` in the state (``default``, else the state's line, when absent)."""
        return line_of(self.d, key) if default is None else line_of(self.d, key, default)

    def target(self, key: str) -> str | None:
        """A key naming the next state."""
        v = self.d.get(key)
        if not isinstance(v, str) or not v:
            self.error(line_of(self.d, key), f"'{key}' must name a state")
            return None
        return v

    def text(self, key: str, required: bool = True):
        """A key holding a text: a locale key, an inline text or a mapping language -> text."""
        v = self.d.get(key)
        if v is None and not required:
            return None
        if not is_text(v):
            self.error(line_of(self.d, key), f"'{key}' must be a text key, an inline text, "
                                             "or a mapping language -> text")
            return None
        return v

    def on_map(self, optional: bool = False) -> None:
        """``on:`` (outcome -> state) into ``st.on`` and ``st.on_lines``."""
        d, st = self.d, self.st
        on = d.get("on")
        if optional and on is None:
            return
        if not isinstance(on, dict) or not on:
            self.error(line_of(d, "on", self.line), "'on:' must map each outcome to a state")
            return
        for k, v in on.items():
            if not isinstance(v, str):
                self.error(line_of(on, k), f"outcome '{k}' must name a state")
                continue
            st.on[k] = v
            st.on_lines[k] = line_of(on, k)

    def params(self) -> None:
        """``with:`` (parameter -> value) into ``st.params``."""
        w = self.d.get("with", {})
        if not isinstance(w, dict):
            self.error(line_of(self.d, "with"), "'with:' must be a mapping of parameters")
        else:
            self.st.params = dict(w)
