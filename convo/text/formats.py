"""Money, dates and account numbers as the client reads them, per language (``en``, ``sw``, ``fr``)."""
from __future__ import annotations

import datetime as _dt
import decimal
import re
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from convo.text.sms import to_gsm

# ISO 4217 minor units differing from 2, for currencies given as a bare code.
_MINOR_UNITS = {
    **dict.fromkeys("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split(), 0),
    **dict.fromkeys("BHD IQD JOD KWD LYD OMR TND".split(), 3),
}

# lang -> (thousands separator, decimal separator, code after the amount)
_MONEY_STYLE = {
    "en": (",", ".", False),
    "sw": (",", ".", False),
    "fr": (" ", ",", True),  # narrow no-break space would make the SMS UCS-2
}


_SUBTAG = re.compile(r"[-_]")


def _lang(lang: str | None) -> str:
    """Primary language subtag: ``"fr-CI"`` → ``"fr"``; default ``"en"``."""
    if not lang:
        return "en"
    return _SUBTAG.split(str(lang), maxsplit=1)[0].lower()


def _to_decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise TypeError(f"money: not an amount: {value!r}")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int):
        d = Decimal(value)
    elif isinstance(value, float):
        d = Decimal(repr(value))  # shortest repr, no binary-float artefacts
    elif isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except decimal.InvalidOperation:
            raise ValueError(f"money: not an amount: {value!r}") from None
    else:
        raise TypeError(f"money: not an amount: {value!r}")
    if not d.is_finite():
        raise ValueError(f"money: not a finite amount: {value!r}")
    return d


def _currency(currency: Any) -> tuple[str | None, int]:
    if currency is None:
        return None, 2
    if isinstance(currency, str):
        code = currency.strip().upper() or None
        return code, _MINOR_UNITS.get(code or "", 2)
    if isinstance(currency, dict):
        code = currency.get("code")
        places = currency.get("decimal_places", currency.get("decimalPlaces"))
        if places is None:
            places = _MINOR_UNITS.get(code or "", 2)
        return code, int(places)
    raise TypeError(f"money: bad currency {currency!r}")


def format_money(value: Any, currency: Any = None, lang: str | None = "en") -> str:
    """``KES 12,500.00`` (en, sw), ``12 500,00 KES`` (fr); other languages as en.

    ``value``: Decimal, int or numeric string (a float is read via its shortest
    repr, never computed with). ``currency``: None, a code, or a dict with
    ``code``, ``decimal_places`` (or Fineract's ``decimalPlaces``) and
    ``in_multiples_of`` (accepted, not applied: display never alters the amount
    beyond its decimal places). Rounds ROUND_HALF_UP; negatives get a leading
    ``-``; a value that rounds to zero shows no sign.
    """
    amount = _to_decimal(value)
    code, places = _currency(currency)
    thousands, point, code_after = _MONEY_STYLE.get(_lang(lang), _MONEY_STYLE["en"])
    with decimal.localcontext() as ctx:
        ctx.prec = max(28, amount.adjusted() + places + 4)
        q = amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    negative = q < 0
    digits = f"{abs(q):f}"
    whole, _, frac = digits.partition(".")
    groups: list[str] = []
    while len(whole) > 3:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    groups.insert(0, whole)
    number = thousands.join(groups) + (point + frac if frac else "")
    if code:
        number = f"{number} {code}" if code_after else f"{code} {number}"
    return "-" + number if negative else number


_MONTHS_MEDIUM = {
    "en": "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(),
    "sw": "Jan Feb Mac Apr Mei Jun Jul Ago Sep Okt Nov Des".split(),
    "fr": "janv. févr. mars avr. mai juin juil. août sept. oct. nov. déc.".split(),
}
_MONTHS_LONG = {
    "en": ("January February March April May June July August September October "
           "November December").split(),
    "sw": ("Januari Februari Machi Aprili Mei Juni Julai Agosti Septemba Oktoba "
           "Novemba Desemba").split(),
    "fr": ("janvier février mars avril mai juin juillet août septembre octobre "
           "novembre décembre").split(),
}
# Month names are passed through to_gsm: "août" → "aout" (û is not GSM-7),
# "févr." / "déc." keep é, which GSM has.
_MONTHS_MEDIUM = {k: [to_gsm(m) for m in v] for k, v in _MONTHS_MEDIUM.items()}
_MONTHS_LONG = {k: [to_gsm(m) for m in v] for k, v in _MONTHS_LONG.items()}


def _to_date(value: Any) -> _dt.date:
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    if isinstance(value, str):
        s = value.strip()
        try:
            return _dt.date.fromisoformat(s[:10])
        except ValueError:
            raise ValueError(f"date: not an ISO date: {value!r}") from None
    if isinstance(value, (list, tuple)) and len(value) >= 3 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value[:3]
    ):
        return _dt.date(value[0], value[1], value[2])
    raise TypeError(f"date: not a date: {value!r}")


def format_date(value: Any, style: str = "medium", lang: str | None = "en") -> str:
    """``5 Apr 2024`` (en), ``5 Apr 2024`` (sw month names), ``5 avr. 2024`` (fr);
    ``short`` → ``05/04/2024``; ``long`` → ``5 April 2024`` / ``5 Aprili 2024`` /
    ``5 avril 2024``. Accepts date/datetime, ``"2024-04-05"`` (a time part is
    ignored) or a Fineract array ``[2024, 4, 5]``. Output is GSM-7."""
    d = _to_date(value)
    if style == "short":
        return f"{d.day:02d}/{d.month:02d}/{d.year:04d}"
    if style == "medium":
        table = _MONTHS_MEDIUM
    elif style == "long":
        table = _MONTHS_LONG
    else:
        raise ValueError(f"date: unknown style {style!r} (short, medium, long)")
    months = table.get(_lang(lang), table["en"])
    return f"{d.day} {months[d.month - 1]} {d.year}"


#: lang -> (today, tomorrow, prefix of any other date): ``due {{ d | day(today) }}`` reads
#: "due today", "due tomorrow", "due on 18 Dec 2026"
_DAY_WORDS = {
    "en": ("today", "tomorrow", "on "),
    "sw": ("leo", "kesho", "tarehe "),
    "fr": ("aujourd'hui", "demain", "le "),
}


def format_day(value: Any, today: Any, lang: str | None = "en", style: str = "medium") -> str:
    """A date as a client says it, relative to ``today`` (the MFI's local date, never the
    server's): ``today``/``tomorrow`` on those days, else ``on 18 Dec 2026``; Swahili ``leo``,
    ``kesho``, ``tarehe 18 Des 2026``; French ``aujourd'hui``, ``demain``, ``le 18 déc. 2026``.
    Other languages as English."""
    d, ref = _to_date(value), _to_date(today)
    now, tomorrow, prefix = _DAY_WORDS.get(_lang(lang), _DAY_WORDS["en"])
    if d == ref:
        return now
    if d == ref + _dt.timedelta(days=1):
        return tomorrow
    return prefix + format_date(d, style, lang)


def mask(value: Any, keep: int = 4) -> str:
    """``"000000042"`` → ``"*0042"``: a star and the last ``keep`` characters;
    values no longer than ``keep`` are returned unchanged."""
    s = str(value)
    if len(s) <= keep:
        return s
    return "*" + (s[-keep:] if keep > 0 else "")
