"""The shape of the house (docs/architecture.md): packages import only the layers below them.

The layers are written once, in pyproject.toml ``[tool.importlinter]``; import-linter reads every import
of every module, lazy imports inside functions included, so a cycle cannot hide in a function body.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_imports_only_the_layers_below_it():
    # in a process of its own: import-linter's command configures logging (dictConfig), which would
    # silence every logger of this test process
    import subprocess
    import sys

    r = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache", str(ROOT / "pyproject.toml")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_the_layers_name_every_package_of_the_code():
    """A new package gets its place in the layers (and a line in docs/architecture.md), or the
    contract would not look at it."""
    import tomllib

    layers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]["layers"]
    named = {name.strip() for layer in layers for name in layer.split("|")}
    packages = {f"convo.{p.name}" for p in (ROOT / "convo").iterdir() if (p / "__init__.py").exists()}
    modules = {f"convo.{p.stem}" for p in (ROOT / "convo").glob("*.py") if p.stem != "__init__"}
    assert packages | modules | {"gateways"} == named
    doc = (ROOT / "docs" / "architecture.md").read_text()
    missing = sorted(n for n in named if f"`{n.removeprefix('convo.')}" not in doc and f"`{n}" not in doc)
    assert not missing, f"docs/architecture.md does not describe {missing}"


def test_every_mifos_x_path_is_written_in_convo_mifos():
    """Outside convo/mifos (and the simulator in convo/devkit), code asks Mifos X through named functions
    (``notify_reads.loan_with_schedule(mifos, id)``), never ``mifos.get("/loans/...")``: one place to read
    which endpoints the service depends on."""
    import re

    raw = re.compile(r"""\b(?:mifos|client)\.(?:get|_call)\(\s*f?["']/""")
    offenders = []
    for path in sorted((ROOT / "convo").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("convo/mifos/", "convo/devkit/")):
            continue
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if raw.search(line):
                offenders.append(f"{rel}:{no}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_no_module_reaches_into_another_modules_private_names():
    """``_name`` is private to its module: code elsewhere imports public names only (``from convo.notify.outbox
    import insert_for``, never ``_insert``), so a module's insides can change without breaking another."""
    import ast
    import importlib.util

    offenders = []
    for path in sorted([*(ROOT / "convo").rglob("*.py"), *(ROOT / "gateways").glob("*.py")]):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text())
        modules: set[str] = set()                  # names bound to our modules in this file
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                    and node.module.split(".")[0] in ("convo", "gateways"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        offenders.append(f"{rel}:{node.lineno}: from {node.module} import {a.name}")
                    elif importlib.util.find_spec(f"{node.module}.{a.name}") is not None \
                            if importlib.util.find_spec(node.module).submodule_search_locations else False:
                        modules.add(a.asname or a.name)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] in ("convo", "gateways") and a.asname:
                        modules.add(a.asname)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules \
                    and node.attr.startswith("_") and not node.attr.startswith("__"):
                offenders.append(f"{rel}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not offenders, "\n".join(offenders)
