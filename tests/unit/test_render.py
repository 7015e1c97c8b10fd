"""convo.text: SMS encoding (sms), money and dates (formats), templates and locales (templates), USSD pages (paging)."""
from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal

import jinja2
import jinja2.sandbox
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from convo.text.formats import format_date, format_money, mask
from convo.text.paging import fit_ussd, paginate_menu, paginate_text, usable_screen
from convo.text.sms import GSM_SEPTETS, SmsInfo, is_gsm, sms_info, to_gsm
from convo.text.templates import LocaleError, Locales, TemplateError, compile_template, make_env, template_variables

GSM_BASIC = "".join(c for c, n in GSM_SEPTETS.items() if n == 1)
GSM_EXT = "".join(c for c, n in GSM_SEPTETS.items() if n == 2)
MORE, BACK = "98. More", "0. Back"


# ---------------------------------------------------------------- SMS ----


def test_gsm_alphabet_comes_from_the_codec():
    assert len(GSM_BASIC) == 127  # 128 minus ESC
    assert set(GSM_EXT) == set("\f^{}\\[~]|€")
    assert "\x1b" not in GSM_SEPTETS


@pytest.mark.parametrize(
    "text, info",
    [
        ("", SmsInfo("GSM-7", 0, 1)),
        ("Salio lako ni KES 12,500.00. Asante.", SmsInfo("GSM-7", 36, 1)),
        ("Balance: €12", SmsInfo("GSM-7", 13, 1)),  # € is 2 septets
        ("[PIN] {ok} ^ ~ \\ |", SmsInfo("GSM-7", 18 + 8, 1)),
        ("Votre prêt est approuvé", SmsInfo("UCS-2", 23, 1)),  # ê is not GSM
        ("Asante 🙏", SmsInfo("UCS-2", 9, 1)),  # emoji: surrogate pair
        ("ሰላም", SmsInfo("UCS-2", 3, 1)),
        ("a" * 160, SmsInfo("GSM-7", 160, 1)),
        ("a" * 161, SmsInfo("GSM-7", 161, 2)),
        ("a" * 306, SmsInfo("GSM-7", 306, 2)),
        ("a" * 307, SmsInfo("GSM-7", 307, 3)),
        ("€" * 80, SmsInfo("GSM-7", 160, 1)),
        ("ê" * 70, SmsInfo("UCS-2", 70, 1)),
        ("ê" * 71, SmsInfo("UCS-2", 71, 2)),
        ("ê" * 134, SmsInfo("UCS-2", 134, 2)),
        ("ê" * 135, SmsInfo("UCS-2", 135, 3)),
    ],
)
def test_sms_info(text, info):
    assert sms_info(text) == info


def test_escape_pair_is_never_split_across_parts():
    # 306 septets would be exactly 2 x 153, but the € straddles the boundary.
    text = "a" * 152 + "€" + "a" * 152
    assert sms_info(text) == SmsInfo("GSM-7", 306, 3)


def test_surrogate_pair_is_never_split_across_parts():
    text = "a" * 66 + "🙂" + "a" * 66  # 134 units = 2 x 67, emoji straddles
    assert sms_info(text) == SmsInfo("UCS-2", 134, 3)


@given(st.text(max_size=500))
def test_sms_info_segments_are_consistent(text):
    info = sms_info(text)
    single, multi = (160, 153) if info.encoding == "GSM-7" else (70, 67)
    assert (info.segments == 1) == (info.chars <= single)
    if info.segments > 1:
        # greedy packing wastes at most one unit per part
        assert math.ceil(info.chars / multi) <= info.segments <= math.ceil(info.chars / (multi - 1))
    assert info.encoding == ("GSM-7" if is_gsm(text) else "UCS-2")
    if info.encoding == "UCS-2":
        assert info.chars == len(text.encode("utf-16-le")) // 2


@given(st.text(alphabet=GSM_BASIC, max_size=400))
def test_basic_gsm_text_counts_one_septet_per_char(text):
    info = sms_info(text)
    assert info.encoding == "GSM-7" and info.chars == len(text)
    assert info.chars == len(text.encode("gsm03.38"))


@given(st.text(alphabet=GSM_BASIC + GSM_EXT, max_size=400))
def test_gsm_septets_match_the_codec(text):
    assert sms_info(text).chars == len(text.encode("gsm03.38"))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Your loan \u201cBiashara\u201d is due \u2013 pay now\u2026",
         'Your loan "Biashara" is due - pay now...'),
        ("Don\u2019t share your PIN", "Don't share your PIN"),
        ("Votre prêt à la fenêtre n\u2019est pas dû", "Votre pret à la fenetre n'est pas du"),
        ("« Épargne » : 12\u202f500,00 XOF", '" Épargne " : 12 500,00 XOF'),
        ("\u2022 Balance\n\u2022 Mini statement", "- Balance\n- Mini statement"),
        ("3 \u00d7 1,000 = 3,000; \u22121 day", "3 x 1,000 = 3,000; -1 day"),
        ("c\u0153ur, \u0152uvre", "coeur, OEuvre"),
        ("Façade, GARÇON", "Facade, GARÇON"),  # GSM has Ç but not ç
        # GSM's own accented letters stay
        ("é è ù ì ò Ç Ø ø Å å Ä Ö Ñ Ü ä ö ñ ü à É ß Æ æ", "é è ù ì ò Ç Ø ø Å å Ä Ö Ñ Ü ä ö ñ ü à É ß Æ æ"),
        ("e\u0301tat", "état"),  # decomposed é is recomposed, not dropped
        ("Asante \U0001f64f", "Asante \U0001f64f"),  # emoji untouched
        ("ሰላም \u2014 ok", "ሰላም - ok"),  # Amharic untouched, dash replaced
    ],
)
def test_to_gsm(text, expected):
    assert to_gsm(text) == expected


def test_to_gsm_makes_french_texts_cheap():
    text = "Rappel\u00a0: votre échéance de 12\u202f500 XOF est prévue le 5 août \u2014 merci\u00a0!"
    assert sms_info(text).encoding == "UCS-2"
    assert sms_info(to_gsm(text)).encoding == "GSM-7"


def test_to_gsm_does_not_expand_when_it_cannot_help():
    text = "\u2026" * 70  # 1 UCS-2 segment; "..." x 70 would be 210 septets = 2 segments
    assert to_gsm(text) == text


@given(st.text(max_size=300))
@example("\u1100\u200b\u1161")  # removing a zero-width space must not re-compose jamo twice
@example("q\u0301\u0302")
def test_to_gsm_is_idempotent_and_never_costs_more(text):
    once = to_gsm(text)
    assert to_gsm(once) == once
    assert sms_info(once).segments <= sms_info(text).segments
    if is_gsm(text):
        assert once == text


@given(st.text(alphabet=st.characters(codec="latin-1"), max_size=200))
def test_to_gsm_turns_latin1_letters_into_gsm(text):
    # every Latin-1 letter has a GSM equivalent or base letter
    assert is_gsm(to_gsm("".join(c for c in text if c.isalpha())))


def test_usable_screen():
    assert usable_screen() == 156
    assert usable_screen("END ") == 156
    assert usable_screen("", 182) == 182


# ---------------------------------------------------------- templates ----


@pytest.fixture(scope="module")
def env():
    return make_env()


def render(env, source, **ctx):
    return compile_template(env, source, name="test").render(**ctx)


def test_env_is_immutable_sandbox_with_strict_undefined(env):
    assert isinstance(env, jinja2.sandbox.ImmutableSandboxedEnvironment)
    with pytest.raises(jinja2.UndefinedError):
        render(env, "Hello {{ name }}")
    with pytest.raises(jinja2.exceptions.SecurityError):
        render(env, "{{ items.append(4) }}", items=[1, 2, 3])
    with pytest.raises(jinja2.exceptions.SecurityError):
        render(env, "{{ x.__class__.__mro__ }}", x="")
    assert render(env, "<b>{{ name }}</b>", name="A & B") == "<b>A & B</b>"  # no autoescape


def test_texts_read_as_written_and_no_trailing_newline(env):
    # no trim_blocks: a newline after an inline {% endif %} stays, as a product manager expects
    src = "Due: 500{% if overdue %} (late){% endif %}\nBy 5 May"
    assert render(env, src, overdue=True) == "Due: 500 (late)\nBy 5 May"
    loop = "Mini statement:{% for t in txns %}\n{{ t }}{% endfor %}"
    assert render(env, loop, txns=["Deposit 500", "Withdrawal 200"]) == (
        "Mini statement:\nDeposit 500\nWithdrawal 200"
    )
    assert render(env, "Hi {{ name }}\n", name="Amina") == "Hi Amina"


@pytest.mark.parametrize(
    "lang, expected",
    [
        ("en", "Your balance is KES 12,500.00 as of 5 Apr 2024. Account *0042"),
        ("sw", "Your balance is KES 12,500.00 as of 5 Apr 2024. Account *0042"),
        ("fr", "Your balance is 12 500,00 KES as of 5 avr. 2024. Account *0042"),
    ],
)
def test_filters_follow_the_conversation_language(env, lang, expected):
    src = "Your balance is {{ bal|money(cur) }} as of {{ day|date }}. Account {{ acct|mask }}"
    out = render(env, src, lang=lang, bal=Decimal("12500"), cur={"code": "KES", "decimal_places": 2},
                 day=[2024, 4, 5], acct="000000042")
    assert out == expected
    assert is_gsm(out)


def test_filters_default_to_english_without_lang(env):
    assert render(env, "{{ 1500|money('UGX') }} {{ '2024-08-01'|date }}") == "UGX 1,500 1 Aug 2024"


def test_realistic_swahili_template(env):
    src = ("Habari {{ name }}, malipo yako ya {{ due|money(cur) }} yanadaiwa tarehe "
           "{{ on|date }}. Akaunti {{ acct|mask(3) }}.")
    out = render(env, src, lang="sw-KE", name="Wanjiku", due="1250.5", cur="KES", on="2024-03-15",
                 acct="LN-000314")
    assert out == ("Habari Wanjiku, malipo yako ya KES 1,250.50 yanadaiwa tarehe 15 Mac 2024. "
                   "Akaunti *314.")


def test_syntax_error_has_line_number(env):
    with pytest.raises(TemplateError) as err:
        compile_template(env, "line one\nline two {{ oops(\n", name="balance.ok")
    assert err.value.lineno == 2
    assert err.value.name == "balance.ok"
    assert "balance.ok:2" in str(err.value)
    assert err.value.message


def test_unknown_filter_is_a_template_error(env):
    with pytest.raises(TemplateError) as err:
        compile_template(env, "{{ amount|currency }}", name="x")
    assert "currency" in err.value.message


def test_template_variables(env):
    src = "{% set total = a + b %}{{ total|money(cur) }} {% for t in txns %}{{ t.amount }}{% endfor %}"
    assert template_variables(env, src) == {"a", "b", "cur", "txns"}
    with pytest.raises(TemplateError):
        template_variables(env, "{% if %}")


# ------------------------------------------------------ money, dates ----


@pytest.mark.parametrize(
    "value, currency, lang, expected",
    [
        (Decimal("12500"), "KES", "en", "KES 12,500.00"),
        (Decimal("12500"), "KES", "sw", "KES 12,500.00"),
        (Decimal("12500"), "XOF", "fr", "12 500 XOF"),
        (Decimal("1234567.891"), {"code": "XOF", "decimal_places": 2}, "fr", "1 234 567,89 XOF"),
        (12500, {"code": "XOF", "decimal_places": 0, "in_multiples_of": 5}, "fr", "12 500 XOF"),
        ("2500.5", {"code": "KES", "decimalPlaces": 2, "inMultiplesOf": 1}, "en", "KES 2,500.50"),
        (Decimal("0.005"), "KES", "en", "KES 0.01"),  # ROUND_HALF_UP
        (Decimal("0.015"), "KES", "en", "KES 0.02"),  # not banker's rounding
        (Decimal("-1500.75"), "KES", "en", "-KES 1,500.75"),
        (Decimal("-1500.75"), "XAF", "fr", "-1 501 XAF"),
        (Decimal("-0.001"), "KES", "en", "KES 0.00"),  # no "-0.00"
        (Decimal("999.999"), None, "en", "1,000.00"),
        (Decimal("1E+3"), "USD", "en", "USD 1,000.00"),
        (Decimal("12.345"), "KWD", "en", "KWD 12.345"),
        (Decimal("12500"), "KES", "am", "KES 12,500.00"),  # unknown language: as en
        (0.1 + 0.2, "KES", "en", "KES 0.30"),
    ],
)
def test_money(value, currency, lang, expected):
    assert format_money(value, currency, lang) == expected


def test_money_is_exact_beyond_float_precision():
    assert format_money(Decimal("12345678901234567890.125"), "KES") == "KES 12,345,678,901,234,567,890.13"


@pytest.mark.parametrize("bad", [None, True, "12,500", "abc", Decimal("NaN"), Decimal("Infinity"), [1]])
def test_money_rejects_non_amounts(bad):
    with pytest.raises((TypeError, ValueError)):
        format_money(bad, "KES")


@settings(max_examples=120)
@given(
    st.decimals(allow_nan=False, allow_infinity=False, min_value=Decimal("-1e15"),
                max_value=Decimal("1e15")),
    st.integers(min_value=0, max_value=3),
    st.sampled_from(["en", "sw", "fr"]),
)
def test_money_round_trips_its_digits(value, places, lang):
    out = format_money(value, {"code": "KES", "decimal_places": places}, lang)
    expected = value.quantize(Decimal(1).scaleb(-places), rounding="ROUND_HALF_UP")
    point = "," if lang == "fr" else "."
    number = out.replace("KES", "").strip()
    if lang == "fr":
        assert out.endswith(" KES") or out == "KES"
        number = number.replace(" ", "").replace(",", ".")
    else:
        assert "KES " in out
        number = number.replace("-KES", "-").replace(",", "").replace(" ", "")
    assert Decimal(number) == expected
    assert (point in out) == (places > 0)
    assert out.startswith("-") == (expected < 0)
    assert re.sub(r"\D", "", out) == re.sub(r"\D", "", f"{abs(expected):f}")
    assert is_gsm(out)


@pytest.mark.parametrize(
    "lang, medium, long",
    [
        ("en", "5 Aug 2024", "5 August 2024"),
        ("sw", "5 Ago 2024", "5 Agosti 2024"),
        ("fr", "5 aout 2024", "5 aout 2024"),  # û is not GSM-7: "août" is written "aout"
    ],
)
def test_date_languages(lang, medium, long):
    assert format_date(dt.date(2024, 8, 5), "medium", lang) == medium
    assert format_date(dt.date(2024, 8, 5), "long", lang) == long
    assert format_date(dt.date(2024, 8, 5), "short", lang) == "05/08/2024"


def test_date_month_names():
    months = [format_date(dt.date(2024, m, 1), lang="fr") for m in range(1, 13)]
    assert months == ["1 janv. 2024", "1 févr. 2024", "1 mars 2024", "1 avr. 2024", "1 mai 2024",
                      "1 juin 2024", "1 juil. 2024", "1 aout 2024", "1 sept. 2024", "1 oct. 2024",
                      "1 nov. 2024", "1 déc. 2024"]
    sw = [format_date([2024, m, 1], lang="sw").split()[1] for m in range(1, 13)]
    assert sw == "Jan Feb Mac Apr Mei Jun Jul Ago Sep Okt Nov Des".split()
    for lang in ("en", "sw", "fr"):
        for style in ("short", "medium", "long"):
            for m in range(1, 13):
                assert is_gsm(format_date([2024, m, 28], style, lang))


def test_date_input_forms_and_errors():
    assert format_date(dt.datetime(2024, 4, 5, 23, 59)) == "5 Apr 2024"
    assert format_date("2024-04-05T10:00:00") == "5 Apr 2024"
    assert format_date([2024, 4, 5, 10, 30, 0]) == "5 Apr 2024"  # Fineract datetime array
    with pytest.raises(ValueError):
        format_date("05/04/2024")
    with pytest.raises(TypeError):
        format_date(None)
    with pytest.raises(ValueError):
        format_date([2024, 4, 5], "full")


@given(st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2200, 12, 31)),
       st.sampled_from(["short", "medium", "long"]), st.sampled_from(["en", "sw", "fr"]))
def test_date_accepts_all_three_input_forms_equally(day, style, lang):
    out = format_date(day, style, lang)
    assert format_date(day.isoformat(), style, lang) == out
    assert format_date([day.year, day.month, day.day], style, lang) == out
    assert str(day.year) in out and is_gsm(out)


@pytest.mark.parametrize(
    "value, keep, expected",
    [("000000042", 4, "*0042"), ("0042", 4, "0042"), ("42", 4, "42"), (123456789, 4, "*6789"),
     ("LN-000314", 3, "*314"), ("", 4, "")],
)
def test_mask(value, keep, expected):
    assert mask(value, keep) == expected


# ------------------------------------------------------------ locales ----


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def locale_dir(tmp_path):
    write(tmp_path / "en.yaml", """\
menu:
  title: Welcome to Umoja SACCO
  balance: Check balance
  loans: My loans
balance.ok: "Your balance is {{ amount|money(currency) }}"
help: Call 0800 720 000
""")
    write(tmp_path / "sw.yaml", """\
menu:
  title: Karibu Umoja SACCO
  balance: Angalia salio
balance.ok: "Salio lako ni {{ amount|money(currency) }}"
help: Piga 0800 720 000
""")
    write(tmp_path / "fr.yaml", """\
menu.title: Bienvenue à Umoja SACCO
menu.balance: Consulter le solde
menu.loans: Mes prêts
balance:
  ok: "Votre solde est de {{ amount|money(currency) }}"
""")
    write(tmp_path / "README.md", "not a locale")
    return tmp_path


def test_locales_load(locale_dir):
    loc = Locales.load(locale_dir)
    assert loc.languages == ("en", "fr", "sw")
    assert loc.keys("en") == {"menu.title", "menu.balance", "menu.loans", "balance.ok", "help"}
    assert loc.keys("fr") == {"menu.title", "menu.balance", "menu.loans", "balance.ok"}
    assert loc.has("sw", "menu.balance") and not loc.has("sw", "menu.loans")
    assert not loc.has("de", "menu.title") and loc.keys("de") == set()
    assert loc.source("fr", "menu.loans") == "Mes prêts"
    assert loc.where("en", "menu.loans") == (str(locale_dir / "en.yaml"), 4)
    assert loc.where("en", "balance.ok") == (str(locale_dir / "en.yaml"), 5)
    assert loc.where("fr", "balance.ok") == (str(locale_dir / "fr.yaml"), 5)
    with pytest.raises(KeyError):
        loc.source("sw", "menu.loans")


def test_locales_missing(locale_dir):
    loc = Locales.load(locale_dir)
    en = str(locale_dir / "en.yaml")
    assert loc.missing() == [
        ("fr", "help", en, 6),
        ("sw", "menu.loans", en, 4),
    ]


def test_locale_texts_compile(locale_dir, env):
    loc = Locales.load(locale_dir)
    t = compile_template(env, loc.source("fr", "balance.ok"), name="fr:balance.ok")
    assert t.render(lang="fr", amount=Decimal("12500"), currency="XOF") == "Votre solde est de 12 500 XOF"


def test_locales_content_hash(locale_dir):
    h1 = Locales.load(locale_dir).content_hash()
    assert h1 == Locales.load(locale_dir).content_hash()
    assert re.fullmatch(r"[0-9a-f]{64}", h1)
    write(locale_dir / "README.md", "ignored, not a locale file")
    assert Locales.load(locale_dir).content_hash() == h1
    with (locale_dir / "sw.yaml").open("a", encoding="utf-8") as f:
        f.write("stop: Umejiondoa\n")
    assert Locales.load(locale_dir).content_hash() != h1


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("menu:\n  title: [unclosed\n", 3, "invalid YAML"),
        ("menu:\n  title: Hi\n   bad: indent\n", 3, "invalid YAML"),
        ("menu:\n  confirm: Yes\n", 2, "bool"),
        ("menu:\n  code: 1234\n", 2, "int"),
        ("menu:\n  empty:\n", 2, "null"),
        ("menu:\n  options:\n    - one\n    - two\n", 3, "list"),
        ("menu:\n  title: A\nmenu.title: B\n", 3, "defined twice"),
        ("- just\n- a list\n", 1, "mapping"),
        ("base: &b\n  x: y\nmenu:\n  <<: *b\n", 4, "merge"),
    ],
)
def test_locale_errors_name_file_and_line(tmp_path, text, line, words):
    write(tmp_path / "en.yaml", "ok: fine\n")
    bad = write(tmp_path / "sw.yaml", text)
    with pytest.raises(LocaleError) as err:
        Locales.load(tmp_path)
    assert err.value.file == str(bad)
    assert err.value.line == line
    assert words in err.value.message
    assert f"sw.yaml:{line}" in str(err.value)


def test_quoted_yes_and_keys_named_no_are_fine(tmp_path):
    write(tmp_path / "en.yaml", 'confirm:\n  yes: "Yes"\n  no: "No"\n  1: "One"\n')
    loc = Locales.load(tmp_path)
    assert loc.keys("en") == {"confirm.yes", "confirm.no", "confirm.1"}
    assert loc.source("en", "confirm.no") == "No"


@pytest.mark.parametrize("name", ["english.yaml", "messages.yaml", "xx.yaml", "EN.yaml", "en-old.yaml"])
def test_locale_file_name_must_be_a_language(tmp_path, name):
    write(tmp_path / name, "ok: fine\n")
    with pytest.raises(LocaleError) as err:
        Locales.load(tmp_path)
    assert "language code" in err.value.message and err.value.line is None


def test_locale_languages_with_region_and_empty_files(tmp_path):
    write(tmp_path / "fr-CI.yaml", "ok: d'accord\n")
    write(tmp_path / "kik.yml", "ok: ii\n")
    write(tmp_path / "sw.yaml", "")
    loc = Locales.load(tmp_path)
    assert loc.languages == ("fr-CI", "kik", "sw")
    assert loc.keys("sw") == set()
    assert [m[:2] for m in loc.missing()] == [("sw", "ok")]


def test_locale_directory_missing(tmp_path):
    with pytest.raises(LocaleError):
        Locales.load(tmp_path / "nope")


# --------------------------------------------------------- pagination ----


def strip_nav(page):
    lines = page.split("\n")
    nav = []
    while lines and lines[-1] in (MORE, BACK):
        nav.insert(0, lines.pop())
    return lines, nav


def check_nav(pages):
    for i, page in enumerate(pages):
        _, nav = strip_nav(page)
        if len(pages) == 1:
            assert nav == []
        elif i == 0:
            assert nav == [MORE]
        elif i == len(pages) - 1:
            assert nav == [BACK]
        else:
            assert nav == [BACK, MORE]


def test_short_menu_is_one_page():
    pages = paginate_menu("Umoja SACCO", ["1. Balance", "2. Mini statement", "3. Loans", "0. Exit"])
    assert pages == ["Umoja SACCO\n1. Balance\n2. Mini statement\n3. Loans\n0. Exit"]


def test_long_menu():
    options = [f"{i}. Lipa mkopo wa biashara namba {i}" for i in range(1, 13)]
    pages = paginate_menu("Chagua mkopo wa kulipa:", options)
    assert len(pages) == 4
    assert pages[0].startswith("Chagua mkopo wa kulipa:\n1. ")
    check_nav(pages)
    assert all(fit_ussd(p, prefix="CON ") for p in pages)
    assert sum((strip_nav(p)[0] for p in pages), [])[1:] == options


def test_menu_with_very_long_title_wraps_it():
    title = ("Tafadhali chagua akaunti ambayo ungependa kuangalia salio lake. Ada ya huduma hii ni "
             "KES 10 na itakatwa kutoka kwenye akaunti utakayochagua. Asante kwa kuchagua Umoja.")
    pages = paginate_menu(title, ["1. Akiba", "2. Hisa", "3. Mkopo"])
    assert len(pages) == 2
    check_nav(pages)
    assert all(len(p) + 4 <= 160 for p in pages)
    assert pages[1].endswith("1. Akiba\n2. Hisa\n3. Mkopo\n0. Back")
    assert " ".join(" ".join(strip_nav(p)[0]) for p in pages).split()[: len(title.split())] == title.split()


def test_menu_option_longer_than_a_page_is_truncated():
    long_option = "2. " + "Very long option " * 12
    pages = paginate_menu("Menu", ["1. Short", long_option, "3. Short"])
    assert all(len(p) + 4 <= 160 for p in pages)
    truncated = [line for p in pages for line in p.split("\n") if line.startswith("2. ")]
    assert len(truncated) == 1 and truncated[0].endswith("...")
    assert truncated[0][:-3].rstrip() in long_option


def test_menu_labels_are_per_language():
    options = [f"{i}. Option numéro {i} du menu" for i in range(1, 12)]
    pages = paginate_menu("Menu", options, more_label="98. Suite", back_label="0. Retour")
    assert pages[0].endswith("\n98. Suite")
    assert pages[1].endswith("\n0. Retour\n98. Suite") or pages[1].endswith("\n0. Retour")


def test_short_text_is_one_page_unchanged():
    text = "Salio lako ni KES 12,500.00\nAsante kwa kutumia Umoja."
    assert paginate_text(text) == [text]


def test_mini_statement_breaks_at_lines():
    lines = [f"{d:02d}/04 {'Deposit' if d % 2 else 'Withdrawal'} KES {d * 1000:,}.00" for d in range(1, 16)]
    text = "Mini statement *0042\n" + "\n".join(lines)
    pages = paginate_text(text)
    check_nav(pages)
    assert all(len(p) + 4 <= 160 for p in pages)
    body = sum((strip_nav(p)[0] for p in pages), [])
    assert body == ["Mini statement *0042"] + lines  # no line split


def test_prose_breaks_at_words_and_long_words_are_hard_split():
    text = ("Masharti: " + "mkopo utalipwa kwa awamu kumi na mbili za kila mwezi " * 6 + "X" * 400)
    pages = paginate_text(text, limit=182, prefix_len=4)
    check_nav(pages)
    assert all(len(p) + 4 <= 182 for p in pages)
    content = " ".join(" ".join(strip_nav(p)[0]) for p in pages)
    assert "".join(content.split()) == "".join(text.split())


def test_trailing_blank_lines_make_no_empty_page():
    text = ("word " * 40).strip() + "\n\n\n\n"
    pages = paginate_text(text)
    assert len(pages) == 2 and strip_nav(pages[-1])[0] != [""]


def test_fit_ussd():
    assert fit_ussd("x" * 156)
    assert not fit_ussd("x" * 157)
    assert fit_ussd("x" * 156, prefix="CON ")
    assert fit_ussd("x" * 182, prefix="", limit=182)


def test_screen_too_small():
    with pytest.raises(ValueError):
        paginate_text("word " * 20, limit=20)


words = st.text(alphabet="abcdefghijklmnopqrstuvwxyzéèà'.,", min_size=1, max_size=25)
labels = st.sampled_from([(MORE, BACK), ("98. Zaidi", "0. Rudi"), ("98. Suite", "0. Retour")])


@settings(max_examples=120)
@given(
    title=st.lists(words, max_size=40).map(" ".join),
    options=st.lists(st.integers(min_value=0, max_value=100).flatmap(
        lambda n: st.lists(words, min_size=1, max_size=3).map(lambda ws: f"{n}. " + " ".join(ws))
    ), max_size=30),
    limit=st.sampled_from([160, 182, 120, 80]),
    nav=labels,
)
def test_paginate_menu_properties(title, options, limit, nav):
    more, back = nav
    # options that fit a middle page are never truncated (see the truncation test)
    assume(all(len(o) <= limit - 4 - len(more) - len(back) - 2 for o in options))
    pages = paginate_menu(title, options, limit=limit, more_label=more, back_label=back)
    assert all(len("CON " + p) <= limit for p in pages)
    bodies = []
    for i, page in enumerate(pages):
        lines = page.split("\n")
        if len(pages) > 1:
            expect = ([] if i == 0 else [back]) + ([more] if i < len(pages) - 1 else [])
            assert lines[len(lines) - len(expect):] == expect
            lines = lines[: len(lines) - len(expect)]
        bodies.extend(lines)
    option_lines = [line for line in bodies if line in set(options)]
    assert bodies[len(bodies) - len(options):] == options if options else True
    assert option_lines == options or not options
    title_words = " ".join(bodies[: len(bodies) - len(options)]).split()
    assert title_words == title.split()


@settings(max_examples=120)
@given(
    paragraphs=st.lists(st.lists(words, max_size=30).map(" ".join), min_size=1, max_size=12),
    limit=st.sampled_from([160, 182, 120, 60]),
    nav=labels,
)
def test_paginate_text_properties(paragraphs, limit, nav):
    more, back = nav
    text = "\n".join(paragraphs)
    pages = paginate_text(text, limit=limit, more_label=more, back_label=back)
    assert all(len(p) + 4 <= limit for p in pages)
    if len(text) + 4 <= limit:
        assert pages == [text]
    content = []
    for i, page in enumerate(pages):
        lines = page.split("\n")
        if len(pages) > 1:
            expect = ([] if i == 0 else [back]) + ([more] if i < len(pages) - 1 else [])
            assert lines[len(lines) - len(expect):] == expect
            lines = lines[: len(lines) - len(expect)]
            assert any(line.strip() for line in lines)  # no empty page
        content.extend(lines)
    # words are at most 25 chars, shorter than any page: no word is lost or cut
    assert " ".join(content).split() == text.split()


@given(st.text(max_size=600), st.sampled_from([160, 60]))
def test_paginate_text_keeps_every_character_of_any_text(text, limit):
    pages = paginate_text(text, limit=limit)
    assert all(len(p) + 4 <= limit for p in pages)
    content = "".join("".join(strip_nav(p)[0]) if len(pages) > 1 else p for p in pages)
    assert "".join(content.split()) == "".join(text.split())
