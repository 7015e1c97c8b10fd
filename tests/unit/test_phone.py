"""Phone normalization: the spellings operators and MFIs use all meet in E.164."""
from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from convo.text.phone import InvalidPhone, normalize, stored_formats

KE = "+254712345678"


@pytest.mark.parametrize(
    "raw",
    [
        "+254712345678",
        "254712345678",
        "0712345678",
        "0712 345 678",
        "712345678",
        "tel:+254712345678",
        "tel:+254-712-345-678",
        " +254 712 345 678 ",
        "00254712345678",
        "(0712) 345-678",
    ],
)
def test_kenyan_spellings(raw):
    assert normalize(raw) == KE


def test_other_country_without_plus_in_default_region():
    assert normalize("255712345678") == "+255712345678"
    assert normalize("0621234567", region="TZ") == "+255621234567"
    assert normalize("77 123 45 67", region="SN") == "+221771234567"


@pytest.mark.parametrize(
    "raw", ["", "   ", "abc", "12", "+", "+999123456789", "0712345678123", "07123", "*384*12#", "tel:"]
)
def test_garbage_is_invalid_phone(raw):
    with pytest.raises(InvalidPhone):
        normalize(raw)


def test_non_text_is_invalid_phone():
    with pytest.raises(InvalidPhone):
        normalize(254712345678)  # type: ignore[arg-type]


def test_stored_formats_kenya():
    assert stored_formats(KE) == ["+254712345678", "254712345678", "0712345678", "712345678"]


def test_stored_formats_no_trunk_prefix_has_no_duplicates():
    assert stored_formats("+221771234567") == ["+221771234567", "221771234567", "771234567"]


def test_stored_formats_rejects_garbage():
    with pytest.raises(InvalidPhone):
        stored_formats("nonsense")


REGIONS = ["KE", "TZ", "UG", "RW", "NG", "GH", "ZA", "SN", "CI", "CM", "ML", "BF", "GB", "FR", "DE", "IN", "US"]


@st.composite
def real_numbers(draw):
    """Valid mobile numbers: a region's example number with its subscriber digits varied."""
    region = draw(st.sampled_from(REGIONS))
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    nsn = phonenumbers.national_significant_number(example)
    keep = draw(st.integers(min_value=max(2, len(nsn) - 6), max_value=len(nsn)))
    tail = draw(st.text(alphabet="0123456789", min_size=len(nsn) - keep, max_size=len(nsn) - keep))
    number = phonenumbers.parse(f"+{example.country_code}{nsn[:keep]}{tail}", None)
    assume(phonenumbers.is_valid_number(number))
    return region, phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@given(real_numbers())
def test_every_stored_format_normalizes_back(case):
    region, e164 = case
    forms = stored_formats(e164)
    assert forms[0] == e164 and len(forms) == len(set(forms))
    for form in forms:
        assert normalize(form, region=region) == e164, form


@given(real_numbers(), st.sampled_from(REGIONS))
def test_normalize_is_idempotent(case, other_region):
    _, e164 = case
    assert normalize(e164, region=other_region) == e164
    assert normalize(normalize(e164)) == e164


@given(st.text(max_size=40), st.sampled_from(REGIONS))
def test_garbage_only_ever_raises_invalid_phone(raw, region):
    try:
        result = normalize(raw, region=region)
    except InvalidPhone:
        return
    assert result.startswith("+") and normalize(result) == result


@given(st.text(alphabet="0123456789+ -()", max_size=20))
def test_digit_soup_only_ever_raises_invalid_phone(raw):
    try:
        normalize(raw)
    except InvalidPhone:
        pass
