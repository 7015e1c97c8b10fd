"""The action registry: the only code a flow can run.

A ``do:`` state names an action registered here; flows can never name a Python
path. Each action is a plain function ``fn(ctx, **params) -> outcome`` declared
with :func:`action`, which records its outcomes and parameters so the compiler
can check every ``do:`` state at load time. The docstring of each action
carries a YAML example; flows.md lists them (a test keeps the two in step).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any, Callable


@dataclass(frozen=True)
class Action:
    name: str
    fn: Callable[..., str]
    outcomes: tuple[str, ...]
    params: dict[str, bool]          # name -> required
    doc: str


REGISTRY: dict[str, Action] = {}


def action(name: str, *, outcomes: tuple[str, ...]):
    """Register ``fn`` as the action ``name`` returning one of ``outcomes``."""

    def register(fn):
        if name in REGISTRY:
            raise ValueError(f"action {name!r} registered twice")
        sig = inspect.signature(fn)
        params = {p.name: p.default is inspect.Parameter.empty
                  for p in list(sig.parameters.values())[1:]}
        REGISTRY[name] = Action(name, fn, tuple(outcomes), params, inspect.getdoc(fn) or "")
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
    #: audit rows (convo.subscribers.audit_many) the engine writes at the end of the hop
    events: list = field(default_factory=list)

    @property
    def today(self) -> date:
        return self.now.date()


def load_builtin_actions() -> dict[str, Action]:
    """Import the action modules (each registers itself) and return the registry."""
    from convo.actions import core, mifos, pin, repay  # noqa: F401

    return REGISTRY
