"""The time budget of one hop: every outside call on the hop path stays inside it.

The engine opens ``with hop_budget(seconds):`` around a hop; the Mifos X
client shortens its timeouts to what is left and does not start a call when
nothing is left, so the hop answers (from cache, the last known figures, or
"try again later") before the gateway gives up on it.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar

_DEADLINE: ContextVar[float | None] = ContextVar("convo_hop_deadline", default=None)


@contextmanager
def hop_budget(seconds: float):
    token = _DEADLINE.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def remaining() -> float | None:
    """Seconds left in the current hop, or None outside a hop."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()
