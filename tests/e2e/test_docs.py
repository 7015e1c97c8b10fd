"""flows.md cannot drift from the code: its flow examples compile, its action list matches the registry."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from convo.actions import load_builtin_actions
from convo.flowlang.compiler import load_flowset

ROOT = Path(__file__).resolve().parents[2]
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

    from convo.cli import sim_settings
    from convo.devkit.convtest import flask_poster, prepare_app, run_test
    from convo.devkit.fineract_sim import start_simulator
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


# --------------------------------------------------------------------------- README promises a newcomer copies


README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_readme_curl_pair_works_when_pasted_twice():
    """The pair takes a new sessionId each time (SID=$(date +%s)): pasted again later it dials again."""
    import subprocess
    import tempfile
    import time

    from convo.cli import sim_settings
    from convo.devkit.convtest import prepare_app
    from convo.devkit.devserver import BackgroundServer
    from convo.devkit.fineract_sim import start_simulator
    from convo.web import create_app

    block = next(b for b in re.findall(r"```sh\n(.*?)```", README, re.S) if "curl" in b and "sessionId" in b)
    assert "SID=$(date +%s)" in block and block.count("sessionId=$SID") == 2
    sim = start_simulator()
    try:
        tmp = tempfile.mkdtemp()
        app = create_app(sim_settings(sim.url, redis_url="memory://", database_url=f"sqlite:///{tmp}/readme.db",
                                      flows_reload_seconds=0))
        prepare_app(app)
        with BackgroundServer(app) as gw:
            script = block.replace("http://127.0.0.1:8000", gw.url)
            outputs = []
            for _ in range(2):
                second = int(time.time())
                while int(time.time()) == second:        # a newcomer pastes it again later, not in the same second
                    time.sleep(0.05)
                outputs.append(subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30).stdout)
        for out in outputs:
            assert out.startswith("CON Welcome Grace. Choose:\n1. Balance") and out.endswith(
                "CON To keep your account safe, choose a PIN of 4 to 6 digits:"), out
    finally:
        sim.stop()


def test_the_readme_and_flows_md_say_how_to_run_convo():
    import subprocess
    import sys

    export = 'export PATH="$PWD/.venv/bin:$PATH"'
    assert export in README and export in DOC and ".venv/bin/convo" in README and ".venv/bin/convo lint" in DOC
    assert 'convo = "convo.cli:main"' in (ROOT / "pyproject.toml").read_text()
    venv = ROOT / ".venv"
    if Path(sys.prefix).resolve() != venv.resolve():
        return                                           # the suite runs outside the checkout's .venv
    out = subprocess.run(["bash", "-c", f"cd {ROOT} && {export} && convo --help"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "lint" in out.stdout and "simulate" in out.stdout


def test_convo_test_prints_its_results_without_log_lines():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "convo.cli", "test", str(ROOT / "flows" / "tests" / "language.yaml")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    lines = (out.stdout + out.stderr).splitlines()
    assert out.returncode == 0 and lines[-1] == f"{len(lines) - 1} passed, 0 failed", out.stdout + out.stderr
    assert all(line.startswith("ok   language.yaml: ") for line in lines[:-1]), lines
