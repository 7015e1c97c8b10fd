"""A small thread-safe circuit breaker for the Mifos X client, one per server.

    breaker = CircuitBreaker("mifos.example:8443", failures=5, reset_timeout=30)
    breaker.acquire()          # raises CircuitOpen while open (no network touched)
    try:
        ...call Mifos X...
    except Unavailable:
        breaker.failure()      # timeouts, refused connections, 5xx
    else:
        breaker.success()      # any answer, business errors (4xx) included

closed → (``failures`` consecutive failures) → open → (``reset_timeout``
seconds) → half-open: exactly one probe call goes through, every other call
still fails fast; the probe's success closes the breaker, its failure opens it
again for another ``reset_timeout``.

Why not ``pybreaker``: its ``CircuitBreaker.call`` holds the breaker's lock for
the whole wrapped call (pybreaker 1.4.1), so every request to one Mifos X
server would be serialized behind the slowest one; a USSD gateway answers many
callers at once. Its half-open state also lets every waiting caller through at
once instead of one probe. This module only locks around its own counters.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
#: gauge values for :data:`STATE_VALUES` (``convo_mifos_breaker_state``)
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class CircuitOpen(Exception):
    """The breaker is open (or half-open with its probe in flight): fail fast."""


class CircuitBreaker:
    def __init__(self, name: str, *, failures: int = 5, reset_timeout: float = 30.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[["CircuitBreaker", str, str], None] | None = None):
        if failures < 1 or reset_timeout <= 0:
            raise ValueError("failures must be >= 1 and reset_timeout > 0")
        self.name = name
        self.failures = int(failures)
        self.reset_timeout = float(reset_timeout)
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = CLOSED
        self._count = 0
        self._opened_at = 0.0
        self._probe_out = False

    # ---- state

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (an open breaker whose timeout has run
        out reads as half-open: the next call is the probe)."""
        with self._lock:
            if self._state == OPEN and self._clock() - self._opened_at >= self.reset_timeout:
                return HALF_OPEN
            return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._count

    def retry_after(self) -> float:
        """Seconds until the open breaker lets a probe through (0 when not open)."""
        with self._lock:
            if self._state != OPEN:
                return 0.0
            return max(0.0, self.reset_timeout - (self._clock() - self._opened_at))

    # ---- the protocol around one call

    def acquire(self) -> None:
        """Let a call through or raise :class:`CircuitOpen`."""
        with self._lock:
            if self._state == CLOSED:
                return
            if self._state == OPEN:
                if self._clock() - self._opened_at < self.reset_timeout:
                    raise CircuitOpen(f"circuit open for {self.name}")
                self._move(HALF_OPEN)
            if self._probe_out:  # half-open: one probe at a time
                raise CircuitOpen(f"circuit half-open for {self.name}, probe in flight")
            self._probe_out = True

    def success(self) -> None:
        """The server answered (a business error is an answer too)."""
        with self._lock:
            self._count = 0
            self._probe_out = False
            if self._state != CLOSED:
                self._move(CLOSED)

    def failure(self) -> None:
        """The server did not answer usefully: timeout, connection error, 5xx."""
        with self._lock:
            self._probe_out = False
            self._count += 1
            if self._state == HALF_OPEN or (self._state == CLOSED and self._count >= self.failures):
                self._opened_at = self._clock()
                self._move(OPEN)
            elif self._state == OPEN:  # a call let through before the breaker opened
                self._opened_at = self._clock()

    def release(self) -> None:
        """The call ended without telling anything about the server (a bug, an interrupt)."""
        with self._lock:
            self._probe_out = False

    def reset(self) -> None:
        with self._lock:
            self._count, self._probe_out = 0, False
            if self._state != CLOSED:
                self._move(CLOSED)

    def _move(self, state: str) -> None:  # under the lock
        old, self._state = self._state, state
        if self._on_change is not None and old != state:
            try:
                self._on_change(self, old, state)
            except Exception:  # pragma: no cover - metrics must never break a call
                pass
