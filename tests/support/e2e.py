"""Helpers for end-to-end tests: the Fineract simulator and the gateway, both served over HTTP."""
from __future__ import annotations

import itertools
from contextlib import contextmanager

import requests

from convo.cli import sim_settings
from convo.devkit.devserver import BackgroundServer
from convo.devkit.fineract_sim import create_sim_app
from convo.web import create_app

_sessions = itertools.count(1)


def give_pin(services, phone: str, pin: str, client_id: int | None = None) -> None:
    """PIN ``pin`` for (``phone``, ``client_id``), set directly, phone unlocked; without ``client_id``
    for every client Mifos X has on that phone."""
    from convo.devkit.convtest import client_ids_of
    from convo.security import PinHasher
    from convo.store.subscribers import set_pin

    ids = [client_id] if client_id is not None else client_ids_of(services, phone)
    assert ids, f"no client on {phone}"
    for cid in ids:
        set_pin(services.db, PinHasher.from_settings(services.settings), phone, cid, pin)


@contextmanager
def simulator():
    """Yield the Fineract simulator (seeded) served over HTTP; ``.url`` is its base URL."""
    from convo.devkit.fineract_sim import start_simulator

    s = start_simulator()
    try:
        yield s
    finally:
        s.stop()


@contextmanager
def pg_app(sim_url: str, redis_url: str, pg_url: str, **settings):
    """Yield an in-process app on a migrated PostgreSQL schema and the simulator at ``sim_url``
    (flows never reloaded, ``settings`` on top of the simulator's); its pool is closed after."""
    from convo.store.db import upgrade

    upgrade(pg_url)
    app = create_app(sim_settings(sim_url, redis_url=redis_url, database_url=pg_url, flows_reload_seconds=0,
                                  **settings))
    try:
        yield app
    finally:
        app.extensions["convo"].db.dispose()


@contextmanager
def running_gateway(redis_url: str, **overrides):
    """Yield (gateway_url, sim_url, services) with the whole stack served over real HTTP.

    Without ``database_url`` the gateway gets a fresh, migrated SQLite database of its own.
    """
    import tempfile

    from convo.store.db import upgrade

    tmp = None
    if "database_url" not in overrides:
        tmp = tempfile.TemporaryDirectory(prefix="convo-e2e-")
        overrides["database_url"] = f"sqlite:///{tmp.name}/convo.db"
        upgrade(overrides["database_url"])
    sim = BackgroundServer(create_sim_app()).start()
    app = None
    try:
        settings = sim_settings(sim.url, redis_url=redis_url, flows_reload_seconds=0, **overrides)
        app = create_app(settings)
        with BackgroundServer(app) as gw:
            yield gw.url, sim.url, app.extensions["convo"]
    finally:
        sim.stop()
        if tmp is not None:
            if app is not None:
                app.extensions["convo"].db.dispose()
            tmp.cleanup()


@contextmanager
def running_sms_stack(redis_url: str, database_url: str, **overrides):
    """Gateway + simulator + outbox database + fake Africa's Talking (delivery reports come back over HTTP).

    Yields (gateway_url, fake_at_server, services); run the worker with ``services``' settings.
    """
    from convo.devkit.fake_at import start_fake_at
    from convo.store.db import upgrade

    upgrade(database_url)
    fake = start_fake_at()
    try:
        with running_gateway(redis_url, database_url=database_url, at_username="sandbox", at_api_key="test",
                             at_base_url=fake.url, **overrides) as (gw, _sim, services):
            token = overrides.get("callback_token")
            fake.fake.configure(delivery_url=f"{gw}/gateways/africastalking/delivery"
                                + (f"?token={token}" if token else ""))
            yield gw, fake, services
    finally:
        fake.stop()


class Handset:
    """A phone texting the short code through Africa's Talking (inbound SMS callbacks)."""

    def __init__(self, gateway: str, number: str, short_code: str = "22384", token: str | None = None,
                 name: str = "africastalking"):
        self.gateway, self.number, self.short_code, self.name = gateway, number, short_code, name
        self.params = {"token": token} if token else None

    def text(self, body: str, message_id: str | None = None, link_id: str | None = None) -> requests.Response:
        form = {"from": self.number, "to": self.short_code, "text": body, "date": "2026-11-27 10:00:00",
                "id": message_id or f"ATXid_in_{next(_sessions):06d}", "networkCode": "63902"}
        if link_id:
            form["linkId"] = link_id
        r = requests.post(f"{self.gateway}/gateways/{self.name}/sms", data=form, params=self.params, timeout=10)
        assert r.status_code == 200, r.text
        return r


class Phone:
    """A handset dialing through Africa's Talking: every hop carries the cumulative ``text``."""

    def __init__(self, gateway: str, number: str, code: str = "*384*12#", token: str | None = None):
        self.gateway, self.number, self.code = gateway, number, code
        self.params = {"token": token} if token else None
        self.session_id = None
        self.inputs: list[str] = []

    def dial(self) -> str:
        self.session_id = f"ATUid_{next(_sessions):06d}"
        self.inputs = []
        return self._post()

    def answer(self, text: str) -> str:
        self.inputs.append(text)
        return self._post()

    def repeat(self) -> str:
        return self._post()

    def _post(self) -> str:
        r = requests.post(f"{self.gateway}/gateways/africastalking/ussd", timeout=10, params=self.params, data={
            "sessionId": self.session_id, "serviceCode": self.code, "phoneNumber": self.number,
            "networkCode": "63902", "text": "*".join(self.inputs)})
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("text/plain")
        return r.text
