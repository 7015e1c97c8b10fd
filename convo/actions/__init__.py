"""The action registry: the only code a flow can run.

A ``do:`` state names an action registered here; flows can never name a Python
path. Each action is a plain function ``fn(ctx, **params) -> outcome`` declared
with :func:`action`, which records its outcomes and parameters so the compiler
can check every ``do:`` state at load time. The docstring of each action
carries a YAML example; flows.md lists them (a test keeps the two in step).

An action also declares what it puts into the conversation (``provides=``, with
shapes, see :mod:`convo.actions.shapes`) and what it reads (``needs=``), so lint
knows which variables every text can use in every state::

    @action("savings_balance", outcomes=("ok", "unavailable"), needs=("account",),
            provides={"balance": on("ok", {"total": "amount", "available": "amount", "as_of": "time?"})})
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Callable

from convo.actions.shapes import describe, shape_of_declaration


@dataclass(frozen=True)
class Action:
    name: str
    fn: Callable[..., str]
    outcomes: tuple[str, ...]
    params: dict[str, bool]          # name -> required
    doc: str
    #: variable -> (shape, outcomes it is set on; None = every outcome), see convo.flowlang.varcheck
    provides: dict[str, tuple[Any, frozenset | None]] = field(default_factory=dict)
    #: variables the action reads (must be set on every path to its ``do:`` state)
    needs: tuple[str, ...] = ()
    #: False for an action registered without ``provides=`` (lint warns: its variables are unknown)
    declared: bool = False


REGISTRY: dict[str, Action] = {}


@dataclass(frozen=True)
class On:
    """A variable an action sets only on some outcomes: ``on("found", {"id", "name"})``."""

    outcomes: frozenset
    shape: Any


def on(outcomes: str | tuple[str, ...], shape: Any) -> On:
    return On(frozenset((outcomes,) if isinstance(outcomes, str) else outcomes), shape)


def action(name: str, *, outcomes: tuple[str, ...], provides: dict[str, Any] | None = None,
           needs: tuple[str, ...] = ()):
    """Register ``fn`` as the action ``name`` returning one of ``outcomes``.

    ``provides`` maps each variable the action sets to its shape (a type name
    such as ``"amount"``, a set or dict of attributes, a one-item list for a
    list; :mod:`convo.flowlang.varcheck`), wrapped in :func:`on` when it is set only on
    some outcomes. ``needs`` names the variables it reads."""
    def register(fn):
        if name in REGISTRY:
            raise ValueError(f"action {name!r} registered twice")
        sig = inspect.signature(fn)
        params = {p.name: p.default is inspect.Parameter.empty
                  for p in list(sig.parameters.values())[1:]}
        decl = {}
        for var, spec in (provides or {}).items():
            outs = spec.outcomes if isinstance(spec, On) else None
            if outs is not None and not outs <= set(outcomes):
                raise ValueError(f"action {name!r}: {var} is set on unknown outcome(s) {sorted(outs - set(outcomes))}")
            decl[var] = (shape_of_declaration(spec.shape if isinstance(spec, On) else spec, f"{name}: {var}"), outs)
        REGISTRY[name] = Action(name, fn, tuple(outcomes), params, inspect.getdoc(fn) or "", decl, tuple(needs),
                                provides is not None)
        return fn

    return register


@dataclass
class Context:
    """What an action sees: the conversation's variables and the services."""

    vars: dict[str, Any]
    phone: str
    channel: str
    services: Any                      # convo.services.Services
    lang: str = "en"
    #: the gateway's session id (USSD) or message id (SMS) of this hop
    session_id: str = ""
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    #: audit rows (convo.store.subscribers.audit_many) the engine writes at the end of the hop
    events: list = field(default_factory=list)

    @property
    def today(self) -> date:
        return self.now.date()


def load_builtin_actions() -> dict[str, Action]:
    """Import the action modules (each registers itself) and return the registry."""
    from convo.actions import core, mifos, pin, repay  # noqa: F401

    return REGISTRY


def declaration_text(a: Action) -> str:
    """What flows.md says an action sets and reads, generated from its declaration:
    ``Provides `balance` {total, available, as_of} on ok. Reads `account`.``"""
    sets = []
    for var, (shape, when) in a.provides.items():
        d = describe(shape)
        sets.append(f"`{var}`" + (f" {d}" if d else "") + (f" on {', '.join(sorted(when))}" if when else ""))
    out = ("Provides " + "; ".join(sets) + ".") if sets else "Provides nothing."
    if a.needs:
        out += " Reads " + ", ".join(f"`{n}`" for n in a.needs) + "."
    return out


def markdown(registry: dict[str, Action] | None = None) -> str:
    """A flows.md action line per action: name, parameters, outcomes, first docstring line, declaration.
    flows.md keeps its own words for each action; a test checks outcomes, parameters and declarations."""
    registry = registry if registry is not None else load_builtin_actions()
    lines = []
    for name in sorted(registry, key=lambda n: (registry[n].fn.__module__, n)):
        a = registry[name]
        params = []
        for p in list(inspect.signature(a.fn).parameters.values())[1:]:
            params.append(f"`{p.name}`" + ("" if p.default is inspect.Parameter.empty else f", default {p.default}"))
        head = f"- `{name}`" + (f" (with {'; '.join(params)})" if params else "")
        outs = f"outcome{'s' if len(a.outcomes) > 1 else ''} {', '.join(a.outcomes)}."
        first = " ".join(a.doc.split("\n\n", 1)[0].split()).replace("``", "`")
        lines.append(f"{head}: {outs} {first} {declaration_text(a)}")
    return "\n".join(lines)
