"""Rendering: SMS encoding, Jinja templates, locale files, USSD pagination.

Everything here is pure (no I/O except :meth:`Locales.load`) and cheap enough
for the hop path; templates and locale tables are built once at load.

* SMS: :func:`sms_info` (GSM-7 / UCS-2, length, segments), :func:`to_gsm`
  (replace look-alike characters so a text stays GSM-7), :func:`usable_screen`.
* Templates: :func:`make_env` (sandboxed, StrictUndefined, filters ``money``,
  ``date``, ``day`` (today/tomorrow/on <date>), ``mask`` reading the language from the ``lang``
  context variable),
  :func:`compile_template`, :func:`template_variables`.
* Locales: :class:`Locales` (flattened YAML keys with file:line of each key).
* USSD: :func:`paginate_menu`, :func:`paginate_text`, :func:`fit_ussd`.
"""
from __future__ import annotations

import datetime as _dt
import decimal
import hashlib
import re
import unicodedata
from collections import deque
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)
import jinja2
import jinja2.meta
import jinja2.sandbox
import yaml

__all__ = [
    "SmsInfo", "sms_info", "to_gsm", "usable_screen", "is_gsm",
    "make_env", "compile_template", "is_static", "template_variables", "TemplateError",
    "format_money", "format_date", "format_day", "mask",
    "Locales", "LocaleError",
    "paginate_menu", "paginate_text", "fit_ussd",
]

# --------------------------------------------------------------------------
# SMS encoding
# --------------------------------------------------------------------------

_ESC = 0x1B


def _gsm_septets() -> dict[str, int]:
    """Map every GSM 03.38 character to its septet cost (1 basic, 2 extension),
    built from the gsm0338 codec's decoder so the table is never hand-written."""
    table: dict[str, int] = {}
    for ext in range(128):
        try:
            ch = bytes([_ESC, ext]).decode("gsm03.38")
        except UnicodeDecodeError:
            continue
        if len(ch) == 1:
            table[ch] = 2
    for b in range(128):
        if b == _ESC:
            continue
        ch = bytes([b]).decode("gsm03.38")
        table[ch] = 1  # basic wins over extension (e.g. LF vs FF are distinct anyway)
    table.pop("\x1b", None)  # a bare ESC is not text
    return table


GSM_SEPTETS: dict[str, int] = _gsm_septets()
GSM_SINGLE, GSM_MULTI = 160, 153
UCS2_SINGLE, UCS2_MULTI = 70, 67


@dataclass(frozen=True)
class SmsInfo:
    """Encoding (``"GSM-7"`` or ``"UCS-2"``), length in septets / UTF-16 code
    units, and number of segments the text is billed as."""

    encoding: str
    chars: int
    segments: int


def is_gsm(text: str) -> bool:
    """True if every character is in the GSM 03.38 default alphabet or its extension table."""
    return all(c in GSM_SEPTETS for c in text)


def _segments(units: list[int], single: int, multi: int) -> int:
    """Greedy packing of indivisible units (1 or 2 long) into parts."""
    total = sum(units)
    if total <= single:
        return 1
    parts, used = 1, 0
    for u in units:
        if used + u > multi:
            parts += 1
            used = 0
        used += u
    return parts


def sms_info(text: str) -> SmsInfo:
    """Encoding, length and segment count of an SMS body.

    GSM-7 when every character is in the default alphabet or extension table
    (extension characters such as ``€ [ ] { } ^ ~ \\ |`` cost 2 septets), else
    UCS-2 counted in UTF-16 code units (astral characters, e.g. emoji, cost 2).
    Single message: 160 septets / 70 units; multipart: 153 / 67 per part, never
    splitting an escape pair or a surrogate pair. ``""`` is 0 chars, 1 segment.
    """
    septets = GSM_SEPTETS
    units: list[int] = []
    try:
        units = [septets[c] for c in text]
        encoding, single, multi = "GSM-7", GSM_SINGLE, GSM_MULTI
    except KeyError:
        units = [2 if ord(c) > 0xFFFF else 1 for c in text]
        encoding, single, multi = "UCS-2", UCS2_SINGLE, UCS2_MULTI
    return SmsInfo(encoding, sum(units), _segments(units, single, multi))


_QUOTE1 = "'"
_QUOTE2 = '"'
_GSM_REPLACEMENTS: dict[str, str] = {}
for _chars, _repl in [
    ("\u2018\u2019\u201a\u201b\u2032\u2035\u0060\u00b4\u02bc\u02b9\u2039\u203a", _QUOTE1),
    ("\u201c\u201d\u201e\u201f\u2033\u2036\u00ab\u00bb\u02ba", _QUOTE2),
    ("\u2034", "'''"),
    ("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2043", "-"),
    ("\u2022\u2023\u25e6\u2219\u00b7\u25aa\u25cf", "-"),
    ("\u2026", "..."),
    ("\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
     "\u202f\u205f\u3000\t", " "),
    ("\u200b\u2060\ufeff\u00ad", ""),  # invisible: zero-width space, soft hyphen
    ("\u00d7", "x"),
    ("\u00f7", "/"),
    ("\u2044\u2215", "/"),
    ("\u0153", "oe"),
    ("\u0152", "OE"),
    ("\u00fe", "th"),
    ("\u00de", "Th"),
    ("\u00f0\u0111", "d"),
    ("\u00d0\u0110", "D"),
    ("\u0142", "l"),
    ("\u0141", "L"),
    ("\u0131", "i"),
    ("\u00aa", "a"),
    ("\u00ba", "o"),
    ("\u00b5", "u"),
]:
    for _c in _chars:
        _GSM_REPLACEMENTS[_c] = _repl
del _chars, _repl, _c


def _gsm_letter(ch: str) -> str | None:
    """GSM equivalent of an accented letter GSM lacks: strip combining marks from
    the end of its decomposition until a GSM letter remains (ǘ → ü, ê → e)."""
    decomposed = unicodedata.normalize("NFD", ch)
    while len(decomposed) > 1 and unicodedata.combining(decomposed[-1]):
        decomposed = decomposed[:-1]
        candidate = unicodedata.normalize("NFC", decomposed)
        if len(candidate) == 1 and candidate in GSM_SEPTETS:
            return candidate
    return None


def _to_gsm_once(text: str) -> str:
    out: list[str] = []
    last_gsm = False  # was the last emitted character a GSM character?
    for ch in unicodedata.normalize("NFC", text):
        if ch in GSM_SEPTETS:
            out.append(ch)
            last_gsm = True
            continue
        repl = _GSM_REPLACEMENTS.get(ch)
        if repl is None:
            repl = _gsm_letter(ch)
        if repl is not None:
            out.append(repl)
            last_gsm = last_gsm if repl == "" else True
        elif unicodedata.combining(ch) or ch in "\ufe0e\ufe0f\u20e3":
            # a mark left on a GSM letter (no precomposed GSM form): drop it;
            # on anything else (Amharic, emoji, ...) keep it.
            if not last_gsm:
                out.append(ch)
        else:
            out.append(ch)
            last_gsm = False
    return "".join(out)


def to_gsm(text: str) -> str:
    """Replace characters with close GSM-7 equivalents so the text is not sent as UCS-2.

    Curly quotes and guillemets → ``'``/``"``, dashes and minus → ``-``, ``…`` →
    ``...``, unicode spaces → space, bullets → ``-``, ``×`` → ``x``, primes,
    ``œ`` → ``oe``, accented letters GSM lacks → their base letter (``ê`` → ``e``,
    ``ç`` → ``c``) while GSM's own accented letters (``é è à ñ ü Ç Ø`` ...) stay.
    Anything else (emoji, Amharic, ...) is left as is. Idempotent; a GSM-7 text
    is returned unchanged, and the result is never billed as more segments
    than the input (if it would be, the input is returned as is).
    """
    if is_gsm(text):
        return text
    # Normalisation can in rare cases compose across a removed character; loop
    # to the fixed point so the function is idempotent by construction.
    out = text
    for _ in range(4):
        new = _to_gsm_once(out)
        if new == out:
            break
        out = new
    # "…" → "..." can cost more than it saves (e.g. when an emoji keeps the
    # text UCS-2): never return something billed as more segments.
    if sms_info(out).segments > sms_info(text).segments:
        return text
    return out


def usable_screen(prefix: str = "CON ", limit: int = 160) -> int:
    """Characters left for the body of a USSD screen after ``prefix``."""
    return limit - len(prefix)


# --------------------------------------------------------------------------
# Money, dates, masking
# --------------------------------------------------------------------------

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
    groups = []
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


# --------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------


class TemplateError(Exception):
    """A template that does not compile; ``.message``, ``.lineno``, ``.name``."""

    def __init__(self, message: str, lineno: int | None = None, name: str | None = None):
        super().__init__(message)
        self.message = message
        self.lineno = lineno
        self.name = name

    def __str__(self) -> str:
        where = self.name or "<template>"
        if self.lineno:
            where += f":{self.lineno}"
        return f"{where}: {self.message}"


@jinja2.pass_context
def _money_filter(ctx: jinja2.runtime.Context, value: Any, currency: Any = None) -> str:
    return format_money(value, currency, ctx.get("lang", "en"))


@jinja2.pass_context
def _date_filter(ctx: jinja2.runtime.Context, value: Any, style: str = "medium") -> str:
    return format_date(value, style, ctx.get("lang", "en"))


@jinja2.pass_context
def _day_filter(ctx: jinja2.runtime.Context, value: Any, today: Any, style: str = "medium") -> str:
    return format_day(value, today, ctx.get("lang", "en"), style)


class _Env(jinja2.sandbox.ImmutableSandboxedEnvironment):
    def make_globals(self, d):
        """Templates without globals of their own share the environment's ``globals`` dict itself (live,
        as Jinja's ``ChainMap`` over it is): every render copies its template's globals into a new
        context, and copying a dict costs a third of copying a ``ChainMap``."""
        return self.globals if not d else super().make_globals(d)


def make_env() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    """Sandboxed Jinja environment for flow and locale texts: StrictUndefined,
    no autoescape, no ``trim_blocks`` (a text reads as written), filters ``money``, ``date``,
    ``day`` (``{{ due.date | day(due.today) }}``: today, tomorrow, on 18 Dec 2026) and ``mask`` (the
    first three format for the context variable ``lang``, default ``"en"``)."""
    env = _Env(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=False,
        keep_trailing_newline=False,
    )
    env.filters["money"] = _money_filter
    env.filters["date"] = _date_filter
    env.filters["day"] = _day_filter
    env.filters["mask"] = mask
    return env


def _template_error(exc: jinja2.TemplateSyntaxError, name: str | None) -> TemplateError:
    return TemplateError(exc.message or str(exc), exc.lineno, name or exc.name)


#: what makes a text a Jinja template (expression, statement, comment)
TEMPLATE_MARKS = ("{{", "{%", "{#")


def is_static(source: str) -> bool:
    """True when ``source`` has no Jinja syntax: Jinja would render it as it is (bar one trailing newline,
    and texts are stripped), so the flows keep the text itself and no hop renders it."""
    return not any(mark in source for mark in TEMPLATE_MARKS)


def compile_template(env: jinja2.Environment, source: str, *, name: str) -> jinja2.Template:
    """Compile ``source`` once (``name`` shows in tracebacks and errors).
    Raises :class:`TemplateError` on syntax errors and unknown filters/tests."""
    try:
        code = env.compile(source, name=name, filename=name)
    except jinja2.TemplateSyntaxError as exc:
        raise _template_error(exc, name) from None
    return env.template_class.from_code(env, code, env.make_globals(None), None)


def template_variables(env: jinja2.Environment, source: str) -> set[str]:
    """Names a template reads from its context (for lint). Raises :class:`TemplateError`."""
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise _template_error(exc, None) from None
    return set(jinja2.meta.find_undeclared_variables(ast))


# --------------------------------------------------------------------------
# Locales
# --------------------------------------------------------------------------


class LocaleError(Exception):
    """A locale file that cannot be used; ``.message``, ``.file``, ``.line``
    (1-based, None when the problem is the file as a whole)."""

    def __init__(self, message: str, file: str, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


# ISO 639-1 two-letter codes; three-letter codes (ISO 639-2/3, e.g. "kik",
# "luo") are accepted by shape. An optional region/script: en-KE, pt_BR, sr-Latn.
_ISO639_1 = frozenset("""
aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr
cs cu cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu
gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk
kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms
mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro
ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl
tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
""".split())
_LANG_RE = re.compile(r"^([a-z]{2,3})(?:[-_](?:[A-Z]{2}|[0-9]{3}|[A-Z][a-z]{3}))?$")
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def is_language_code(name: str) -> bool:
    """``en``, ``sw``, ``fr-CI``, ``pt_BR``, ``kik`` yes; ``english``, ``xx``, ``EN`` no."""
    m = _LANG_RE.match(name)
    return bool(m) and (len(m.group(1)) == 3 or m.group(1) in _ISO639_1)


def _parse_locale(path: Path, data: bytes) -> dict[str, tuple[str, int]]:
    """Flatten one locale file to ``{key: (text, line)}``."""
    file = str(path)
    try:
        root = yaml.compose(data.decode("utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except UnicodeDecodeError as exc:
        raise LocaleError(f"not UTF-8: {exc}", file) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise LocaleError(f"invalid YAML: {problem}", file, mark.line + 1 if mark else None) from None
    out: dict[str, tuple[str, int]] = {}
    if root is None:
        return out
    if not isinstance(root, yaml.MappingNode):
        raise LocaleError("a locale file must be a mapping of keys to texts", file,
                          root.start_mark.line + 1)

    def walk(node: yaml.MappingNode, prefix: str) -> None:
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == _MERGE_TAG:
                raise LocaleError("merge keys (<<) are not supported in locale files", file, line)
            if not isinstance(key_node, yaml.ScalarNode) or not key_node.value:
                raise LocaleError("keys must be plain, non-empty names", file, line)
            key = prefix + str(key_node.value)  # raw text: `no:` is the key "no", not False
            if isinstance(value_node, yaml.MappingNode):
                walk(value_node, key + ".")
                continue
            if not isinstance(value_node, yaml.ScalarNode):
                kind = "list" if isinstance(value_node, yaml.SequenceNode) else "non-text value"
                raise LocaleError(f"{key}: text expected, got a {kind}", file,
                                  value_node.start_mark.line + 1)
            if value_node.tag != _STR_TAG:
                kind = value_node.tag.rsplit(":", 1)[-1]
                raise LocaleError(
                    f"{key}: text expected, got {kind} {value_node.value!r} (put it in quotes)",
                    file, value_node.start_mark.line + 1)
            if key in out:
                raise LocaleError(f"{key}: defined twice (first at line {out[key][1]})", file, line)
            out[key] = (value_node.value, line)

    walk(root, "")
    return out


class Locales:
    """Texts per language from ``<dir>/<lang>.yaml``, keys flattened with dots.

    Build with :meth:`load`; every key remembers the file and 1-based line
    that defines it, for lint messages."""

    def __init__(self, tables: dict[str, dict[str, tuple[str, int]]],
                 files: dict[str, str], digest: str):
        self._tables = tables
        self._files = files
        self._digest = digest
        langs = sorted(tables)
        if "en" in langs:
            langs.remove("en")
            langs.insert(0, "en")
        self.languages: tuple[str, ...] = tuple(langs)

    @classmethod
    def load(cls, directory: str | Path, display_root: str | Path | None = None) -> "Locales":
        """Read every ``*.yaml`` / ``*.yml`` in ``directory``. Raises :class:`LocaleError`
        for invalid YAML, non-text values (quote ``Yes``, ``No``, numbers), duplicate
        keys, a file name that is not a language code, or two files for one language.
        Files are named relative to ``display_root`` when given (``flows/locales/fr.yaml``)."""
        directory = Path(directory)

        def shown(p: Path) -> str:
            if display_root is not None:
                try:
                    return p.relative_to(display_root).as_posix()
                except ValueError:
                    pass
            return str(p)

        if not directory.is_dir():
            raise LocaleError("locale directory not found", shown(directory))
        paths = sorted(p for p in directory.iterdir()
                       if p.is_file() and p.suffix in (".yaml", ".yml"))
        tables: dict[str, dict[str, tuple[str, int]]] = {}
        files: dict[str, str] = {}
        digest = hashlib.sha256()
        for path in paths:
            lang = path.stem
            if not is_language_code(lang):
                raise LocaleError(
                    f"file name {path.name!r} is not a language code (e.g. en.yaml, sw.yaml, fr-CI.yaml)",
                    shown(path))
            if lang in tables:
                raise LocaleError(f"language {lang!r} defined twice ({files[lang]})", shown(path))
            data = path.read_bytes()
            digest.update(f"{path.name}\0{len(data)}\0".encode())
            digest.update(data)
            tables[lang] = _parse_locale(Path(shown(path)), data)
            files[lang] = shown(path)
        return cls(tables, files, digest.hexdigest())

    def keys(self, lang: str) -> set[str]:
        """All keys of ``lang`` (empty for an unknown language)."""
        return set(self._tables.get(lang, ()))

    def has(self, lang: str, key: str) -> bool:
        """Whether ``lang`` defines ``key``."""
        return key in self._tables.get(lang, ())

    def source(self, lang: str, key: str) -> str:
        """Template source of ``key`` in ``lang``; KeyError if missing."""
        return self._tables[lang][key][0]

    def where(self, lang: str, key: str) -> tuple[str, int]:
        """``(file, line)`` defining ``key`` in ``lang``; KeyError if missing."""
        return self._files[lang], self._tables[lang][key][1]

    def file(self, lang: str) -> str:
        """Path of the file for ``lang``."""
        return self._files[lang]

    def missing(self) -> list[tuple[str, str, str, int]]:
        """``(missing_lang, key, file, line)`` for every key some language defines
        and another lacks; file:line point at its definition in the first
        language (``en`` first) that has it. Sorted by language, then key."""
        out = []
        all_keys = set().union(*(t.keys() for t in self._tables.values())) if self._tables else set()
        for key in sorted(all_keys):
            owner = next(lang for lang in self.languages if key in self._tables[lang])
            file, line = self.where(owner, key)
            for lang in self.languages:
                if key not in self._tables[lang]:
                    out.append((lang, key, file, line))
        order = {lang: i for i, lang in enumerate(self.languages)}
        out.sort(key=lambda m: (order[m[0]], m[1]))
        return out

    def insertion_line(self, lang: str, key: str, like: str) -> int:
        """Where ``key`` (missing in ``lang``) belongs in ``lang``'s file: the line of the last key
        that comes before it in ``like``'s file and exists in ``lang`` (1 when there is none)."""
        order = sorted(self._tables.get(like, {}).items(), key=lambda kv: kv[1][1])
        line = 1
        for k, _ in order:
            if k == key:
                break
            if k in self._tables.get(lang, {}):
                line = self._tables[lang][k][1]
        return line

    def content_hash(self) -> str:
        """sha256 hex of the files' names and bytes, in name order."""
        return self._digest


# --------------------------------------------------------------------------
# USSD pagination
# --------------------------------------------------------------------------

_TEXT, _OPTION = 0, 1


def fit_ussd(body: str, *, prefix: str = "END ", limit: int = 160) -> bool:
    """Whether ``prefix + body`` fits one USSD screen of ``limit`` characters."""
    return len(prefix) + len(body) <= limit


def _truncate(line: str, cap: int) -> str:
    if len(line) <= cap:
        return line
    if cap <= 3:
        return line[:cap]
    return line[: cap - 3].rstrip() + "..."


def _fill(items: deque, cap: int) -> list[str]:
    """Take lines from ``items`` for one page of at most ``cap`` characters.

    Text lines are kept whole when they fit a page, else split at spaces, else
    hard-split; options are never split (one longer than ``cap`` is truncated
    with ``...``). The page is never left empty."""
    out: list[str] = []
    used = 0
    while items:
        kind, line = items[0]
        sep = 1 if out else 0
        room = cap - used - sep
        if len(line) <= room:
            out.append(line)
            used += sep + len(line)
            items.popleft()
            continue
        if kind == _OPTION or len(line) <= cap:
            if out:
                break  # whole line on the next page
            out.append(_truncate(line, cap))  # only options can get here
            items.popleft()
            break
        # a text line longer than a page: split at the last space that fits
        cut = line.rfind(" ", 0, room + 1) if room > 0 else -1
        head = line[:cut].rstrip(" ") if cut > 0 else ""
        if not head:
            if out:
                break
            head, rest = line[:cap], line[cap:]  # one very long word
        else:
            rest = line[cut + 1:]
        rest = rest.lstrip(" ")
        out.append(head)
        if rest:
            items[0] = (kind, rest)
        else:
            items.popleft()
        break
    return out


def _paginate(items: list[tuple[int, str]], budget: int, more_label: str, back_label: str) -> list[str]:
    if len("\n".join(line for _, line in items)) <= budget:
        return ["\n".join(line for _, line in items)]
    more, back = 1 + len(more_label), 1 + len(back_label)
    if budget - more - back < 1:
        raise ValueError("screen too small for the navigation lines")
    # trailing spaces are invisible; trailing blank lines would make an empty page
    items = [(k, line.rstrip() if k == _TEXT else line) for k, line in items]
    while items and items[-1][0] == _TEXT and not items[-1][1]:
        items.pop()
    queue = deque(items)
    pages: list[str] = []
    while queue:
        first = not pages
        cap_last = budget - (0 if first else back)
        # leading blank lines of a page carry no information
        while queue and queue[0][0] == _TEXT and not queue[0][1]:
            queue.popleft()
        if not queue:
            break
        if len("\n".join(line for _, line in queue)) <= cap_last:
            body = [line for _, line in queue]
            queue.clear()
        elif len(queue) == 1 and queue[0][0] == _OPTION:
            body = [_truncate(queue.popleft()[1], cap_last)]  # last item, alone
        else:
            body = _fill(queue, cap_last - more)
            while len(body) > 1 and not body[-1]:
                body.pop()
        nav = ([] if first else [back_label]) + ([more_label] if queue else [])
        pages.append("\n".join(body + nav))
    return pages


def _text_items(text: str) -> list[tuple[int, str]]:
    return [(_TEXT, line) for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]


def _fits(items: list[tuple[int, str]], budget: int) -> bool:
    return len("\n".join(line for _, line in items)) <= budget


#: a first line this short may head every page of a long text
HEADING_MAX = 40


def _with_heading(items: list[tuple[int, str]], budget: int, more_label: str, back_label: str) -> list[str] | None:
    """Pages that each start with the text's first line and the page number, ``Akiba *0901 (2/3)``;
    None when the first line is no heading (empty, longer than :data:`HEADING_MAX`, or alone)."""
    head = items[0][1].strip().rstrip(":").rstrip() if items else ""
    if not head or len(head) > HEADING_MAX or len(items) < 2:
        return None
    rest = items[1:]
    for width in (1, 2):                         # room for "(9/9)", then for "(99/99)"
        room = budget - len(head) - len(" (/)") - 2 * width - 1
        try:
            pages = _paginate(rest, room, more_label, back_label)
        except ValueError:
            return None
        if len(str(len(pages))) <= width:
            n = len(pages)
            return [f"{head} ({i}/{n})\n{page}" for i, page in enumerate(pages, 1)]
    return None


def paginate_text(text: str, *, limit: int = 160, prefix_len: int = 4,
                  more_label: str = "98. More", back_label: str = "0. Back",
                  error: str | None = None, heading: bool = False) -> list[str]:
    """Split ``text`` into USSD page bodies (without the ``CON ``/``END `` prefix).

    A text that fits is one page with no navigation. Otherwise pages break at
    line breaks (a line that fits a page is never split), long lines at spaces,
    words longer than a page are hard-split. Page 1 ends with ``more_label``,
    middle pages with ``back_label`` and ``more_label``, the last with
    ``back_label``. Each page + ``prefix_len`` <= ``limit``. Whitespace at page
    breaks and blank lines at the start of a page are dropped; no word is lost.

    ``heading``: when the text needs more than one page and its first line is
    short (a heading such as ``Akiba *0901``), every page starts with that line
    and its number, ``Akiba *0901 (2/2)``.

    ``error`` (an answer that was refused, e.g. "Enter an amount in numbers")
    comes first, and the question stays on the first screen: when error and
    text do not fit one page, the text's first lines are left out (the caller
    has just seen them) until the error and the last line, the question, fit.
    """
    budget = limit - prefix_len
    items = _text_items(text)
    if error:
        err = _text_items(error)
        for start in range(len(items)):
            if _fits(err + items[start:], budget):
                return ["\n".join(line for _, line in err + items[start:])]
        items = err + items
    elif heading and not _fits(items, budget):
        pages = _with_heading(items, budget, more_label, back_label)
        if pages:
            return pages
    return _paginate(items, budget, more_label, back_label)


def paginate_menu(title: str, options: list[str], *, limit: int = 160, prefix_len: int = 4,
                  more_label: str = "98. More", back_label: str = "0. Back",
                  error: str | None = None) -> list[str]:
    """Split a menu into USSD page bodies (without the ``CON `` prefix).

    ``options`` are numbered lines (``"1. Balance"``). If everything fits: one
    page, no navigation. Otherwise page 1 = title + as many options as fit +
    ``more_label``; later pages = options + ``back_label`` (+ ``more_label`` if
    more remain). The title appears only at the start (a title too long for a
    page is wrapped like :func:`paginate_text`, options follow it). Options are
    never split across pages; an option longer than a whole page is truncated
    with ``...``. Each page + ``prefix_len`` <= ``limit``.

    ``error`` (e.g. "Invalid choice") comes first; when error, title and options
    do not fit one page, the title is left out (the caller has just read it) so
    that the first options stay on the first screen.
    """
    budget = limit - prefix_len
    title_items = _text_items(title) if title else []
    opts = [(_OPTION, o) for o in options]
    if error:
        err = _text_items(error)
        items = err + title_items + opts
        if not _fits(items, budget):
            items = err + opts
        return _paginate(items, budget, more_label, back_label)
    return _paginate(title_items + opts, budget, more_label, back_label)
