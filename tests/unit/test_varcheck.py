"""Lint knows every variable: a product manager's slip in a text, a condition or a ``with:`` value is
refused at load with file, line, state, text key and language, and a suggestion; every text is rendered
at load in every language with example values (convo.flowlang.varcheck)."""
from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from convo.actions import declaration_text, load_builtin_actions
from convo.actions.shapes import Leaf, Obj, Seq, shape_of_declaration
from convo.cli import main
from convo.flowlang.compiler import channel_roots, load_flowset
from convo.flowlang.spec import FlowError, FlowValidationError
from convo.flowlang.varcheck import analyse

ROOT = Path(__file__).resolve().parents[2]
FLOWS = ROOT / "flows"


@pytest.fixture
def flows(tmp_path) -> Path:
    d = tmp_path / "flows"
    shutil.copytree(FLOWS, d, ignore=shutil.ignore_patterns("tests"))
    return d


def edit(path: Path, old: str, new: str) -> int:
    """Replace ``old`` (once) and return the 1-based line of the edit."""
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return text[: text.index(old)].count("\n") + 1


def write(d: Path, name: str, text: str) -> None:
    (d / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


def errors_of(d: Path) -> list[FlowError]:
    with pytest.raises(FlowValidationError) as e:
        load_flowset(d)
    return e.value.errors


def line_of_state(path: Path, state: str) -> int:
    return next(i for i, l in enumerate(path.read_text().splitlines(), 1) if l.startswith(f"  {state}:"))


# --------------------------------------------------------------------------- the PM mistakes of the issue

def test_a_misspelt_attribute_is_refused_with_file_line_state_key_language_and_a_suggestion(flows):
    line = edit(flows / "locales" / "en.yaml", "Welcome {{ client.first_name }}", "Welcome {{ client.firstname }}")
    [e] = errors_of(flows)
    assert (e.where.file, e.where.line, e.where.state, e.key, e.lang) == \
        ("flows/locales/en.yaml", line, "menu", "main.menu", "en")
    assert f"shown by flows/main.yaml:{line_of_state(flows / 'main.yaml', 'menu')}" in e.message
    assert e.message.endswith("`client.firstname` is not defined; did you mean `client.first_name`?")


def test_a_misspelt_variable_in_one_language_names_that_language(flows):
    line = edit(flows / "locales" / "fr.yaml", "{{ client.first_name }}", "{{ clientt.first_name }}")
    [e] = errors_of(flows)
    assert (e.where.file, e.where.line, e.where.state, e.key, e.lang) == \
        ("flows/locales/fr.yaml", line, "menu", "main.menu", "fr")
    assert "`clientt` is not defined here; did you mean `client`?" in e.message


def test_a_variable_used_before_the_state_that_sets_it(flows):
    """`balance` exists only after savings_balance says ok: not when there are no savings."""
    line = edit(flows / "locales" / "en.yaml", "none: You have no active savings account.",
                'none: "You have {{ balance.total }} in no account."')
    [e] = errors_of(flows)
    assert (e.where.file, e.where.line, e.where.state, e.key, e.lang) == \
        ("flows/locales/en.yaml", line, "no_savings", "balance.none", "en")
    assert "`balance` is used before it is set: action 'savings_balance' in state 'fetch' (flows/balance.yaml:" \
           in e.message and "but not on every path to this state" in e.message


def test_a_condition_on_an_undefined_name(flows):
    line = edit(flows / "main.yaml", 'when: "features.repay"', 'when: "feature.repay"')
    [e] = errors_of(flows)
    assert (e.where.file, e.where.line, e.where.state) == ("flows/main.yaml", line - 1, "menu")
    assert e.message == "option 7 'when:' 'feature.repay': `feature` is not defined here; did you mean `features`?"


def test_a_route_condition_and_a_with_value_are_checked_too(flows):
    write(flows, "extra.yaml", """
        states:
          who:
            flow: identify
            on: {found: pick}
          pick:
            flow: pick_account
            with: {kind: "{{ knd }}"}
            on: {chosen: check, none: bye, unavailable: bye}
          check:
            route:
              - if: "account.curency.code == 'KES'"
                next: bye
              - else: bye
          bye:
            end: Bye.
    """)
    msgs = {(e.where.line, e.where.state): e.message for e in errors_of(flows)}
    assert "`knd` is not defined here" in msgs[(5, "pick")] and "'with:' value kind" in msgs[(5, "pick")]
    assert msgs[(11, "check")].endswith("`account.curency` is not defined; did you mean `account.currency`?")


def test_a_wrong_filter_argument_is_a_load_error_not_a_runtime_error(flows):
    en = flows / "locales" / "en.yaml"
    edit(en, "(since {{ due.overdue_since | date }})", '(since {{ due.overdue_since | date("longg") }})')
    lines = en.read_text().splitlines()
    key_line = lines.index("due:") + 2                           # `  text: |-` of due.text
    [e] = errors_of(flows)
    assert (e.where.file, e.where.line, e.where.state, e.key, e.lang) == \
        ("flows/locales/en.yaml", key_line, "show", "due.text", "en")
    assert "cannot be shown with example values" in e.message and "unknown style 'longg'" in e.message


def test_too_many_filter_arguments_and_an_unknown_filter(flows):
    edit(flows / "locales" / "sw.yaml", "| money(account.currency) }}", "| money(account.currency, 2, 3) }}")
    edit(flows / "locales" / "fr.yaml", "{{ item.account_no | mask }}", "{{ item.account_no | masque }}")
    errs = errors_of(flows)
    sw = [e for e in errs if e.lang == "sw"]
    assert sw and "cannot be shown with example values" in sw[0].message and "TypeError" in sw[0].message
    assert any(e.where.file == "flows/locales/fr.yaml" and "masque" in e.message for e in errs)


def test_an_optional_value_used_without_a_guard(flows):
    """A loan's next due date is null when nothing is scheduled: `date` on it would fail for that caller."""
    edit(flows / "locales" / "en.yaml", "{% if due.overdue_since %} (since {{ due.overdue_since | date }}){% endif %}",
         " (since {{ due.overdue_since | date }})")
    [e] = errors_of(flows)
    assert e.key == "due.text" and e.lang == "en" and "with null values" in e.message


def test_a_text_never_shows_a_pin(flows):
    edit(flows / "locales" / "en.yaml", 'repeat: "Enter the new PIN again:"',
         'repeat: "Enter {{ new_pin }} again:"')
    errs = errors_of(flows)
    assert any(e.key == "pin.repeat" and "`new_pin` is a PIN" in e.message for e in errs)


def test_the_lint_example_in_flows_md_is_what_lint_says(flows):
    doc = (ROOT / "flows.md").read_text(encoding="utf-8")
    shown = re.search(r"```text lint\n(.*?)\n```", doc, re.S).group(1)
    edit(flows / "locales" / "en.yaml", "Welcome {{ client.first_name }}", "Welcome {{ client.firstname }}")
    [e] = errors_of(flows)
    assert re.sub(r":\d+", ":N", str(e)) == re.sub(r":\d+", ":N", shown)


# --------------------------------------------------------------------------- what the analysis knows

def test_the_shipped_flows_pass_lint_without_errors():
    fs = load_flowset(FLOWS)
    assert not [w for w in fs.warnings if "does not declare" in w.message]


def _analysis(fs):
    specs = {n: cf.spec for n, cf in fs.flows.items()}
    base = {"phone": Leaf("phone"), "lang": Leaf("lang"), "features": Obj({})}
    return analyse(specs, load_builtin_actions(), channel_roots(fs.channels, fs.keywords), base)


def test_variables_per_state_follow_outcomes_sub_flows_and_with():
    an = _analysis(load_flowset(FLOWS))
    d = an.defined
    assert "client" not in d[("balance", "pin")]                 # SMS BAL starts here with nothing
    assert "client" in d[("balance", "who")]                     # confirm_pin identified the caller
    assert "client" not in d[("confirm_pin", "who")] and "client" in d[("confirm_pin", "check")]
    assert "account" in d[("balance", "fetch")] and "balance" not in d[("balance", "fetch")]
    assert "balance" in d[("balance", "show")] and "balance" not in d[("balance", "mifos_down")]
    assert "account" not in d[("pick_account", "choose")]        # load_accounts sets it only on `one`
    assert isinstance(d[("pick_account", "choose")]["accounts"], Seq)
    assert "kind" in d[("pick_account", "load")]                 # with: {kind: ...} of every caller
    assert "pin_first" in d[("set_pin", "new")]                  # with: {pin_first: ...}
    assert "pin_attempts_left" in d[("confirm_pin", "again")]
    assert d[("main", "menu")]["client"].fields["first_name"].type == "word"


def test_a_shape_declaration_is_typed_and_refuses_unknown_types():
    s = shape_of_declaration({"total", "currency", "as_of"})
    assert s.fields["total"].type == "amount" and s.fields["as_of"].nullable and "code" in s.fields["currency"].fields
    assert shape_of_declaration(["date?"]).item.nullable
    with pytest.raises(ValueError, match="unknown type 'monye'"):
        shape_of_declaration({"x": "monye"}, "demo")


# --------------------------------------------------------------------------- declarations and docs

def test_every_action_declares_what_it_sets_and_flows_md_lists_it():
    doc = (ROOT / "flows.md").read_text(encoding="utf-8")
    section = doc.split("<!-- actions:begin")[1].split("<!-- actions:end")[0]
    lines = {m.group(1): m.group(0) for m in re.finditer(r"^- `(\w+)`.*$", section, re.M)}
    for name, a in load_builtin_actions().items():
        assert a.declared, f"action {name} has no provides= declaration"
        assert name in lines, f"flows.md does not list action {name}"
        assert lines[name].endswith(declaration_text(a)), \
            f"flows.md line of {name} must end with: {declaration_text(a)}"


# --------------------------------------------------------------------------- where errors point

def test_a_key_missing_in_french_names_fr_yaml_the_english_line_and_the_state(flows):
    fr = flows / "locales" / "fr.yaml"
    text = fr.read_text()
    gone = next(l for l in text.splitlines() if l.startswith("  meet: "))
    fr.write_text(text.replace(gone + "\n", ""))
    en_line = next(i for i, l in enumerate((flows / "locales" / "en.yaml").read_text().splitlines(), 1)
                   if l.startswith("  meet: "))
    [e] = [e for e in errors_of(flows) if e.key == "main.meet"]
    assert e.where.file == "flows/locales/fr.yaml" and e.lang == "fr" and e.where.state == "menu"
    assert f"add it like flows/locales/en.yaml:{en_line}" in e.message and "used by flows/main.yaml:" in e.message
    assert not Path(e.where.file).is_absolute()


def test_a_yaml_syntax_error_is_reported_once_without_knock_on_errors(flows):
    edit(flows / "pick_account.yaml", "    with: {kind: \"{{ kind }}\"}", "    with: {kind: \"{{ kind }}\"")
    errs = errors_of(flows)
    assert len(errs) == 1, [str(e) for e in errs]
    assert errs[0].where.file == "flows/pick_account.yaml" and "YAML error" in errs[0].message


# --------------------------------------------------------------------------- convo lint

def test_lint_json_for_editors_and_ci(flows):
    edit(flows / "locales" / "en.yaml", "Welcome {{ client.first_name }}", "Welcome {{ client.firstname }}")
    r = CliRunner().invoke(main, ["lint", "--json", str(flows)])
    assert r.exit_code == 1
    out = json.loads(r.stdout)
    assert out["ok"] is False
    [e] = out["errors"]
    assert {k: e[k] for k in ("severity", "file", "state", "key", "lang")} == \
        {"severity": "error", "file": "flows/locales/en.yaml", "state": "menu", "key": "main.menu", "lang": "en"}


def test_lint_warnings_as_errors(flows):
    edit(flows / "locales" / "en.yaml", 'menu: "Choose your language:"',
         'menu: "' + "Please choose the language in which you would like to read every screen of this service " * 2
         + ':"')
    ok = CliRunner().invoke(main, ["lint", str(flows)])
    assert ok.exit_code == 0 and "warning: flows/locales/en.yaml:" in ok.output
    strict = CliRunner().invoke(main, ["lint", "--warnings-as-errors", "--json", str(flows)])
    assert strict.exit_code == 1
    out = json.loads(strict.stdout)
    assert out["errors"] == [] and any(w["key"] == "language.menu" and w["lang"] == "en" for w in out["warnings"])


def test_an_action_that_reads_a_variable_not_set_on_every_path(flows):
    write(flows, "quick.yaml", """
        states:
          who:
            flow: identify
            on: {found: fetch}
          fetch:
            do: savings_balance
            on: {ok: show, unavailable: show}
          show:
            end: "{{ balance.total }}"
    """)
    msgs = {(e.where.line, e.where.state): e.message for e in errors_of(flows)}
    assert msgs[(5, "fetch")].startswith("action 'savings_balance' reads `account`, which is not set on every path")
    assert "`balance` is used before it is set" in msgs[(8, "show")]      # not after `unavailable`


def test_what_a_sub_flow_returns_is_what_it_set_on_every_path_to_that_return(flows):
    write(flows, "ask_amount.yaml", """
        states:
          first:
            menu: Pay now?
            options:
              - label: Pay
                next: amount
              - label: Skip
                next: skip
          amount:
            ask: How much?
            validate: amount
            save: amount
            next: got
          got:
            return: got
          skip:
            return: skipped
    """)
    write(flows, "pay_caller.yaml", """
        states:
          get:
            flow: ask_amount
            on: {got: paid, skipped: nothing}
          paid:
            end: "Paid {{ amount | money('KES') }}."
          nothing:
            end: "Nothing paid: {{ amount }}."
    """)
    errs = [e for e in errors_of(flows) if e.where.file == "flows/pay_caller.yaml"]
    assert [(e.where.state, e.message) for e in errs] == \
        [("nothing", "text: `amount` is used before it is set: the answer to state 'amount' "
                     "(flows/ask_amount.yaml:9) sets it, but not on every path to this state")]


def test_a_choose_menu_needs_its_list_on_every_path(flows):
    write(flows, "pick.yaml", """
        states:
          choose:
            menu: Which?
            choose:
              from: acounts
              label: "{{ item.product }}"
              save: account
              next: done
          done:
            end: Bye.
    """)
    errs = [e for e in errors_of(flows) if e.where.file == "flows/pick.yaml"]
    [e] = errs
    assert e.where.state == "choose" and "'choose: from: acounts'" in e.message


def test_the_engines_own_texts_see_only_the_language(flows):
    """common.* texts are shown outside any state (an error, a wrong choice): no dialog variables there."""
    line = edit(flows / "locales" / "sw.yaml", "  invalid_choice: Chaguo si sahihi. Tafadhali jaribu tena.",
                '  invalid_choice: "{{ client.first_name }}, chaguo si sahihi."')
    [e] = errors_of(flows)
    assert (e.where.file, e.where.line, e.key, e.lang) == ("flows/locales/sw.yaml", line, "common.invalid_choice", "sw")
    assert "`client` is not defined here" in e.message


@pytest.mark.parametrize("src, problems", [
    ("{% for t in transactions %}{{ t.amount }} {{ loop.index }}{% endfor %}", []),
    ("{% for t in transactions %}{{ t.amout }}{% endfor %}", ["`t.amout` is not defined; did you mean `t.amount`?"]),
    ("{{ transactions.amount }}", ["`transactions.amount` is not defined: `transactions` is a list "
                                   "(use `{% for x in transactions %}` and `x.amount`)"]),
    ("{% set n = client.first_name %}{{ n | upper }}", []),
    ("{{ client.first_name.upper() }}", []),
    ("{{ client.first_name.size }}", ["`client.first_name.size` is not defined: `client.first_name` is a single "
                                      "value (word), it has no attributes"]),
    ("{% if nickname is defined %}{{ nickname }}{% endif %}{{ nick | default('') }}", []),
    ("{{ features.repay }} {{ lang }} {{ range(3) | list }}", []),
])
def test_what_a_template_may_use(src, problems):
    from convo.flowlang.varcheck import check_template
    from convo.text.templates import make_env

    env = {"client": shape_of_declaration({"first_name"}), "lang": Leaf("lang"),
           "features": Obj({"repay": Leaf("bool")}),
           "transactions": shape_of_declaration([{"date", "amount"}])}
    assert check_template(make_env().parse(src), env) == problems


def test_a_bug_in_the_checks_refuses_the_edit_and_never_crashes_the_service(flows, monkeypatch):
    from convo.flowlang import varcheck
    from convo.flowlang.compiler import FlowLibrary

    lib = FlowLibrary(flows, interval=0)
    good = lib.current.version

    def broken(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(varcheck.TextLint, "run", broken)
    edit(flows / "locales" / "en.yaml", "Welcome {{", "Karibu {{")
    assert lib.maybe_reload(force=True) is False
    assert lib.current.version == good and "the variable check failed: RuntimeError: boom" in lib.refused["errors"][0]
