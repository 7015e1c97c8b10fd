"""Shared fixtures: real Redis and real PostgreSQL, each test run in its own corner.

The tests are in three folders, each marked by the folder it is in (``pytest -m unit`` ...):

* ``tests/unit``: no server, no network, no browser (a socket to anything but a Unix socket fails the
  test there: tests/unit/conftest.py); seconds in all.
* ``tests/integration``: one part against the real thing: Redis, PostgreSQL, the Fineract simulator.
* ``tests/e2e``: the whole service over HTTP, with the callbacks gateways really send (and Chromium).

* ``redis_url``: a Redis database number (1-15) claimed for this pytest process
  with a ``SET NX`` marker in DB 0, flushed before and after, so parallel runs
  never see each other's keys.
* ``pg_url``: a fresh PostgreSQL schema in database ``test``, dropped afterwards.
"""
from __future__ import annotations

import os
import uuid

import pytest

REDIS_BASE = os.environ.get("CONVO_TEST_REDIS", "redis://127.0.0.1:6379")
PG_BASE = os.environ.get("CONVO_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


LAYERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config, items):
    """Mark every test by its folder: ``pytest -m unit`` runs the server-free layer."""
    for item in items:
        parts = item.path.parts
        for layer in LAYERS:
            if "tests" in parts and layer in parts[parts.index("tests"):]:
                item.add_marker(layer)
                break


@pytest.fixture(scope="session")
def _redis_db():
    import redis

    admin = redis.Redis.from_url(REDIS_BASE + "/0")
    token = f"{os.getpid()}-{uuid.uuid4().hex}"
    for n in range(1, 16):
        if admin.set(f"convo-test-claim:{n}", token, nx=True, ex=3600):
            break
    else:
        pytest.fail("no free Redis database number (1-15) for tests")
    db = redis.Redis.from_url(f"{REDIS_BASE}/{n}")
    db.flushdb()
    yield n
    db.flushdb()
    if admin.get(f"convo-test-claim:{n}") == token.encode():
        admin.delete(f"convo-test-claim:{n}")


@pytest.fixture
def redis_url(_redis_db):
    """URL of a real, empty Redis database reserved for this test process."""
    import redis

    url = f"{REDIS_BASE}/{_redis_db}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def pg_url():
    """SQLAlchemy URL of a fresh, empty PostgreSQL schema (dropped after the test)."""
    import sqlalchemy as sa

    schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(PG_BASE, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    # application_name tags every connection made with this URL (in this process or a server it
    # starts), so the teardown can close what a test left open: PostgreSQL allows 100 clients.
    yield f"{PG_BASE}?options=-csearch_path%3D{schema}&application_name={schema}"
    with admin.connect() as c:
        c.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name = :a AND pid <> pg_backend_pid()"), {"a": schema})
        c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(scope="module")
def sim():
    """The seeded Fineract simulator over HTTP (``sim.url``), one per test module; a module that
    needs another shape defines its own ``sim``."""
    from tests.support.e2e import simulator

    with simulator() as s:
        yield s
