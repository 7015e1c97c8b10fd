"""Conversation tests: YAML files in ``flows/tests/`` that dial, expect, answer, expect.

```yaml
- name: Grace checks her savings balance
  phone: "+254700000101"
  steps:
    - dial: "*384*12#"            # a new USSD session
      expect: Welcome Grace       # text (or list of texts) the screen must contain
    - send: "1"
      expect: [Choose an account, "1. "]
    - send: "1"
      expect: "Balance: KES"
      ends: true                  # the reply must be END (false: must be CON)
```

Each step goes over HTTP exactly as Africa's Talking sends it (cumulative
``text``) to the app under test. ``expect_not`` lists texts that must not
appear. ``convo test`` and the pytest suite run these files. ``pin: "2468"`` on a
test gives its phone that PIN before the first step; ``language: sw`` the
language it chose earlier (default: none, the country's language).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

_ids = itertools.count(1)


@dataclass
class Failure:
    test: str
    step: int
    message: str
    screen: str

    def __str__(self) -> str:
        return f"{self.test}, step {self.step}: {self.message}\n    screen was: {self.screen!r}"


@dataclass
class Result:
    file: str
    name: str
    failure: Failure | None = None
    screens: list[str] = field(default_factory=list)


class UssdPhone:
    """A phone dialing through a Flask test client (or any ``post(path, data)`` callable)."""

    def __init__(self, post: Callable[[str, dict], tuple[int, str]], phone: str, path: str):
        self.post, self.phone, self.path = post, phone, path
        self.session: str | None = None
        self.inputs: list[str] = []
        self.code = ""

    def dial(self, code: str) -> tuple[int, str]:
        self.session = f"ATUid_test_{next(_ids)}"
        self.inputs, self.code = [], code
        return self._send()

    def send(self, text: str) -> tuple[int, str]:
        self.inputs.append(text)
        return self._send()

    def _send(self) -> tuple[int, str]:
        form = {"sessionId": self.session, "serviceCode": self.code, "phoneNumber": self.phone,
                "networkCode": "63902", "text": "*".join(self.inputs)}
        return self.post(self.path, form)


def load_tests(path: str | Path) -> list[tuple[str, dict]]:
    path = Path(path)
    files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
    out = []
    for f in files:
        doc = yaml.safe_load(f.read_text(encoding="utf-8")) or []
        if not isinstance(doc, list):
            raise ValueError(f"{f}: a conversation test file is a list of tests")
        out += [(str(f), t) for t in doc]
    return out


def _as_list(v: Any) -> list[str]:
    if v is None:
        return []
    return [str(x) for x in (v if isinstance(v, list) else [v])]


def run_test(post: Callable[[str, dict], tuple[int, str]], file: str, test: dict,
             path: str = "/gateways/africastalking/ussd", setup: Callable[[dict], None] | None = None) -> Result:
    name = test.get("name", "unnamed")
    res = Result(file, name)
    if setup is not None:
        setup(test)
    phone = UssdPhone(post, str(test["phone"]), path)
    for i, step in enumerate(test.get("steps", []), 1):
        if "dial" in step:
            status, body = phone.dial(str(step["dial"]))
        else:
            status, body = phone.send(str(step["send"]))
        res.screens.append(body)
        problems = []
        if status != 200:
            problems.append(f"HTTP {status}")
        for want in _as_list(step.get("expect")):
            if want not in body:
                problems.append(f"expected {want!r}")
        for bad in _as_list(step.get("expect_not")):
            if bad in body:
                problems.append(f"did not expect {bad!r}")
        if "ends" in step and body.startswith("END ") != bool(step["ends"]):
            problems.append("expected the session to " + ("end" if step["ends"] else "continue"))
        if problems:
            res.failure = Failure(name, i, "; ".join(problems), body)
            break
    return res


def client_ids_of(services, phone: str) -> list[int]:
    """The Mifos X clients registered to ``phone``, as the ``identify`` flow finds them
    (numbers read in each client's own country: :func:`convo.notify.recipients.office_regions`)."""
    from convo.notify.recipients import office_regions

    return [r.id for r in services.mifos.clients_by_phone(phone, office_regions(services))]


def pin_seeder(services) -> Callable[[dict], None]:
    """``setup`` for :func:`run_test`: each test's phone starts in its own language (or
    ``language: sw``) with nothing remembered from earlier tests; ``pin: "2468"`` sets that
    PIN (and no lock) for every client registered to the phone, ``pin: ""`` clears them."""
    from convo.security import PinHasher
    from convo.store.subscribers import reset, set_language, set_pin

    def setup(test: dict) -> None:
        phone = str(test["phone"])
        set_language(services.db, phone, str(test.get("language", "")))
        services.cache.drop(f"convo:lang:{phone}")
        if "pin" not in test:
            return
        if test["pin"]:
            for cid in client_ids_of(services, phone):
                set_pin(services.db, PinHasher.from_settings(services.settings), phone, cid, str(test["pin"]))
        else:
            reset(services.db, str(test["phone"]))
    return setup


def prepare_app(app) -> Callable[[dict], None]:
    """Apply the database migrations of a test app and return its :func:`pin_seeder`."""
    from convo.store.db import upgrade

    services = app.extensions["convo"]
    upgrade(services.db)
    return pin_seeder(services)


def flask_poster(client) -> Callable[[str, dict], tuple[int, str]]:
    def post(path: str, form: dict) -> tuple[int, str]:
        r = client.post(path, data=form)
        return r.status_code, r.get_data(as_text=True)
    return post


def reload_tests(app_factory) -> Callable[[Path], list[str]]:
    """The conversation tests as :class:`~convo.flowlang.compiler.FlowLibrary`'s check of an edited flows
    folder (``CONVO_FLOWS_RELOAD_TESTS``): ``folder -> failures`` ("file: what failed"), each run against an
    app made by ``app_factory`` (:func:`convo.web.create_app`)."""
    def failures(folder: Path) -> list[str]:
        return [f"{Path(r.file).name}: {r.failure}" for r in run_directory(folder, app_factory=app_factory)
                if r.failure]
    return failures


def run_directory(flows_dir: str | Path, tests: str | Path | None = None, *, app_factory) -> list[Result]:
    """Run the conversation tests of ``flows_dir`` (default ``<flows_dir>/tests``) against its own
    flows, the built-in Fineract simulator, an in-memory Redis and a throwaway SQLite database.
    The service runs this before it switches to an edited flows folder (``CONVO_FLOWS_RELOAD_TESTS``).

    The sandbox gets the default settings, never the running service's: its callback token, rate
    limits or production mode must not decide whether a conversation test passes."""
    import tempfile

    from convo.config import Settings
    from convo.devkit.fineract_sim import start_simulator

    flows_dir = Path(flows_dir)
    found = load_tests(tests or flows_dir / "tests")
    sim = start_simulator()
    try:
        with tempfile.TemporaryDirectory(prefix="convo-convtest-") as tmp:
            app = app_factory(Settings(
                fineract_url=f"{sim.url}/fineract-provider/api/v1", fineract_user="mifos", fineract_password="password",
                fineract_tenant="default", redis_url="memory://", flows_dir=str(flows_dir),
                database_url=f"sqlite:///{tmp}/conversations.db", flows_reload_seconds=0, flows_reload_tests=False))
            setup = prepare_app(app)
            post = flask_poster(app.test_client())
            try:
                return [run_test(post, file, t, setup=setup) for file, t in found]
            finally:
                services = app.extensions["convo"]
                services.audit.flush()                  # nothing left for the (idle) writer thread to write
                services.db.dispose()
    finally:
        sim.stop()
