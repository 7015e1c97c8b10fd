"""Issue 14 item 9: docker-compose for production. No Docker engine runs the tests, so the compose file is
read with PyYAML and held to its contract; the production checks are run for real (convo/security/production.py)."""
from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from convo.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
CONVO_SERVICES = ("migrate", "app", "worker")
PEPPER, CB, SECRET = "pepper-" + "p" * 24, "callback-" + "c" * 24, "s" * 40


def env_example() -> dict[str, str]:
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        m = re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def settings_in_config_py() -> list[str]:
    """The fields of ``Settings`` as written in convo/config.py (parsed, not imported: what the file says)."""
    tree = ast.parse((ROOT / "convo" / "config.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    names = [n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)]
    assert set(names) == {f.name for f in fields(Settings)}
    return names


def test_env_example_lists_every_setting_config_py_reads():
    listed = env_example()
    missing = [f"CONVO_{n.upper()}" for n in settings_in_config_py() if f"CONVO_{n.upper()}" not in listed]
    assert not missing, f"add these to .env.example (with their default and a comment): {missing}"
    assert "POSTGRES_PASSWORD" in listed and "CONVO_DOMAIN" in listed


def test_env_example_values_are_ones_the_settings_accept():
    """An env_file line is passed as is: an empty number would stop the container. Every listed value
    must parse (the REQUIRED secrets excepted, which production refuses while empty)."""
    env = {k: v for k, v in env_example().items() if k.startswith("CONVO_")}
    s = Settings.from_env(env)
    assert s.production and s.trusted_proxies == 1 and s.flows_dir == "/app/flows"
    from convo.security import ConfigurationError, check_production_settings

    with pytest.raises(ConfigurationError, match="CONVO_PIN_PEPPER"):
        check_production_settings(s)                     # the example as shipped never starts


def test_every_convo_container_reads_the_env_file():
    for name in CONVO_SERVICES:
        env_file = SERVICES[name]["env_file"]
        paths = [e["path"] if isinstance(e, dict) else e for e in env_file]
        assert ".env" in paths, name
        assert all(e.get("required", True) for e in env_file if isinstance(e, dict))
        # compose-level wiring never hides a setting of .env behind a fixed value
        for key, value in (SERVICES[name].get("environment") or {}).items():
            if key.startswith("CONVO_"):
                assert str(value).startswith("${" + key + ":-"), (name, key, value)


def test_no_image_floats_on_latest_and_fineract_is_pinned():
    for name, svc in SERVICES.items():
        image = svc.get("image")
        if image is None:
            continue
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        assert tag and "latest" not in tag, (name, image)
    fineract = SERVICES["fineract"]["image"]
    assert re.fullmatch(r"apache/fineract:\$\{FINERACT_VERSION:-\d+\.\d+\.\d+\}", fineract), fineract
    assert re.fullmatch(r"\d+\.\d+\.\d+", env_example()["FINERACT_VERSION"])


def test_the_simulator_runs_only_in_the_demo_profile():
    assert SERVICES["fineract-sim"]["profiles"] == ["demo"]
    assert SERVICES["fineract"]["profiles"] == ["fineract"]
    production = {n for n, s in SERVICES.items() if not s.get("profiles")}
    assert production == {"migrate", "app", "worker", "redis", "postgres", "caddy"}
    assert "fineract-sim" not in env_example()["CONVO_FINERACT_URL"]


def test_https_in_front_with_caddy():
    caddy = SERVICES["caddy"]
    assert {"80:80", "443:443"} <= set(caddy["ports"])
    assert "./Caddyfile:/etc/caddy/Caddyfile:ro" in caddy["volumes"]
    assert any(v.startswith("caddy-data:/data") for v in caddy["volumes"])      # certificates survive
    caddyfile = (ROOT / "Caddyfile").read_text()
    assert "{$CONVO_DOMAIN" in caddyfile and "reverse_proxy app:8000" in caddyfile
    assert re.search(r"@internal path /metrics.*\n\s*respond @internal 404", caddyfile)
    # the app itself is published on the loopback only
    assert all(p.startswith("127.0.0.1:") for p in SERVICES["app"]["ports"])
    assert SERVICES["app"]["environment"]["PROMETHEUS_MULTIPROC_DIR"]


def test_postgres_has_no_default_password():
    assert SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    assert ":?" in COMPOSE["x-convo"]["environment"]["CONVO_DATABASE_URL"]


def production(**changes) -> Settings:
    values = dict(env="production", redis_url="memory://", pin_pepper=PEPPER, flows_reload_seconds=0,
                  callback_token=CB, secret_key=SECRET,
                  database_url="postgresql+psycopg://postgres:Xk2v9q0Lw@postgres:5432/convo",
                  fineract_url="https://mifos.example.org/fineract-provider/api/v1")
    values.update(changes)
    return Settings(**values)


@pytest.mark.parametrize("changes, word", [
    ({"pin_pepper": ""}, "CONVO_PIN_PEPPER"),
    ({"pin_pepper": "convo-development-pepper-not-for-production"}, "development pepper"),
    ({"callback_token": ""}, "CONVO_CALLBACK_TOKEN"),
    ({"database_url": "postgresql+psycopg://postgres:convo@postgres:5432/convo"}, "default password"),
    ({"database_url": "postgresql+psycopg://postgres:Postgres@db/convo"}, "default password"),
    ({"fineract_url": "http://fineract-sim:8443/fineract-provider/api/v1"}, "simulator"),
])
def test_production_refuses_development_defaults(changes, word):
    from convo.security import ConfigurationError, check_production_settings

    check_production_settings(production())
    check_production_settings(production(database_url="postgresql+psycopg://convo@/convo?host=/run/postgresql"))
    with pytest.raises(ConfigurationError, match=word):
        check_production_settings(production(**changes))


def test_convo_worker_and_serve_refuse_to_start_with_them(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from convo.cli import main

    monkeypatch.chdir(tmp_path)                    # no .env of the working tree
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    env = {"CONVO_ENV": "production", "CONVO_PIN_PEPPER": PEPPER, "CONVO_CALLBACK_TOKEN": CB,
           "CONVO_SECRET_KEY": SECRET, "CONVO_REDIS_URL": "memory://",
           "CONVO_DATABASE_URL": "postgresql+psycopg://postgres:convo@127.0.0.1:1/convo"}
    for command in (["worker", "--once"], ["serve", "--port", "1"]):
        r = CliRunner().invoke(main, command, env=env)
        assert r.exit_code == 1 and "not starting" in r.output and "default password" in r.output, r.output
    # a serve that did not start leaves this process's metrics alone (multiprocess mode is for its workers)
    import os

    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_the_caddyfile_is_one_caddy_accepts():
    """`caddy adapt` (when Caddy is installed: Debian's `caddy` package) turns the Caddyfile into Caddy's
    JSON: HTTPS on CONVO_DOMAIN, /metrics answered 404, the rest proxied to app:8000, ?token= redacted."""
    import json
    import os
    import shutil
    import subprocess

    caddy = shutil.which("caddy")
    if not caddy:
        from tests.support.browser import in_ci

        why = "caddy is not installed (apt-get install caddy; `./run test` does so as root)"
        if in_ci():
            pytest.fail(f"CI=true and {why}")
        pytest.skip(f"{why}: the Caddyfile's syntax is not checked")
    r = subprocess.run([caddy, "adapt", "--config", str(ROOT / "Caddyfile"), "--adapter", "caddyfile"],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "CONVO_DOMAIN": "sms.example.org"})
    assert r.returncode == 0, r.stderr
    config = json.loads(r.stdout)
    server = next(iter(config["apps"]["http"]["servers"].values()))
    assert server["listen"] == [":443"]
    text = r.stdout
    assert '"sms.example.org"' in text and '"/metrics"' in text and '"status_code":404' in text
    assert '"dial":"app:8000"' in text
    assert '"parameter":"token"' in text and '"type":"replace"' in text
