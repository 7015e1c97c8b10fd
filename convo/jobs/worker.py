"""``convo worker``: one loop running the registered tasks, each on its own thread.

Tasks (one file each; :func:`build_tasks` registers them, in this order):

* ``transfers`` - repayments from savings (:mod:`convo.jobs.transfers`);
* ``hooks``     - Fineract hooks left pending, retried (:mod:`convo.jobs.hooks`);
* ``schedule``  - reminders on ``CONVO_REMIND_CRON``, the officer's day (:mod:`convo.jobs.schedule`);
* ``outbox``    - sends what is due in the outbox (:mod:`convo.jobs.outbox`), last so that a ``--once``
  run also sends what the others wrote.

Each task claims its rows with :mod:`convo.store.lease`. A task is an object with ``name``,
``idle_seconds`` and ``tick() -> int`` (rows handled; 0: nothing due, wait ``idle_seconds``), and
optionally ``start(stop)``, ``drain(stop) -> int`` (the ``--once`` run; default: tick until 0) and
``close()``. A new job: one file with its task, one line in :func:`build_tasks`, its test.

Everything the tasks need comes in ``ctx`` (:class:`JobContext`), built by whoever starts the worker
(``convo worker``, ``convo worker --once``, ``convo demo`` and ``python -m convo.jobs.worker`` all go
through :func:`convo.cli.start_worker`): this package imports neither the app's services nor the web app.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy.engine import Engine

from convo.jobs.outbox import (  # noqa: F401 - the outbox worker's names, as tests and tools import them
    Claimed,
    LeaseTooShort,
    OutboxTask,
    OutboxWorker,
    backoff_seconds,
    check_lease,
    gateway_timeout,
    min_lease_seconds,
    outbox_worker,
    sender_from_settings,
)
from convo.store.db import make_engine
from gateways.base import SmsSender

__all__ = ["JobContext", "JobLoop", "LeaseTooShort", "Task", "Worker", "build_tasks", "check_lease", "gateway_timeout",
           "main", "min_lease_seconds", "run_worker"]

log = logging.getLogger("convo.jobs.worker")

#: the outbox dispatcher under its former name
Worker = OutboxWorker


class JobContext(Protocol):
    """What the tasks need (the app's ``Services`` is one): settings, the database, Mifos X, texts, cache."""

    @property
    def settings(self) -> Any: ...
    @property
    def db(self) -> Engine: ...
    @property
    def mifos(self) -> Any: ...
    @property
    def flows(self) -> Any: ...
    @property
    def cache(self) -> Any: ...


class Task(Protocol):
    name: str
    idle_seconds: float

    def tick(self) -> int: ...


def build_tasks(ctx: JobContext, *, sender: SmsSender | None = None, **outbox_overrides) -> list:
    """Every registered task for ``ctx`` (see the module doc). ``sender`` defaults to the routes file's
    router; ``outbox_overrides`` (``batch``, ``lease_seconds``...) replace the outbox's settings.
    Raises :class:`LeaseTooShort` when the lease does not cover a send."""
    from convo.jobs.hooks import HookRetryTask
    from convo.jobs.schedule import ReminderSchedule
    from convo.jobs.transfers import TransferTask

    settings = ctx.settings
    schedule = ReminderSchedule(ctx, settings.remind_cron, timezone=settings.timezone)
    sender = sender or sender_from_settings(settings)
    try:
        outbox = OutboxTask(outbox_worker(settings, ctx.db, sender, **outbox_overrides))
    except LeaseTooShort:
        _close(sender)
        raise
    return [TransferTask(ctx), HookRetryTask(ctx), schedule, outbox]


class JobLoop:
    """Runs tasks: :meth:`run` until stopped (a thread per task), or once each (``once=True``, in order)."""

    def __init__(self, tasks: Sequence[Task]):
        self.tasks = list(tasks)
        self.handled: dict[str, int] = {t.name: 0 for t in self.tasks}

    def run(self, *, once: bool = False, stop_event: threading.Event | None = None,
            handle_signals: bool = True) -> dict[str, int]:
        """Run until ``stop_event`` is set (SIGTERM/SIGINT set it when called from the main thread and
        ``handle_signals``: the sends in flight finish, the rest of a batch goes back). With ``once``, each
        task's ``drain`` in order, then return (a task that raised is raised again once the others ran).
        Returns the rows each task handled."""
        stop = stop_event or threading.Event()
        old = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            def _stop(signum, _frame):
                log.info("signal %s: finishing the sends in flight, putting the rest back, then stopping", signum)
                stop.set()

            for sig in (signal.SIGTERM, signal.SIGINT):
                old[sig] = signal.signal(sig, _stop)
        log.info("worker: tasks %s%s", ", ".join(t.name for t in self.tasks), " (once)" if once else "")
        try:
            for t in self.tasks:
                start = getattr(t, "start", None)
                if start:
                    start(stop)
            if once:
                failed: Exception | None = None
                for t in self.tasks:        # one task failing does not keep the others from their turn
                    if stop.is_set():
                        break
                    try:
                        self.handled[t.name] += self._drain(t, stop)
                    except Exception as exc:  # raised again once the others ran
                        log.exception("task %s failed", t.name)
                        failed = failed or exc
                if failed is not None:
                    raise failed
            else:
                threads = [threading.Thread(target=self._loop, args=(t, stop), name=f"job-{t.name}", daemon=True)
                           for t in self.tasks]
                for th in threads:
                    th.start()
                while not stop.is_set() and any(th.is_alive() for th in threads):
                    stop.wait(0.5)
                stop.set()
                for th in threads:
                    th.join()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            for t in self.tasks:
                close = getattr(t, "close", None)
                if close:
                    close()
        log.info("worker: handled %s", self.handled)
        return self.handled

    def _drain(self, task: Task, stop: threading.Event) -> int:
        drain = getattr(task, "drain", None)
        if drain:
            return drain(stop)
        total = 0
        while not stop.is_set():
            n = task.tick()
            total += n
            if n <= 0:
                break
        return total

    def _loop(self, task: Task, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                n = task.tick()
            except Exception:  # keep the task alive; a row it held is taken over when its lease runs out
                wait = max(task.idle_seconds, 1.0)
                log.exception("task %s failed; again in %.1fs", task.name, wait)
                stop.wait(wait)
                continue
            self.handled[task.name] += n
            if n <= 0:
                stop.wait(task.idle_seconds)


def run_worker(settings, *, once: bool = False, batch: int | None = None, stop_event: threading.Event | None = None,
               sender: SmsSender | None = None, engine: Engine | None = None, handle_signals: bool = True,
               **overrides) -> int:
    """The outbox task alone, for tests and tools (``convo worker`` runs every task: :func:`build_tasks`).

    ``engine`` defaults to one on ``settings.database_url``; ``overrides`` go to :class:`OutboxWorker`.
    Returns the number of rows claimed. Raises :class:`LeaseTooShort` when the lease does not cover a send.
    """
    own_engine = engine is None
    engine = engine or make_engine(settings.database_url)
    sender = sender or sender_from_settings(settings)
    try:
        try:
            task = OutboxTask(outbox_worker(settings, engine, sender, batch=batch, **overrides))
        except LeaseTooShort:
            _close(sender)
            raise
        return JobLoop([task]).run(once=once, stop_event=stop_event, handle_signals=handle_signals)["outbox"]
    finally:
        if own_engine:
            engine.dispose()


def _close(sender) -> None:
    close = getattr(sender, "close", None)
    if callable(close):
        close()


def main(argv: list[str] | None = None) -> int:
    """``python -m convo.jobs.worker [--once] [--batch N] [--lease-seconds S] [--database-url URL]``: the same
    as ``convo worker`` with those options (this process becomes ``python -m convo.cli worker``, which builds
    what the tasks need: this package does not import the app)."""
    args = list(sys.argv[1:] if argv is None else argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "convo.cli", "worker", *args])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
