"""Reminders on ``CONVO_REMIND_CRON`` and the field officer's morning SMS: a task of the worker loop.

Several workers may each run it: the outbox keys make every reminder go once
(:mod:`convo.notify.reminders`), and the officer's day once per office morning
(:mod:`convo.notify.officer_day`).
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from zoneinfo import ZoneInfo

from convo.notify import officer_day, reminders

__all__ = ["ReminderSchedule"]

log = logging.getLogger("convo.notify.reminders")


class ReminderSchedule:
    """Reminders at every ``cron`` time (5-field cron, 6 with seconds, in ``timezone``; empty: never), and the
    officer's day checked every ``officer_every`` seconds. Raises ``ValueError`` for a cron that is not one.

    In a ``--once`` run (:meth:`drain`) the reminders run when ``cron`` matches the current minute, so a
    system cron calling ``convo worker --once`` every minute keeps the same schedule.
    """

    name = "schedule"

    def __init__(self, ctx, cron: str, *, timezone: str = "Africa/Nairobi", idle_seconds: float = 1.0,
                 officer_every: float = 60.0, clock=None):
        from croniter import croniter

        if cron and not croniter.is_valid(cron):
            raise ValueError(f"CONVO_REMIND_CRON: not a cron expression: {cron!r}")
        self.ctx, self.cron, self.tz = ctx, cron, ZoneInfo(timezone)
        self.idle_seconds, self.officer_every = idle_seconds, officer_every
        self.clock = clock or (lambda: dt.datetime.now(self.tz))
        self._it = croniter(cron, self.clock()) if cron else None
        self._next_run = self._it.get_next(dt.datetime) if self._it else None
        self._next_officer = 0.0

    def start(self, stop) -> None:
        log.info("scheduler: reminders %s (%s)", self.cron or "off", self.tz.key)

    def tick(self) -> int:
        """Run what is due now. Returns 0: nothing is queued behind a scheduled run, so the loop waits
        ``idle_seconds`` before the next look at the clock."""
        if self._it is not None and self._next_run is not None and self.clock() >= self._next_run:
            self._remind()
            self._next_run = self._it.get_next(dt.datetime)
        if time.monotonic() >= self._next_officer:
            self._next_officer = time.monotonic() + self.officer_every
            officer_day.tick(self.ctx)
        return 0

    def drain(self, stop) -> int:
        """The ``--once`` run: reminders if ``cron`` matches this minute, the officer's day if it is time."""
        from croniter import croniter

        runs = 0
        if self.cron and croniter.match(self.cron, self.clock()):
            runs += self._remind()
        runs += officer_day.tick(self.ctx) is not None
        return runs

    def _remind(self) -> int:
        try:
            rep = reminders.run(self.ctx)
        except Exception:  # next time, then
            log.exception("reminder run failed")
            return 0
        log.info("reminders: %d found, %d written, %d already sent, %d suppressed, %d alerts",
                 len(rep.reminders), rep.written, rep.duplicates, rep.suppressed, rep.alerts)
        return 1
