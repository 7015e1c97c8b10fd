"""Screens that fit: lint measures every menu and question with long example values, in every language,
with the error line and the 98/0 lines, and refuses or warns with file, line, state, key and language."""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from convo.flowlang.compiler import load_flowset
from convo.flowlang.spec import FlowValidationError
from convo.text.paging import paginate_menu, paginate_text

FLOWS = Path(__file__).resolve().parents[2] / "flows"
LONG_OPTION = "Contact us " + "very " * 40 + "soon"          # 215 characters, the example


@pytest.fixture
def flows(tmp_path) -> Path:
    d = tmp_path / "flows"
    shutil.copytree(FLOWS, d, ignore=shutil.ignore_patterns("tests"))
    return d


def set_text(d: Path, lang: str, find: str, value: str, key: str = "") -> int:
    """Replace the locale line starting with ``find`` by ``key + value`` (``key`` defaults to ``find``)."""
    path = d / "locales" / f"{lang}.yaml"
    lines = path.read_text(encoding="utf-8").splitlines()
    i = next(i for i, l in enumerate(lines) if l.startswith(find))
    lines[i] = (key or find) + value
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return i + 1


def write(d: Path, name: str, text: str) -> None:
    (d / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


def test_an_option_that_cannot_fit_one_screen_is_an_error_naming_key_language_and_length(flows):
    assert len(LONG_OPTION) == 215
    line = set_text(flows, "fr", "  meet: ", f'"{LONG_OPTION}"')
    with pytest.raises(FlowValidationError) as e:
        load_flowset(flows)
    [err] = e.value.errors
    assert (err.where.file, err.where.line, err.where.state, err.key, err.lang) == \
        ("flows/locales/fr.yaml", line, "menu", "main.meet", "fr")
    assert "option 4 is 218 characters in fr" in err.message and "cannot fit one USSD screen" in err.message
    # what the caller would have seen: the option cut on its own screen
    pages = paginate_menu("Choose:", ["1. Balance", f"4. {LONG_OPTION}"], more_label="98. Suite",
                          back_label="0. Retour")
    assert any(p.startswith("4. Contact us very") and p.split("\n")[0].endswith("...") for p in pages)


def test_an_inline_option_is_measured_too_and_reported_once(flows):
    write(flows, "contact.yaml", f"""
        states:
          menu:
            menu: "Help"
            options:
              - label: Call us
                next: bye
              - label: {LONG_OPTION}
                next: bye
          bye:
            end: Bye.
    """)
    with pytest.raises(FlowValidationError) as e:
        load_flowset(flows)
    errs = [x for x in e.value.errors if x.where.file == "flows/contact.yaml"]
    assert len(errs) == 1 and errs[0].where.line == 8 and errs[0].where.state == "menu"
    assert "option 2 is 218 characters" in errs[0].message


def test_an_over_long_menu_title_is_a_warning_naming_key_language_and_length(flows):
    title = "Please choose the language in which you would like to read every screen of this service, " * 2
    line = set_text(flows, "sw", "  menu: \"Chagua lugha", f'"{title}"', key="  menu: ")
    fs = load_flowset(flows)                                    # a warning: the flows still load
    [w] = [w for w in fs.warnings if w.key == "language.menu"]
    assert (w.where.file, w.where.line, w.where.state, w.lang, w.severity) == \
        ("flows/locales/sw.yaml", line, "language", "sw", "warning")
    assert f"the menu title is {len(title.strip())} characters in sw" in w.message
    assert "options start on screen 2" in w.message


def test_a_title_that_only_overflows_beside_the_error_line_is_no_warning(flows):
    """After "Invalid choice" the engine leaves the title out (just read) so the options stay on screen 1."""
    title = "Choose the language you want for all screens and messages: English, Kiswahili or Francais. " \
            "You can change it later."
    set_text(flows, "en", "  menu: \"Choose your language", f'"{title}"', key="  menu: ")
    error = "Invalid choice. Please try again."
    assert len(title) <= 156 - len("\n98. More") < len(error + "\n" + title)
    fs = load_flowset(flows)
    assert not [w for w in fs.warnings if w.key == "language.menu" and w.lang == "en"]
    options = ["1. English", "2. Kiswahili", "3. Francais"]
    assert paginate_menu(title, options, error=error) == ["\n".join([error] + options)]


def test_the_question_of_an_ask_must_stay_on_the_first_screen_after_an_invalid_answer(flows):
    """The issue's "Enter the amount" case: with the error line above it the question moved behind 98."""
    question = ("You can pay any amount up to what you owe. We send an SMS when it is done. "
                "Enter the amount you want to pay now, in numbers:")
    write(flows, "pay.yaml", f"""
        states:
          amount:
            ask: "{question}"
            validate: amount
            save: amount
            next: done
            error: "Enter an amount in numbers, e.g. 1500."
          done:
            end: "Thanks: {{{{ amount | money('KES') }}}}."
    """)
    fs = load_flowset(flows)
    ws = [w for w in fs.warnings if w.where.file == "flows/pay.yaml"]
    [w] = ws
    assert (w.where.line, w.where.state, w.severity) == (2, "amount", "warning")
    assert "after an invalid answer" in w.message and "moves to screen 2 behind '98. More'" in w.message
    # which is what a caller would see: the question is not on the first screen
    first = paginate_text("Enter an amount in numbers, e.g. 1500.\n" + question)[0]
    assert "Enter the amount you want to pay now" not in first and first.endswith("98. More")


def test_the_shipped_flows_have_no_cut_options_or_questions_moved_by_an_error():
    fs = load_flowset(FLOWS)
    assert not [str(w) for w in fs.warnings if "cut" in w.message or "cannot fit" in w.message]
    assert not [str(w) for w in fs.warnings if w.key and w.key.startswith("pin.") and "after an invalid" in w.message]


def test_after_a_wrong_amount_the_question_is_still_on_the_first_screen(redis_url):
    """The issue's case, on the shipped flows over HTTP: Grace types a wrong amount and still reads
    what to type, without pressing 98 (lint warns when a text would push it to screen 2)."""
    from tests.support.e2e import Phone, give_pin, running_gateway

    with running_gateway(redis_url) as (gw, _, services):
        give_pin(services, "+254700000101", "246802")
        grace = Phone(gw, "+254700000101")
        menu = grace.dial()
        repay = next(line.split(".")[0] for line in menu.splitlines() if "Repay loan" in line)
        assert grace.answer(repay) == "CON Enter your PIN:"
        assert "Enter the amount to pay:" in grace.answer("246802")
        screen = grace.answer("12,34,5")
        assert screen.startswith("CON Enter an amount in numbers, e.g. 1500.\nBiashara Flat 6M: due KES")
        assert screen.endswith("\nEnter the amount to pay:") and "98." not in screen
