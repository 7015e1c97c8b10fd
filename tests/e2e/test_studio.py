"""The studio (/console/flows) without a browser: who may see it, the flows list and diagrams, the sandbox
phone (simulator only), lint of a pasted file without saving it. Real Redis and PostgreSQL."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from convo.flowlang.compiler import load_flowset
from tests.e2e.test_console_access import SECRET, csrf_of, sign_in

FLOWS = Path(__file__).resolve().parents[2] / "flows"
GRACE = "+254700000101"


@pytest.fixture
def app(sim, redis_url, tmp_path):  # noqa: F811
    """The console's app; its database is SQLite: the studio keeps nothing in it (previews live in Redis)."""
    from convo.cli import sim_settings
    from convo.store.db import upgrade
    from convo.web import create_app

    db = f"sqlite:///{tmp_path}/studio.db"
    upgrade(db)
    a = create_app(sim_settings(sim.url, redis_url=redis_url, database_url=db, flows_reload_seconds=0,
                                secret_key=SECRET, trusted_proxies=1, pin_argon2_memory_kib=1024,
                                pin_argon2_time_cost=1))
    yield a
    a.extensions["convo"].db.dispose()


def signed_in(app, user="mifos"):  # noqa: F811
    c = app.test_client()
    sign_in(c, user=user)
    c.get("/console/flows")                          # the page gives the form token
    return c


def phone_step(c, **body):
    flow = body.pop("flow")
    r = c.post(f"/console/flows/{flow}", json={"csrf": csrf_of(c), "channel": "ussd", "phone": GRACE, "lang": "en",
                                               **body})
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()


def test_only_signed_in_users_with_the_studio_permission(app):  # noqa: F811
    c = app.test_client()
    r = c.get("/console/flows")
    assert r.status_code == 302 and "/console/login" in r.headers["Location"]
    peter = signed_in(app, "peter")                   # a loan officer: no ALL_FUNCTIONS
    assert peter.get("/console/flows").status_code == 403
    assert peter.get("/console/flows/balance").status_code == 403
    r = peter.post("/console/flows/balance", json={"csrf": csrf_of(peter)})
    assert r.status_code == 403


def test_every_shipped_flow_is_listed_and_drawn_with_all_its_states(app):  # noqa: F811
    c = signed_in(app)
    fs = load_flowset(FLOWS)
    page = c.get("/console/flows").get_data(as_text=True)
    for name in fs.flows:
        assert f'data-flow="{name}"' in page
    assert "SMS BAL (BALANCE, SALIO, SOLDE)" in page and "USSD *384*12#" in page
    for name, cf in fs.flows.items():
        r = c.get(f"/console/flows/{name}")
        assert r.status_code == 200, name
        html = r.get_data(as_text=True)
        assert "<svg" in html and "<script>" not in html and " style=" not in html
        for state in cf.spec.states:
            assert f'id="state-{state}"' in html, (name, state)
    main = c.get("/console/flows/main").get_data(as_text=True)
    assert 'href="/console/flows/balance" class="subflow"' in main     # sub-flows are links
    assert 'class="node k-menu' in main and 'class="node k-do' in main


def test_the_phone_runs_balance_against_the_simulator_with_paging_and_variables(app):  # noqa: F811
    from convo.web import studio

    c = signed_in(app)
    first = phone_step(c, flow="balance", session="t1", text="", fresh=True)
    assert first["end"] is False and first["text"] == "Enter your PIN:" and first["state"] == "ask"
    done = phone_step(c, flow="balance", session="t1", text=studio.DEMO_PIN)
    assert done["end"] is True and "Balance: KES 8,637.50" in done["text"]
    assert done["vars"]["account"]["id"] and "pin" not in done["vars"]
    sandbox = studio._sandboxes[str(Path(app.extensions["convo"].settings.flows_dir))]
    assert sandbox.services.settings.fineract_url.startswith(studio._sim.url)     # never the live Mifos X
    assert sandbox.services.settings.redis_url.startswith("memory://")
    sw = phone_step(c, flow="main", session="t2", text="", fresh=True, lang="sw")
    assert sw["lang"] == "sw" and sw["text"].startswith("Karibu")
    assert len(sw["text"]) <= 160


def test_the_phone_pages_a_long_screen_and_texts_like_an_sms_thread(app):  # noqa: F811
    c = signed_in(app)
    faith = "+254700000105"
    phone_step(c, flow="mini", session="m1", text="", fresh=True, phone=faith)
    phone_step(c, flow="mini", session="m1", text="2468", phone=faith)
    first = phone_step(c, flow="mini", session="m1", text="2468*1", phone=faith)
    assert first["pages"] == 2 and first["page"] == 0 and first["text"].endswith("98. More")
    assert len(first["text"]) <= 160
    second = phone_step(c, flow="mini", session="m1", text="2468*1*98", phone=faith)
    assert second["page"] == 1 and "(2/2)" in second["text"].splitlines()[0]
    ask = phone_step(c, flow="balance", channel="sms", text="BAL", fresh=True, lang="sw")
    assert ask["text"] == "Ili kuona salio lako, jibu kwa PIN yako." and ask["end"] is False
    done = phone_step(c, flow="balance", channel="sms", text="2468")
    assert "Salio: KES 8,637.50" in done["text"] and done["end"] is True
    r = c.post("/console/flows/balance", json={"csrf": csrf_of(c), "channel": "ussd",
                                               "phone": "+254711111111", "text": ""})
    assert r.status_code == 400                       # only the simulator's demo clients


def test_a_pasted_flow_with_a_mistake_shows_its_error_and_nothing_is_saved(app):  # noqa: F811
    c = signed_in(app)
    before = (FLOWS / "balance.yaml").read_text()
    broken = before.replace("on: {found: pick}", "on: {found: pik}")
    assert broken != before
    r = c.post("/console/flows", data={"csrf": csrf_of(c), "file": "balance.yaml", "content": broken})
    assert r.status_code == 303
    page = c.get(r.headers["Location"]).get_data(as_text=True)
    assert 'class="issue error"' in page and "balance.yaml" in page and "pik" in page
    assert (FLOWS / "balance.yaml").read_text() == before
    fine = before.replace("flow: balance\n", "flow: balance\n", 1).replace("no_savings:\n    end: balance.none",
                                                                          "no_savings:\n    end: balance.none\n")
    r = c.post("/console/flows", data={"csrf": csrf_of(c), "file": "balance.yaml", "content": fine})
    token = r.headers["Location"].rsplit("preview=", 1)[1]
    assert c.get(f"/console/flows/balance?preview={token}").status_code == 200
    step = phone_step(c, flow="balance", session="p1", text="", fresh=True, preview=token)
    assert step["text"] == "Enter your PIN:"
    assert c.post("/console/flows", data={"csrf": "wrong", "file": "x.yaml", "content": "a"}).status_code == 403
    assert c.post("/console/flows", data={"csrf": csrf_of(c), "file": "../../etc/passwd",
                                                  "content": "a"}).status_code == 400
    assert c.get("/console/flows?preview=" + "A" * 24).status_code == 404


def test_counts_of_an_earlier_flows_version_can_be_chosen(app):  # noqa: F811
    import datetime as dt

    from convo.dialog import stats

    c = signed_in(app)
    r = app.extensions["convo"].redis
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    r.hset(stats.day_key("oldversion01", today), mapping={"main|menu|in": 5, "main|menu|>due": 2})
    r.hset(stats.VERSIONS_KEY, "oldversion01", today)
    live = c.get("/console/flows/main").get_data(as_text=True)
    assert "?days=7&amp;version=oldversion01" in live and 'data-count="2"' not in live
    old = c.get("/console/flows/main?version=oldversion01").get_data(as_text=True)
    assert re.search(r'data-from="menu" data-to="due" data-count="2"', old)
    assert 'id="counted-version">oldversion01<' in old
    assert 'id="counted-version">' + "nosuch" not in c.get("/console/flows/main?version=nosuch").get_data(as_text=True)


def test_every_diagram_is_well_formed_svg_with_one_arrow_per_transition():
    import xml.etree.ElementTree as ET

    from convo.flowlang.graph import edges
    from convo.web.studio import svg

    ns = "{http://www.w3.org/2000/svg}"
    for name, cf in load_flowset(FLOWS).flows.items():
        root = ET.fromstring(str(svg(cf, link=lambda f: f"/console/flows/{f}").svg))
        groups = root.findall(f"{ns}g")
        assert sum(1 for g in groups if g.get("class", "").startswith("node")) == len(cf.spec.states), name
        assert sum(1 for g in groups if g.get("class") == "edge") == len(edges(cf)), name
        kinds = {g.get("data-kind") for g in groups if g.get("data-kind")}
        assert kinds == {st.kind for st in cf.spec.states.values()}, name


def test_a_lint_problem_marks_its_state_in_the_diagram():
    from convo.web.studio import svg

    cf = load_flowset(FLOWS).flows["balance"]
    drawn = str(svg(cf, issues={"fetch": "error", "show": "warning"}).svg)
    assert 'class="node k-do lint-error" id="state-fetch"' in drawn
    assert 'class="node k-end lint-warning" id="state-show"' in drawn
    assert 'class="node k-flow" id="state-pin"' in drawn
