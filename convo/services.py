"""Everything a request needs, built once per process from :class:`Settings`."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from convo.cache import Cache
from convo.compiler import FlowLibrary
from convo.config import Settings
from convo.session import SessionStore, make_redis


def client_key(phone: str) -> str:
    return f"convo:client:{phone}"


@dataclass
class Services:
    settings: Settings
    redis: object
    sessions: SessionStore
    flows: FlowLibrary
    cache: Cache

    @cached_property
    def mifos(self):
        from convo.mifos.client import MifosClient

        return MifosClient.from_settings(self.settings)

    @cached_property
    def db(self):
        """SQLAlchemy engine of the outbox database (``CONVO_DATABASE_URL``)."""
        from convo.db import make_engine

        return make_engine(self.settings.database_url)

    @cached_property
    def engine(self):
        from convo.engine import Engine

        return Engine(self)

    def language_for(self, phone: str) -> str:
        return self.settings.default_language


def build_services(settings: Settings | None = None) -> Services:
    settings = settings or Settings.from_env()
    redis = make_redis(settings.redis_url)
    return Services(settings=settings, redis=redis, sessions=SessionStore(redis),
                    flows=FlowLibrary(settings.flows_dir, interval=settings.flows_reload_seconds),
                    cache=Cache(redis))
