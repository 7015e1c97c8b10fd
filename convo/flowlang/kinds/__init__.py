"""The state kinds of the flow language, one module each, registered by their YAML key.

A state's kind is the one key that says what it does (``menu:``, ``ask:``, ``do:``, ``route:``,
``flow:``, ``end:``, ``return:``). Each kind is a :class:`Kind` subclass in its own module holding
all it means: which keys it takes and how they are parsed (:meth:`Kind.parse`, called by
:mod:`convo.flowlang.spec`), what it adds to the flow's shared machine (:meth:`Kind.compile`, called
by :mod:`convo.flowlang.compiler`), where it leads and which variables it sets (:meth:`Kind.var_edges`,
:meth:`Kind.sets`, for :mod:`convo.flowlang.varcheck`), what the engine does in it (:meth:`Kind.feed`
for an answer, :meth:`Kind.run` for a state that moves on by itself) and what its screen shows
(:meth:`Kind.render`), both called by :func:`convo.dialog.engine.step`.

Adding a kind is one file plus its tests and its line in the docs:

1. ``convo/flowlang/kinds/<key>.py``: a ``Kind`` subclass with ``key`` (the YAML key), ``keys`` (the
   other keys it allows) and the methods it needs, decorated with :func:`register` (every module of
   this package is imported; a new one comes after the built-in kinds, listed in :data:`MODULES`);
2. its conversations in ``tests/`` (``tests/unit/test_dialog_step.py`` drives :func:`step` without
   Redis; its ``Pause`` is a whole kind in twenty lines);
3. its section in flows.md (a ``### <key>`` under "A flow file"; a ``yaml flow`` example there is
   compiled by tests/test_docs.py).
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:                                   # pragma: no cover - names for the signatures only
    from convo.flowlang.compiler import CompiledFlow, FlowBuild
    from convo.flowlang.spec import FlowSpec, State, StateParser
    from convo.flowlang.varcheck import FlowPass


class FlowRuntimeError(Exception):
    """A flow that cannot go on (an action's unknown outcome, a ``return:`` without a caller, a loop)."""


class Kind:
    """One state kind. Subclasses override what their kind does; the defaults suit a state that
    neither waits for input nor moves on by itself."""

    #: the YAML key naming the kind (``menu``); the registry is keyed by it
    key: str = ""
    #: keys a state of this kind may have besides its kind key and ``note``
    keys: frozenset[str] = frozenset()
    #: the dialog stops in this state for the caller's answer (:meth:`feed`)
    waits_for_input: bool = False
    #: reaching this state ends the dialog (its screen is the last one)
    ends_dialog: bool = False
    #: shown for an answer the state refuses when it has no ``error:`` of its own
    invalid_text: str = "common.invalid_input"

    def parse(self, st: State, p: StateParser) -> None:
        """Fill ``st`` from the state's mapping ``p.d``; report shape problems with ``p.error``."""

    def compile(self, st: State, b: FlowBuild) -> None:
        """Check ``st`` against the flow set and add its transitions, texts and conditions to ``b``."""

    def exits(self, st: State, specs: dict[str, FlowSpec]) -> bool:
        """Whether the dialog can leave its flow here (an ``end:``, a ``return:``, a sub-flow that ends)."""
        return self.ends_dialog

    def var_edges(self, st: State, env: dict, flow: FlowPass):
        """For the variable analysis (convo.flowlang.varcheck): ``(next state, variables set on arriving
        there)`` for every way out of ``st`` entered with ``env``."""
        return ()

    def sets(self, st: State, actions: dict) -> list[tuple[str, str, int | None]]:
        """``(variable, what sets it, line or None)`` for each variable ``st`` sets (lint's "set by" hints)."""
        return []

    def secret(self, st: State) -> bool:
        """Whether the answer this state waits for is a secret (a PIN): never stored, redacted."""
        return False

    def feed(self, turn: Any, cf: CompiledFlow, st: State, raw: str) -> str | None:
        """Apply one answer (stripped); return the error to show (a text key, or ``state:<name>`` for the
        state's own ``error:``) or None once the conversation has moved on. Only for ``waits_for_input``."""
        return None

    def run(self, turn: Any, cf: CompiledFlow, st: State) -> bool:
        """Move on by itself (an action, a route, a call, a return): True once moved, False when the dialog
        stops here (it waits for input or ends)."""
        return False

    def render(self, screen: Any, cf: CompiledFlow, st: State) -> list[str]:
        """The state's screen(s): its text, paged for the channel (:mod:`convo.dialog.channels`)."""
        return screen.text_pages(heading=self.ends_dialog)


REGISTRY: dict[str, Kind] = {}


def register(cls: type[Kind]) -> type[Kind]:
    """Class decorator: make ``cls`` the kind for its ``key``."""
    if not cls.key or cls.key in REGISTRY:
        raise ValueError(f"state kind {cls.key!r} registered twice or without a key")
    REGISTRY[cls.key] = cls()
    return cls


def kind_of(st: State) -> Kind:
    """The kind of a parsed state."""
    return REGISTRY[st.kind]


def names() -> tuple[str, ...]:
    """The kind keys, in the order flows.md and lint messages list them."""
    return tuple(REGISTRY)


#: the built-in kinds' modules, in the order of names() (and of lint's messages); importing one registers it
MODULES = ("menu", "ask", "do", "route", "flow", "end", "return_")
for _module in MODULES + tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in MODULES)):
    importlib.import_module(f"{__name__}.{_module}")
