"""The flow-lint checks that look at the flows as a graph or a whole, one module each.

:func:`convo.flowlang.compiler.load_flowset` runs them at three points, each list in order (that
order is the order ``convo lint`` reports in):

* :data:`SPEC_CHECKS`, ``fn(specs, errors)``: every parsed flow, before any is compiled
  (``subflow_cycles``);
* :data:`FLOW_CHECKS`, ``fn(spec, specs, errors)``: one flow, once its states compiled
  (``reachable``, ``dead_ends``, ``loops``);
* :data:`SET_CHECKS`, ``fn(flowset: Loaded, errors, warnings)``: the compiled flow set
  (``missing_texts``, ``variables``).

A check appends :class:`convo.flowlang.spec.FlowError` s (file, line, state) and changes nothing.
A new check is one module here, decorated with :func:`spec_check`, :func:`flow_check` or
:func:`set_check`, named in :data:`MODULES`, with a test in tests/test_flowspec.py or
tests/test_varcheck.py. Checks of one state's own keys belong to its kind (convo.flowlang.kinds).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPEC_CHECKS: list[Callable] = []
FLOW_CHECKS: list[Callable] = []
SET_CHECKS: list[Callable] = []


def spec_check(fn: Callable) -> Callable:
    SPEC_CHECKS.append(fn)
    return fn


def flow_check(fn: Callable) -> Callable:
    FLOW_CHECKS.append(fn)
    return fn


def set_check(fn: Callable) -> Callable:
    SET_CHECKS.append(fn)
    return fn


@dataclass
class Loaded:
    """A flow set compiled as far as it could be: what the :data:`SET_CHECKS` see."""

    directory: Path
    specs: dict                   # name -> FlowSpec
    flows: dict                   # name -> CompiledFlow (the flows that compiled)
    actions: dict                 # name -> Action
    locales: Any                  # convo.text.render.Locales
    env: Any                      # the Jinja environment
    common: dict                  # shared texts
    channels: dict
    keywords: Any                 # convo.flowlang.keywords.KeywordTable
    key_usage: dict               # text key -> the first place (Where) a flow uses it


#: one module per check; importing it registers it, in this order (the order they run and report in)
MODULES = ("subflow_cycles", "reachable", "dead_ends", "loops", "missing_texts", "variables")
for _module in MODULES:
    importlib.import_module(f"{__name__}.{_module}")
