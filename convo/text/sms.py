"""SMS encoding: GSM-7 or UCS-2, characters, segments (:func:`sms_info`), and :func:`to_gsm`, which
replaces look-alike characters so a text stays GSM-7 (one segment holds 160 GSM-7 characters, 70 UCS-2)."""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)

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
GSM_REPLACEMENTS: dict[str, str] = {}
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
        GSM_REPLACEMENTS[_c] = _repl
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
        repl = GSM_REPLACEMENTS.get(ch)
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
