"""A product manager's bad edit is refused with file, line and state; the shipped flows load."""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convo.flowlang.compiler import FlowLibrary, load_flowset
from convo.flowlang.spec import FlowValidationError, parse_flow

FLOWS = Path(__file__).resolve().parents[2] / "flows"


@pytest.fixture
def flows(tmp_path) -> Path:
    d = tmp_path / "flows"
    shutil.copytree(FLOWS, d, ignore=shutil.ignore_patterns("tests"))
    return d


def write(d: Path, name: str, text: str) -> None:
    (d / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


def errors_of(d: Path) -> list[str]:
    with pytest.raises(FlowValidationError) as e:
        load_flowset(d)
    return [str(x) for x in e.value.errors]


def test_shipped_flows_load():
    fs = load_flowset(FLOWS)
    assert {"main", "pick_account"} <= set(fs.flows)
    assert fs.languages[0] == "en" and {"sw", "fr"} <= set(fs.languages)


def test_unknown_target_is_reported_with_file_line_and_state(flows):
    text = (flows / "main.yaml").read_text().replace("next: due\n", "next: duee\n", 1)
    (flows / "main.yaml").write_text(text)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "next: duee" in l)
    assert f"flows/main.yaml:{line}: state 'menu': unknown target state 'duee'" in errors_of(flows)


def test_unknown_action_and_missing_outcome(flows):
    write(flows, "extra.yaml", """
        states:
          start:
            do: fetch_everything
            on: {ok: done}
          next_one:
            do: identify_caller
            on: {found: done, unknown: done}
          done:
            end: Bye
    """)
    errs = errors_of(flows)
    assert any("extra.yaml:2: state 'start': unknown action 'fetch_everything'" in e for e in errs)
    assert any("state 'next_one': outcome 'unavailable' of action 'identify_caller' has no next state" in e
               for e in errs)
    assert any("state 'next_one' cannot be reached" in e for e in errs)


def test_missing_locale_key_in_one_language(flows):
    sw = (flows / "locales" / "sw.yaml").read_text().replace("  due: Kiasi cha kulipa\n", "")
    (flows / "locales" / "sw.yaml").write_text(sw)
    errs = errors_of(flows)
    assert any("text 'main.due' is missing from the 'sw' locale" in e and "en.yaml:" in e for e in errs)


def test_unknown_text_key(flows):
    text = (flows / "balance.yaml").read_text().replace("end: balance.none", "end: balance.nothing")
    (flows / "balance.yaml").write_text(text)
    assert any("state 'no_savings': unknown text key 'balance.nothing'" in e for e in errors_of(flows))


def test_loop_without_input_and_dead_end(flows):
    write(flows, "loopy.yaml", """
        states:
          a:
            route:
              - if: "x == 1"
                next: b
              - else: c
          b:
            route:
              - else: a
          c:
            menu: Pick
            options:
              - label: Again
                next: c
    """)
    errs = errors_of(flows)
    assert any("loopy.yaml" in e and "loop without input" in e for e in errs)
    assert any("state 'c': dead end" in e for e in errs)


def test_bad_template_and_bad_yaml(flows):
    write(flows, "broken.yaml", """
        states:
          a:
            end: "Hello {{ name "
    """)
    write(flows, "worse.yaml", "states:\n  a: [unclosed\n")
    errs = errors_of(flows)
    assert any("broken.yaml:2: state 'a': template error" in e for e in errs)
    assert any(e.startswith("flows/worse.yaml:") and "YAML error" in e for e in errs)


def test_shape_errors_name_the_key():
    with pytest.raises(FlowValidationError) as e:
        parse_flow("states:\n  a:\n    end: Bye\n    colour: red\n  b:\n    menu: Hi\n    ask: Also\n", "f.yaml")
    msgs = [str(x) for x in e.value.errors]
    assert "f.yaml:4: state 'a': unknown key 'colour' in a end state (allowed: note)" in msgs
    assert any("f.yaml:5: state 'b': a state needs exactly one kind key" in m for m in msgs)


def test_sub_flow_outcomes_must_match(flows):
    text = (flows / "balance.yaml").read_text().replace("      none: no_savings\n", "      nada: no_savings\n", 1)
    (flows / "balance.yaml").write_text(text)
    errs = errors_of(flows)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if l == "  pick:")
    assert any(f"balance.yaml:{line}: state 'pick': outcome 'none' of flow 'pick_account' has no next state" in e
               for e in errs)
    assert any("state 'pick': flow 'pick_account' never returns 'nada'" in e for e in errs)


def test_no_dotted_imports_from_yaml(flows):
    write(flows, "evil.yaml", """
        states:
          a:
            do: os.system
            with: {command: "rm -rf /"}
            on: {ok: b}
          b:
            end: Bye
    """)
    assert any("unknown action 'os.system'" in e for e in errors_of(flows))


def test_a_bad_edit_keeps_the_last_good_version_serving(flows):
    lib = FlowLibrary(flows, interval=0)
    good = lib.current.version
    (flows / "main.yaml").write_text((flows / "main.yaml").read_text().replace("next: due\n", "next: nowhere\n"))
    assert lib.maybe_reload(force=True) is False
    assert lib.current.version == good and "nowhere" in str(lib.last_error)
    (flows / "main.yaml").write_text((flows / "main.yaml").read_text().replace("next: nowhere\n", "next: due\n")
                                     .replace("description:", "description: edited."))
    assert lib.maybe_reload(force=True) is True
    assert lib.current.version != good and lib.get(good) is not None   # old version kept for live sessions


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_either_a_flow_or_a_located_error(text):
    try:
        parse_flow(text, "any.yaml")
    except FlowValidationError as e:
        assert e.errors and all(str(x).startswith("any.yaml:") for x in e.errors)
