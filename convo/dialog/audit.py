"""Data-access audit rows, written off the hop path.

Every hop that reads a client's data adds audit rows; inserting them inline
would cost a database commit per hop. :class:`AuditWriter` queues them in
memory and a daemon thread inserts them in batches every ``interval``
seconds, and at exit. A process killed with SIGKILL can lose the last
``interval`` of data-access rows; PIN events (set, failed, locked, reset) do
not go through here: they are written synchronously.
"""
from __future__ import annotations

import atexit
import logging
import threading

log = logging.getLogger(__name__)


class AuditWriter:
    def __init__(self, db, interval: float = 0.5, max_batch: int = 1000):
        self.db, self.interval, self.max_batch = db, interval, max_batch
        self._rows: list[dict] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, rows: list[dict]) -> None:
        from convo.store.db import utcnow

        now = utcnow()
        with self._lock:
            self._rows.extend({"at": now, **r} for r in rows)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="audit-writer")
                self._thread.start()
                atexit.register(self.flush)
            if len(self._rows) >= self.max_batch:
                self._wake.set()

    def flush(self) -> int:
        """Insert everything queued now; returns the number of rows written."""
        from convo.store.subscribers import audit_many

        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return 0
        try:
            audit_many(self.db, rows)
        except Exception as e:  # noqa: BLE001 - put them back; the next flush tries again
            log.error("audit log write failed (%d rows): %s", len(rows), type(e).__name__)
            with self._lock:
                self._rows[:0] = rows[-10 * self.max_batch:]
            return 0
        return len(rows)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            self.flush()
