"""Shapes: the types of the variables a flow's texts can use.

An action declares what it puts into the conversation with shapes (``provides=`` in
:func:`convo.actions.action`); :mod:`convo.flowlang.varcheck` checks every text against them and
renders every text with their example values at load.

Shapes, as written in a declaration:

* a type name: ``"text"``, ``"word"``, ``"name"``, ``"amount"``, ``"int"``,
  ``"bool"``, ``"date"`` (ISO), ``"time"`` (a display time), ``"account_no"``,
  ``"code"``, ``"phone"``, ``"any"``; a trailing ``?`` means it may be null;
* a set of attribute names (each typed by its name: ``total`` is an amount,
  ``currency`` a currency, ``date`` a date, ...) or a dict attribute -> shape;
* a one-item list ``[shape]``: a list of such items.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, eq=False)
class Leaf:
    type: str
    nullable: bool = False
    example: Any = None            # a fixed example (a constant from ``with:``)

    def describe(self) -> str:
        return self.type + ("?" if self.nullable else "")


@dataclass(frozen=True, eq=False)
class Obj:
    fields: dict
    nullable: bool = False

    def describe(self) -> str:
        return "{" + ", ".join(self.fields) + "}"


@dataclass(frozen=True, eq=False)
class Seq:
    item: Any

    def describe(self) -> str:
        return f"list of {self.item.describe()}"


@dataclass(frozen=True, eq=False)
class _Any:
    def describe(self) -> str:
        return "any"


ANY = _Any()
Shape = Any

TYPES = ("text", "word", "name", "amount", "int", "bool", "date", "time", "account_no", "code", "phone", "lang",
         "number", "secret", "any")

CURRENCY = Obj({"code": Leaf("code"), "decimal_places": Leaf("int", example=2),
                "in_multiples_of": Leaf("int", example=1)})

#: the type of an attribute declared by name only (``{"total", "available"}``)
ATTRIBUTE_TYPES: dict[str, Shape] = {
    "id": Leaf("int"), "office_id": Leaf("int"), "name": Leaf("name"), "first_name": Leaf("word"),
    "product": Leaf("text"), "account_no": Leaf("account_no"), "currency": CURRENCY, "kind": Leaf("word"),
    "total": Leaf("amount"), "available": Leaf("amount"), "amount": Leaf("amount"), "overdue": Leaf("amount"),
    "outstanding": Leaf("amount"), "balance": Leaf("amount", True), "date": Leaf("date"),
    "as_of": Leaf("time", True), "label": Leaf("word"), "credit": Leaf("bool"), "group": Leaf("text"),
    "center": Leaf("text", True), "location": Leaf("text", True), "code": Leaf("code"),
    "decimal_places": CURRENCY.fields["decimal_places"], "in_multiples_of": CURRENCY.fields["in_multiples_of"],
}

#: long, realistic example values: texts are rendered with them at load and measured on a USSD screen
EXAMPLES: dict[str, Any] = {
    "text": "Biashara Women Savings Plus", "word": "Christabel", "name": "Christabel Wanjiku Ndungu",
    "amount": "1234567.89", "int": 123456, "bool": True, "date": "2026-09-30", "time": "30 Sep 2026 14:05",
    "account_no": "000000012345", "code": "KES", "phone": "+254700000101", "lang": "en", "number": "123456",
    "secret": "000000", "any": "Xxxxxxxxxx",
}


class DeclarationError(ValueError):
    pass


def shape_of_declaration(spec: Any, where: str = "") -> Shape:
    """A declaration (type name, set/dict of attributes, one-item list) -> a shape."""
    if isinstance(spec, (Leaf, Obj, Seq, _Any)):
        return spec
    if isinstance(spec, str):
        t, nullable = (spec[:-1], True) if spec.endswith("?") else (spec, False)
        if t not in TYPES:
            raise DeclarationError(f"{where}: unknown type {spec!r} (use one of: {', '.join(TYPES)})")
        return ANY if t == "any" else Leaf(t, nullable)
    if isinstance(spec, (set, frozenset)):
        return Obj({a: ATTRIBUTE_TYPES.get(a, Leaf("text")) for a in sorted(spec)})
    if isinstance(spec, dict):
        return Obj({a: shape_of_declaration(s, f"{where}.{a}") for a, s in spec.items()})
    if isinstance(spec, list) and len(spec) == 1:
        return Seq(shape_of_declaration(spec[0], f"{where}[]"))
    if spec is None:
        return ANY
    raise DeclarationError(f"{where}: a shape is a type name, a set or dict of attributes, or [shape]; got {spec!r}")


def describe(shape: Shape) -> str:
    """A declaration as flows.md shows it: ``account{product, account_no, currency}``."""
    if isinstance(shape, Obj):
        return "{" + ", ".join(shape.fields) + "}"
    if isinstance(shape, Seq):
        return f"[{describe(shape.item) or shape.item.describe()}]"
    if isinstance(shape, Leaf):
        return f"({shape.describe()})"
    return ""


def example_of(shape: Shape, null: bool = False, items: int = 2) -> Any:
    """The example value of a shape (``null``: nullable parts are None, lists are empty)."""
    if isinstance(shape, Leaf):
        if null and shape.nullable:
            return None
        return shape.example if shape.example is not None else EXAMPLES.get(shape.type, EXAMPLES["any"])
    if isinstance(shape, Obj):
        if null and shape.nullable:
            return None
        return {k: example_of(v, null, items) for k, v in shape.fields.items()}
    if isinstance(shape, Seq):
        return [] if null else [example_of(shape.item, null, items) for _ in range(items)]
    return EXAMPLES["any"]


_VALUE_SHAPES: dict = {}


def shape_of_value(v: Any) -> Shape:
    """The shape of a constant (a ``with:`` value); one shared object per constant, so that texts
    checked at many states with the same variables are checked (and rendered) once."""
    try:
        key = (type(v), v)
        hit = _VALUE_SHAPES.get(key)
    except TypeError:                   # a list or dict: not hashable
        return _shape_of_value(v)
    if hit is None:
        hit = _VALUE_SHAPES[key] = _shape_of_value(v)
    return hit


def _shape_of_value(v: Any) -> Shape:
    if isinstance(v, bool):
        return Leaf("bool", example=v)
    if isinstance(v, int):
        return Leaf("int", example=v)
    if isinstance(v, str):
        return Leaf("text", example=v) if "{" not in v else Leaf("text")
    if isinstance(v, list):
        return Seq(shape_of_value(v[0]) if v else ANY)
    if isinstance(v, dict):
        return Obj({str(k): shape_of_value(x) for k, x in v.items()})
    return ANY
