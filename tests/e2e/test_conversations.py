"""The product managers' conversation tests (flows/tests/*.yaml), run against the simulator."""
from __future__ import annotations

from pathlib import Path

import pytest

from convo.cli import sim_settings
from convo.devkit.convtest import flask_poster, load_tests, prepare_app, run_test
from convo.devkit.fineract_sim import start_simulator
from convo.web import create_app

TESTS = load_tests(Path(__file__).resolve().parents[2] / "flows" / "tests")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    sim = start_simulator()
    db = tmp_path_factory.mktemp("conversations") / "convo.db"
    try:
        app = create_app(sim_settings(sim.url, redis_url="memory://", flows_reload_seconds=0,
                                      database_url=f"sqlite:///{db}"))
        app.setup = prepare_app(app)
        yield app
    finally:
        sim.stop()


@pytest.fixture(scope="module")
def post(app):
    return flask_poster(app.test_client())


@pytest.mark.parametrize("file, test", TESTS, ids=[t.get("name", "?") for _, t in TESTS])
def test_conversation(app, post, file, test):
    result = run_test(post, file, test, setup=app.setup)
    assert result.failure is None, str(result.failure)


def test_a_failing_expectation_is_reported_with_the_screen(post):
    bad = {"name": "wrong", "phone": "+254700000101", "steps": [{"dial": "*384*12#", "expect": "Goodbye"}]}
    result = run_test(post, "inline", bad)
    assert result.failure and result.failure.step == 1 and "Welcome Grace" in result.failure.screen
