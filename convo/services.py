"""Everything a request needs, built once per process from :class:`Settings`."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import redis as redis_lib

from convo.config import Settings
from convo.dialog.sessions import SessionStore, make_redis
from convo.flowlang.compiler import FlowLibrary
from convo.mifos.cache import Cache


@dataclass
class Services:
    settings: Settings
    redis: redis_lib.Redis
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
        from convo.store.db import make_engine

        return make_engine(self.settings.database_url)

    @cached_property
    def audit(self):
        """Data-access audit rows, batched off the hop path (convo.dialog.audit)."""
        from convo.dialog.audit import AuditWriter

        return AuditWriter(self.db)

    @cached_property
    def engine(self):
        from convo.dialog.engine import Engine

        return Engine(self)

    def language_for(self, phone: str) -> str:
        """The caller's language: chosen earlier (subscribers), else their country's, else the default."""
        key = f"convo:lang:{phone}"
        lang = self.cache.get(key)
        if lang is None:
            from convo.store.subscribers import language_of

            try:
                lang = language_of(self.db, phone) or ""
            except Exception:  # noqa: BLE001 - no database yet (demo before migration): use defaults
                lang = ""
            self.cache.put(key, lang, 3600)
        return lang or self.country_language(phone)

    def country_language(self, phone: str) -> str:
        """The first language of the caller's country (``CONVO_COUNTRY_LANGUAGES``), else the default."""
        for prefix, code in self._country_languages:
            if phone.startswith(prefix):
                return code
        return self.settings.default_language

    def remember_language(self, phone: str, lang: str) -> None:
        from convo.store.subscribers import set_language

        set_language(self.db, phone, lang)
        self.cache.put(f"convo:lang:{phone}", lang, 3600)

    @cached_property
    def _country_languages(self) -> list[tuple[str, str]]:
        pairs = [p.split(":") for p in self.settings.country_languages.split(",") if ":" in p]
        return sorted((("+" + cc.strip(), lang.strip()) for cc, lang in pairs), key=lambda x: -len(x[0]))


def build_services(settings: Settings | None = None, *, flow_tests=None) -> Services:
    """``flow_tests``: what an edited flows folder must also pass before it goes live when
    ``CONVO_FLOWS_RELOAD_TESTS`` is on (``folder -> failures``; the app and the worker pass the conversation
    tests, :func:`convo.devkit.convtest.reload_tests`); lint (flows and notifications) always runs."""
    settings = settings or Settings.from_env()
    redis = make_redis(settings.redis_url, settings.redis_timeout)
    services = Services(settings=settings, redis=redis, sessions=SessionStore(redis),
                        flows=FlowLibrary(settings.flows_dir, interval=settings.flows_reload_seconds, lint=lint_folder,
                                          tests=flow_tests if settings.flows_reload_tests else None),
                        cache=Cache(redis))
    services.flows.on_refused = lambda refused: _alert_flows_refused(services, refused)
    return services


def _alert_flows_refused(services: "Services", refused: dict) -> None:
    """Staff alert rules ``when: flows_refused`` (flows/alerts.yaml) fire once per refused flows version."""
    from convo.notify import messages as notify

    notify.alert(services, event="flows_refused", key=f"flows_refused:{refused['version']}",
                 version=refused["version"], count=refused["count"], first_error=refused["errors"][0][:300])


def lint_folder(directory, actions=None):
    """Everything ``convo lint`` checks in a flows folder: the flows
    (:func:`convo.flowlang.compiler.lint_directory`) and the notifications (notify.yaml, alerts.yaml,
    the ``notify.*`` texts: variables, segments; :func:`convo.notify.messages.lint`). Returns a ``LintResult``."""
    from convo.flowlang.compiler import LintResult, lint_directory
    from convo.notify.messages import lint

    res = lint_directory(directory, actions)
    if res.flowset is None:
        return res
    rep = lint(directory, res.flowset.locales)
    for w in rep.warnings:
        w.severity = "warning"
    return LintResult(res.flowset if not rep.errors else None, list(rep.errors), res.warnings + list(rep.warnings))
