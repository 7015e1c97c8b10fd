"""YAML files with line numbers, and problems located by file, line and state.

The flow files (:mod:`convo.flowlang.spec`) and the notification files (:mod:`convo.notify.messages`:
notify.yaml, alerts.yaml) are read with :func:`load_yaml`, so every mapping and list remembers where it
was written (:func:`line_of`) and every problem points at ``file:line: state 'name'``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml


@dataclass(frozen=True)
class Where:
    file: str
    line: int
    state: str | None = None

    def __str__(self) -> str:
        s = f"{self.file}:{self.line}"
        return f"{s}: state '{self.state}'" if self.state else s


class FlowError(Exception):
    """One problem in a flow file, located by file, line and state (and, for a text, its key and language).

    ``severity`` is ``"error"`` (the flows are refused) or ``"warning"`` (they load; ``convo lint``
    shows it, ``--warnings-as-errors`` refuses it)."""

    def __init__(self, where: Where, message: str, *, key: str | None = None, lang: str | None = None,
                 severity: str = "error"):
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message
        self.key = key
        self.lang = lang
        self.severity = severity

    def as_dict(self) -> dict:
        """For ``convo lint --json`` and ``/healthz``."""
        return {"severity": self.severity, "file": self.where.file, "line": self.where.line,
                "state": self.where.state, "key": self.key, "lang": self.lang, "message": self.message,
                "text": str(self)}


class FlowValidationError(Exception):
    """All the problems found while loading a set of flows."""

    def __init__(self, errors: list[FlowError], warnings: list[FlowError] | None = None):
        self.errors = errors
        self.warnings = list(warnings or [])
        super().__init__("\n".join(str(e) for e in errors))


# --------------------------------------------------------------------------- YAML with lines
class _LineMap(dict):
    """A dict that remembers the line of itself and of each key (1-based)."""

    line: int = 0
    key_lines: dict


class _LineList(list):
    line: int = 0
    item_lines: list


# libyaml's parser when PyYAML has it (several times faster: loading 100 flows stays well under a second)
if TYPE_CHECKING:  # one static base for mypy: CSafeLoader has SafeLoader's interface
    from yaml import SafeLoader as _Base
else:
    _Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):
    """SafeLoader with line numbers, where only true/false are booleans (``on:`` stays a key)."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def _construct_mapping(loader, node):
    loader.flatten_mapping(node)
    m = _LineMap()
    m.line = node.start_mark.line + 1
    m.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, bool)) or key is None:
            raise yaml.constructor.ConstructorError(
                None, None, f"unsupported key {key!r}", key_node.start_mark)
        key = str(key) if not isinstance(key, str) else key
        if key in m:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}'", key_node.start_mark)
        m[key] = loader.construct_object(value_node, deep=True)
        m.key_lines[key] = key_node.start_mark.line + 1
    return m


def _construct_sequence(loader, node):
    seq = _LineList(loader.construct_object(child, deep=True) for child in node.value)
    seq.line = node.start_mark.line + 1
    seq.item_lines = [child.start_mark.line + 1 for child in node.value]
    return seq


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml(text: str, file: str) -> Any:
    """Parse YAML keeping line numbers; syntax errors become :class:`FlowError`."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise FlowError(Where(file, line), f"YAML error: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise FlowError(Where(file, 1), f"YAML error: {e}") from None


def line_of(obj: Any, key: str | None = None, default: int = 1) -> int:
    if key is not None and isinstance(obj, _LineMap):
        return obj.key_lines.get(key, obj.line)
    return getattr(obj, "line", default) or default
