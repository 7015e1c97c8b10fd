"""End to end over HTTP with a routes file: the gateway app on a port known before the routes file is
written (so ``{PUBLIC}`` in the YAML - status callback and dlr URLs - points back at it), the Fineract
simulator, PostgreSQL for the outbox, and the worker sending through the routes file's gateways."""
from __future__ import annotations

import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from convo.cli import sim_settings
from convo.devkit.devserver import BackgroundServer
from convo.devkit.fineract_sim import create_sim_app
from convo.store.db import OutboxMessage, upgrade
from convo.web import create_app

TOKEN = "e2e-token_1"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@contextmanager
def routes_stack(redis_url: str, pg_url: str, routes_yaml: str, **overrides):
    """Yield (gateway_url, services); ``{PUBLIC}`` and ``{TOKEN}`` in ``routes_yaml`` are filled in."""
    upgrade(pg_url)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="convo-routes-") as d:
        path = Path(d) / "routes.yaml"
        path.write_text(routes_yaml.replace("{PUBLIC}", url).replace("{TOKEN}", TOKEN), encoding="utf-8")
        sim = BackgroundServer(create_sim_app()).start()
        app = None
        try:
            settings = sim_settings(sim.url, redis_url=redis_url, database_url=pg_url, flows_reload_seconds=0,
                                    routes_file=str(path), callback_token=TOKEN, **overrides)
            app = create_app(settings)
            with BackgroundServer(app, port=port) as gw:
                yield gw.url, app.extensions["convo"]
        finally:
            sim.stop()
            if app is not None:
                app.extensions["convo"].db.dispose()


def deliver(services) -> int:
    """What `convo worker` does, once."""
    from convo.jobs.worker import run_worker

    return run_worker(services.settings, once=True, handle_signals=False, engine=services.db)


def rows(services) -> list[OutboxMessage]:
    with sa.orm.Session(services.db) as s:
        return list(s.scalars(sa.select(OutboxMessage).order_by(OutboxMessage.id)))
