"""flows.md cannot drift from the code: its flow examples compile, its action list matches the registry."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from convo.actions import load_builtin_actions
from convo.compiler import load_flowset

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "flows.md").read_text(encoding="utf-8")


def test_every_flow_example_in_flows_md_compiles(tmp_path):
    examples = re.findall(r"```yaml flow\n(.*?)```", DOC, re.S)
    assert len(examples) >= 4
    d = tmp_path / "flows"
    shutil.copytree(ROOT / "flows", d, ignore=shutil.ignore_patterns("tests"))
    for i, text in enumerate(examples):
        (d / f"example_{i}.yaml").write_text(text, encoding="utf-8")
    fs = load_flowset(d)
    assert {"hello", "menu_example", "ask_example", "route_example"} <= set(fs.flows)


def test_flows_md_lists_every_action_with_its_outcomes():
    section = DOC.split("<!-- actions:begin")[1].split("<!-- actions:end")[0]
    documented = dict(re.findall(r"^- `(\w+)`[^:]*: outcomes? ([\w, ]+)\.", section, re.M))
    registry = load_builtin_actions()
    assert set(documented) == set(registry)
    for name, a in registry.items():
        assert [o.strip() for o in documented[name].split(",")] == list(a.outcomes), name
        for p in a.params:
            assert f"`{p}`" in section, f"parameter {p} of {name} undocumented"
        assert "```yaml" in a.doc, f"action {name} needs a YAML example in its docstring"


def test_the_conversation_test_example_in_flows_md_passes():
    import yaml

    from convo.cli import sim_settings, start_simulator
    from convo.convtest import flask_poster, prepare_app, run_test
    from convo.web import create_app

    example = yaml.safe_load(re.search(r"```yaml convtest\n(.*?)```", DOC, re.S).group(1))
    sim = start_simulator()
    try:
        import tempfile

        tmp = tempfile.mkdtemp()
        app = create_app(sim_settings(sim.url, redis_url="memory://", database_url=f"sqlite:///{tmp}/docs.db"))
        setup = prepare_app(app)
        for test in example:
            result = run_test(flask_poster(app.test_client()), "flows.md", test, setup=setup)
            assert result.failure is None, str(result.failure)
    finally:
        sim.stop()
