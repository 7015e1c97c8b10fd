"""Validators for ``ask:`` states: raw input -> (ok, value to save).

Each returns the normalized value to store (``Decimal`` amounts are saved as
strings so the session stays JSON). Parameters come from the state:
``min``/``max`` (number bounds), ``min_length``/``max_length``, ``pattern``,
``choices``.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

#: ASCII digits only (``re.ASCII``: ``\d`` alone also matches ``٣``, ``１`` and every other Unicode digit,
#: which ``int`` and ``Decimal`` would happily read); up to 12 digits, up to 2 decimals after ``.`` or ``,``
_AMOUNT_RE = re.compile(r"[0-9]{1,12}([.,][0-9]{1,2})?", re.ASCII)
#: ``1,000`` / ``12,345,678`` and ``1,000.50``: commas that group thousands
_GROUPED_RE = re.compile(r"[0-9]{1,3}(,[0-9]{3})+", re.ASCII)
_GROUPED_DECIMAL_RE = re.compile(r"[0-9]{1,3}(,[0-9]{3})+\.[0-9]{1,2}", re.ASCII)


def _bounds(value: Decimal, spec: dict) -> bool:
    lo, hi = spec.get("min"), spec.get("max")
    if lo is not None and value < Decimal(str(lo)):
        return False
    if hi is not None and value > Decimal(str(hi)):
        return False
    return True


def _length(text: str, spec: dict, default_max: int = 160) -> bool:
    return spec.get("min_length", 1) <= len(text) <= spec.get("max_length", default_max)


def _amount(raw: str, spec: dict) -> tuple[bool, str | None]:
    """A positive amount typed in ASCII digits: ``1500``, ``1,500``, ``1500.5``, ``1000,50``, ``1,000.50``.

    Anything else is refused, never guessed: other scripts' digits (``٣٠٠``, ``१००``), fullwidth
    ``１００``, ``1.000`` (thousands or one?), exponents, signs, more than 2 decimals. The value is
    returned as a plain decimal string (``"1000.50"``).
    """
    compact = raw.strip(" \t\r\n").replace(" ", "")
    if not compact.isascii():
        return False, None
    if _GROUPED_DECIMAL_RE.fullmatch(compact) or _GROUPED_RE.fullmatch(compact):
        compact = compact.replace(",", "")              # 1,000.50 / 1,000
    if not _AMOUNT_RE.fullmatch(compact):
        return False, None
    try:
        value = Decimal(compact.replace(",", "."))
    except InvalidOperation:  # pragma: no cover - the pattern admits only plain decimals
        return False, None
    if value <= 0 or not _bounds(value, spec):
        return False, None
    return True, str(value)


def validate(spec: dict, raw: str) -> tuple[bool, str | None]:
    """Check ``raw`` against an ask state's validator; returns (ok, value)."""
    kind = spec.get("type", "text")
    text = raw.strip()
    if kind == "digits":
        if not text.isascii() or not text.isdigit() or not _length(text, spec, 20):
            return False, None
        if not _bounds(Decimal(text), spec):
            return False, None
        return True, text
    if kind == "amount":
        return _amount(raw, spec)
    if kind == "pin":
        lo, hi = spec.get("min_length", 4), spec.get("max_length", 6)
        ok = text.isascii() and text.isdigit() and lo <= len(text) <= hi
        return (True, text) if ok else (False, None)
    if kind == "regex":
        ok = re.fullmatch(spec["pattern"], text) is not None and _length(text, spec)
        return (True, text) if ok else (False, None)
    if kind == "choice":
        for c in spec.get("choices", []):
            if text.casefold() == str(c).casefold():
                return True, str(c)
        return False, None
    ok = _length(text, spec)
    return (True, text) if ok else (False, None)
