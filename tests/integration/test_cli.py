"""The convo command line, as a product manager and an operator use it."""
from __future__ import annotations

import shutil
from pathlib import Path

from click.testing import CliRunner

from convo.cli import main

FLOWS = Path(__file__).resolve().parents[2] / "flows"


def test_lint_passes_on_the_shipped_flows():
    r = CliRunner().invoke(main, ["lint", str(FLOWS)])
    assert r.exit_code == 0 and r.output.startswith("OK: ")


def test_lint_refuses_a_bad_edit_with_file_line_and_state(tmp_path):
    shutil.copytree(FLOWS, tmp_path / "flows")
    (tmp_path / "flows" / "main.yaml").write_text(
        (FLOWS / "main.yaml").read_text().replace("next: due\n", "next: duee\n"))
    r = CliRunner().invoke(main, ["lint", str(tmp_path / "flows")])
    assert r.exit_code == 1
    assert "flows/main.yaml:" in r.output and "state 'menu': unknown target state 'duee'" in r.output


def test_graph_draws_the_compiled_machine():
    r = CliRunner().invoke(main, ["graph", "main", "--path", str(FLOWS)])
    assert r.exit_code == 0
    lines = r.output.splitlines()
    assert lines[0] == "stateDiagram-v2" and "    menu --> balance: 1" in lines and "    [*] --> who" in lines


def test_conversation_tests_run_from_the_command_line():
    r = CliRunner().invoke(main, ["test", str(FLOWS / "tests" / "language.yaml"), "--flows", str(FLOWS)])
    assert r.exit_code == 0, r.output
    assert r.output.strip().endswith("2 passed, 0 failed")


def test_simulate_dials_in_process():
    r = CliRunner().invoke(main, ["simulate", "--phone", "+254700000101"], input="1\n4826\n4826\nn\n")
    assert r.exit_code == 0, r.output
    assert "Welcome Grace" in r.output and "choose a PIN" in r.output and "Balance: KES 8,637.50" in r.output
