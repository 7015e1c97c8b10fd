"""Fineract hooks left ``pending`` (Mifos X was down when they came) retried: a task of the worker loop.

The claim, lease and backoff are :func:`convo.notify.receipts.retry_pending_hooks`'s (on
:mod:`convo.store.lease`); this task calls it every ``idle_seconds`` while nothing is due.
"""
from __future__ import annotations

from convo.notify.receipts import retry_pending_hooks

__all__ = ["HookRetryTask"]


class HookRetryTask:
    """Retries due pending hooks; ``ctx`` has ``db``, ``mifos``, ``settings``, ``flows`` (texts)."""

    name = "hooks"

    def __init__(self, ctx, *, idle_seconds: float = 60.0, batch: int = 50):
        self.ctx = ctx
        self.idle_seconds = idle_seconds
        self.batch = batch

    def tick(self) -> int:
        """Try the due pending hooks (up to ``batch``); how many were tried."""
        return retry_pending_hooks(self.ctx, limit=self.batch)
