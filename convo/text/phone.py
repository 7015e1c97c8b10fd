"""Phone numbers: one canonical form (E.164) in, the forms MFIs store out.

Operators and gateways send ``+254712345678``, ``254712345678`` or
``tel:+254…``; MFI staff type ``0712 345 678`` into Mifos X. Everything inside
convo uses E.164; :func:`stored_formats` gives the spellings to try when
searching Fineract.

Decision: a number is accepted when ``phonenumbers`` says its length is
possible for its country (``IS_POSSIBLE``, not "local only"). We do not insist
on ``is_valid_number``: its range tables lag the regulators (new prefixes) and
test/sandbox ranges, and rejecting a real caller is worse than a search that
finds nobody. Ambiguous digits are read in turn as the region's own country
code without ``+``, a national number, ``00``-international, or another
country code without ``+``; the first *valid* reading wins, else the first
possible one (German numbers, say, are possible at almost any length).
"""
from __future__ import annotations

import functools
import re

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat

__all__ = ["InvalidPhone", "normalize", "read_stored", "stored_formats"]

_SEPARATORS = re.compile(r"[\s\-./()\u00a0]")
_POSSIBLE = phonenumbers.ValidationResult.IS_POSSIBLE
_REASONS = {
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.INVALID_LENGTH: "wrong length for its country",
    phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "local number without area code",
}


class InvalidPhone(ValueError):
    """The text is not a usable phone number; ``str(exc)`` says why."""


@functools.lru_cache(maxsize=65536)
def normalize(raw: str, region: str = "KE") -> str:
    """Return ``raw`` in E.164 (``+254712345678``) or raise :class:`InvalidPhone`.

    ``region`` is the country assumed for numbers written without a country
    code (``0712345678``, ``712345678``). Digits that start with a country
    code but lack the ``+`` (``255712345678``) and ``00``-prefixed
    international numbers are understood too.
    """
    if not isinstance(raw, str):
        raise InvalidPhone(f"phone number must be text, not {type(raw).__name__}")
    text = raw.strip()
    if text[:4].lower() == "tel:":
        text = text[4:]
    text = _SEPARATORS.sub("", text.split(";", 1)[0])  # RFC 3966 parameters dropped
    if not text:
        raise InvalidPhone("empty phone number")
    if not re.fullmatch(r"\+?[0-9]+", text):
        raise InvalidPhone(f"not a phone number: {raw!r}")

    best, reason = None, "not a phone number"
    for candidate in _readings(text, region):
        try:
            number = phonenumbers.parse(candidate, region)
        except NumberParseException as exc:
            reason = str(exc)
            continue
        verdict = phonenumbers.is_possible_number_with_reason(number)
        if verdict != _POSSIBLE:
            reason = _REASONS.get(verdict, "impossible number")
            continue
        if phonenumbers.is_valid_number(number):
            return _e164(number)
        best = best or number
    if best is None:
        raise InvalidPhone(f"invalid phone number {raw!r}: {reason}")
    return _e164(best)


def stored_formats(e164: str) -> list[str]:
    """The spellings under which an MFI may have stored ``e164``, most common first.

    ``+254712345678``, ``254712345678``, ``0712345678`` (national, with trunk
    prefix when the country has one) and ``712345678`` (national significant
    number), without duplicates.
    """
    try:
        number = phonenumbers.parse(e164, None)
    except NumberParseException as exc:
        raise InvalidPhone(f"not an E.164 number: {e164!r}: {exc}") from None
    canonical = _e164(number)
    nsn = phonenumbers.national_significant_number(number)
    region = phonenumbers.region_code_for_number(number)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region) if region else None
    trunk = (metadata.national_prefix or "") if metadata else ""
    forms = [canonical, canonical[1:], trunk + nsn, nsn]
    return list(dict.fromkeys(forms))


def read_stored(stored: str | None, region: str) -> str | None:
    """A number as typed into Mifos X, in E.164, or None when it is not a usable number.

    ``region`` is the country of the *client* (their office's region), never
    the caller's: ``771000127`` stored for a client of a Dakar office is
    ``+221771000127``, so it never matches the Kenyan caller +254771000127.
    A caller is a client only when ``read_stored(mobileNo, client_region)``
    equals the caller's own E.164 number.
    """
    if not stored:
        return None
    try:
        return normalize(stored, region)
    except InvalidPhone:
        return None


def _readings(text: str, region: str) -> list[str]:
    """Ways to read the digits, likeliest first: as given, ``00`` as ``+``, a bare
    country code. Digits that start with the region's own country code are read
    as ``+<cc>…`` first (``49151…`` in Germany is ``+49 151…``)."""
    if text.startswith("+"):
        return [text]
    if text.startswith("00"):
        return [text, "+" + text[2:]]
    if text.startswith("0"):
        return [text]
    if text.startswith(str(phonenumbers.country_code_for_region(region or ""))):
        return ["+" + text, text]
    return [text, "+" + text]


def _e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)
