"""The outbox task of ``convo worker``: sends what is due in the outbox, with leases, retries and backoff.

One dispatch round (:meth:`OutboxWorker.dispatch_once`):

1. **Claim** (one short transaction, :func:`convo.store.lease.claim`): up to
   ``batch`` rows that are ``queued`` and due, or ``sending`` with an expired
   lease (their worker died), are set to ``sending`` with ``leased_by`` = a
   fresh token, ``lease_until`` = now + lease, ``attempts + 1``. On PostgreSQL
   the rows are picked with ``FOR UPDATE SKIP LOCKED``, so concurrent workers
   on any number of machines never claim the same row. Commit. This commit is
   the durable "about to send" record.
2. **Send** outside any transaction, one *unit* at a time on
   ``concurrency`` threads. A unit is one message, or (for a gateway with
   bulk sends, ``sender.max_recipients``) the messages of the batch with the
   same text and sender id - one HTTP request either way. Each unit gets the
   lease deadline; a unit that could not finish before it is not started.
3. **Record** each unit's results as they come back: a sending thread hands
   its results to the dispatching thread and waits until they are committed
   before it takes another unit. The dispatching thread commits whatever has
   come back at once (group commit); each result is written only if the row
   is still ``sending`` under *our* token (:func:`convo.store.lease.finish_rows`;
   PostgreSQL: one guarded ``UPDATE … FROM json_to_recordset(…) RETURNING`` in
   autocommit, one round trip; SQLite: ``SELECT … FOR UPDATE`` then guarded
   UPDATEs). ``sent`` stores provider id/cost/parts; ``retry``
   re-queues with exponential backoff and jitter, or ends ``failed`` after
   ``max_attempts``; ``failed`` is final with the reason. Units not started
   (stop requested, deadline near) go back to ``queued`` as they were.

Guarantees and the honest remaining window: while a lease holds nobody else
sends the row. At any moment at most ``concurrency`` units are sent and not
yet recorded, so a worker killed with SIGKILL re-sends at most those (at
least once; Africa's Talking has no idempotency key to dedupe on): with
distinct texts that is ``concurrency`` messages, not the batch. Rows taken
over after a lease expiry say so in ``last_error`` ("lease expired: worker …
did not finish; retrying (may have been sent)"), and keep saying so once
sent. The lease must cover a whole send (see :func:`min_lease_seconds`: the
worker refuses to start otherwise). Clocks of worker machines must be
NTP-synced (lease times are written by the workers).

SQLite works for one worker (the claim is one atomic ``UPDATE … RETURNING``).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import inspect
import logging
import os
import queue
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from convo import metrics
from convo.notify.outbox import apply_pending_reports, attach_unmatched_reports, opted_out_among
from convo.store import lease
from convo.store.db import DeliveryReport, OutboxMessage, utcnow
from convo.store.lease import backoff_seconds
from gateways.base import OutgoingSms, SendResult, SmsSender

__all__ = ["Claimed", "LeaseTooShort", "OUTBOX_LEASE", "OutboxTask", "OutboxWorker", "backoff_seconds", "check_lease",
           "gateway_timeout", "min_lease_seconds", "outbox_worker", "sender_from_settings"]

log = logging.getLogger("convo.jobs.worker")
# declarative models' ``__table__`` is typed as a FromClause; these are Tables (update/insert)
outbox = cast(sa.Table, OutboxMessage.__table__)
reports = cast(sa.Table, DeliveryReport.__table__)
#: the outbox's lease columns: ``queued`` rows due at ``next_attempt_at``, ``sending`` while leased
OUTBOX_LEASE = lease.LeaseTable(outbox, ready=("queued",), leased="sending")


@dataclass(frozen=True)
class Claimed:
    """A row this worker holds a lease on."""

    message: OutgoingSms
    attempts: int
    requested_by_client: bool
    token: str
    #: the "lease expired: worker … did not finish" note when this row was taken over from a dead worker
    taken_over: str | None = None


TAKEOVER = "lease expired: worker "
LEASE_MARGIN_SECONDS = 5.0


class LeaseTooShort(ValueError):
    """``CONVO_WORKER_LEASE_SECONDS`` does not cover a send; the message says what to set."""


def gateway_timeout(sender) -> float:
    """Seconds one send request of ``sender`` may take at most (connect + read), 0 when it does not say.

    Read from ``sender.send_timeout`` or ``sender.timeout`` (a number, or a
    ``(connect, read)`` pair as requests takes it - the Africa's Talking sender's).
    """
    t = getattr(sender, "send_timeout", None)
    if t is None:
        t = getattr(sender, "timeout", None)
    if isinstance(t, (tuple, list)):
        return float(sum(float(x) for x in t if x is not None))
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        return float(t)
    return 0.0


def min_lease_seconds(timeout: float) -> float:
    """The rule: a lease must be at least ``2 x gateway timeout + 5 s`` (0 for a gateway without a timeout).

    One timeout in which sends may still start, one for the last send to
    finish, and 5 s to record the results; a shorter lease would expire under
    a slow-but-alive worker, or leave no time to start any send at all.
    """
    return 2 * timeout + LEASE_MARGIN_SECONDS if timeout > 0 else 0.0


def check_lease(settings, sender: SmsSender | None = None) -> None:
    """Raise :class:`LeaseTooShort` unless ``settings.worker_lease_seconds`` covers a send
    (``convo worker`` at start)."""
    own = sender is None
    sender = sender or sender_from_settings(settings)
    try:
        lease = float(getattr(settings, "worker_lease_seconds", 60.0))
        need = min_lease_seconds(gateway_timeout(sender))
        if lease < need:
            raise LeaseTooShort(_lease_message(lease, sender, need))
    finally:
        close = getattr(sender, "close", None)
        if own and callable(close):
            close()


def _lease_message(lease: float, sender, need: float) -> str:
    gateway = getattr(sender, "timeout_gateway", getattr(sender, "name", "?"))
    return (f"CONVO_WORKER_LEASE_SECONDS={lease:g} is too short for gateway {gateway!r}: one "
            f"send may take {gateway_timeout(sender):g} s (connect + read timeout, CONVO_AT_TIMEOUT), and the lease "
            f"must be at least 2 x that + {LEASE_MARGIN_SECONDS:g} s = {need:g} s. Raise CONVO_WORKER_LEASE_SECONDS "
            f"or lower the gateway timeout; with this lease messages would be retried forever, or sent twice.")


def _takeover_note(last_error: str | None) -> str | None:
    if not last_error:
        return None
    i = last_error.find(TAKEOVER)
    return last_error[i:] if i >= 0 else None


def _recorded_values(v) -> dict:
    """A send result's row values (:meth:`OutboxWorker.record`); the gateway and country stay when not given."""
    c = outbox.c
    return {**{k: v.c[k] for k in v.c.keys() if k != "id"},
            "gateway": sa.func.coalesce(v.c["gateway"], c.gateway,
                                        sa.bindparam("sender_gateway", type_=c.gateway.type)),
            "country": sa.func.coalesce(v.c["country"], c.country),
            "updated_at": sa.bindparam("recorded_at", type_=c.updated_at.type)}


#: a delivery report that arrived before its message's provider id was recorded (applied after recording)
_EARLY = sa.and_(outbox.c.provider_id.is_not(None), sa.exists().where(
    reports.c.provider_id == outbox.c.provider_id, reports.c.outbox_id.is_(None)).correlate(outbox)).label("early")


def sender_from_settings(settings):
    """The worker's sender: a :class:`convo.notify.routing.Router` over the routes file (or ``CONVO_AT_*``)."""
    from convo.notify.routing import Router, routes_from_settings

    return Router(routes_from_settings(settings))


def _mark_opted_out(conn: Connection, phones: Sequence[str], source: str) -> None:
    from convo.notify.outbox import set_opt_out

    for phone in sorted(set(phones)):
        set_opt_out(conn, phone, True, source=source[:32])


class OutboxWorker:
    """Dispatches the outbox of ``engine`` through ``sender``. See the module doc for the protocol."""

    def __init__(
        self,
        engine: Engine,
        sender: SmsSender,
        *,
        name: str | None = None,
        batch: int = 100,
        lease_seconds: float = 60.0,
        concurrency: int = 8,
        max_attempts: int = 8,
        retry_base_seconds: float = 30.0,
        retry_max_seconds: float = 3600.0,
        poll_seconds: float = 1.0,
        sweep_seconds: float = 10.0,
        clock: Callable[[], dt.datetime] = utcnow,
    ):
        self.engine = engine
        self.sender = sender
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.batch = max(1, int(batch))
        self.lease = dt.timedelta(seconds=float(lease_seconds))
        self.concurrency = max(1, int(concurrency))
        self.send_timeout = gateway_timeout(sender)
        need = min_lease_seconds(self.send_timeout)
        if float(lease_seconds) < need:
            raise LeaseTooShort(_lease_message(float(lease_seconds), sender, need))
        self.max_attempts = max(1, int(max_attempts))
        self.retry_base = float(retry_base_seconds)
        self.retry_max = float(retry_max_seconds)
        self.poll_seconds = float(poll_seconds)
        self.sweep_seconds = float(sweep_seconds)
        self.clock = clock
        self.is_pg = engine.dialect.name == "postgresql"
        try:
            params = inspect.signature(sender.send).parameters
            self._pass_deadline = "deadline" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
        except (TypeError, ValueError):
            self._pass_deadline = False
        self.stats = {"sent": 0, "retry": 0, "failed": 0, "suppressed": 0, "lost_lease": 0, "released": 0}
        self._stop = threading.Event()
        self._last_sweep = time.monotonic()

    # -- 1. claim

    def claim(self, limit: int | None = None) -> list[Claimed]:
        """Lease up to ``limit`` due rows (committed before returning). Opted-out ones are suppressed here."""
        now = self.clock()
        token = lease.new_token(self.name)
        c = outbox.c
        takeover = sa.case(
            (c.status == "sending",
             sa.literal(TAKEOVER) + sa.func.coalesce(c.leased_by, "?")
             + sa.literal(" did not finish; retrying (may have been sent)")),
            else_=c.last_error,
        )
        with self.engine.begin() as conn:
            rows = lease.claim(
                conn, OUTBOX_LEASE, token=token, now=now, lease=self.lease, limit=limit or self.batch,
                values={"last_attempt_at": now, "updated_at": now, "last_error": takeover},
                returning=(c.id, c.recipient, c.body, c.sender_id, c.link_id, c.encoding, c.segments, c.kind,
                           c.idempotency_key, c.attempts, c.requested_by_client, c.last_error, c.via),
            )
            if not rows:
                return []
            claimed = [
                Claimed(
                    OutgoingSms(r.id, r.recipient, r.body, r.sender_id, r.link_id, r.encoding, r.segments, r.kind,
                                r.idempotency_key, via=r.via),
                    r.attempts, r.requested_by_client, token, _takeover_note(r.last_error),
                )
                for r in rows
            ]
            stopped = opted_out_among(conn, [x.message.to for x in claimed if not x.requested_by_client])
            over = [x for x in claimed if x.attempts > self.max_attempts]  # only via repeatedly expired leases
            drop = {x.message.id for x in over}
            if stopped:
                sup = [x.message.id for x in claimed if x.message.to in stopped and not x.requested_by_client]
                lease.finish(conn, OUTBOX_LEASE, sup, token, dict(
                    status="suppressed", last_error="recipient opted out", final_at=now, updated_at=now))
                self.stats["suppressed"] += len(sup)
                drop.update(sup)
            if over:
                lease.finish(conn, OUTBOX_LEASE, [x.message.id for x in over], token, dict(
                    status="failed", final_at=now, updated_at=now,
                    last_error=sa.literal(f"gave up after {self.max_attempts} attempts; last: ")
                    + sa.func.coalesce(c.last_error, "")))
                self.stats["failed"] += len(over)
        return [x for x in claimed if x.message.id not in drop]

    # -- 2. send

    def _send(self, claimed: Sequence[Claimed], deadline: float) -> list[SendResult]:
        msgs = [x.message for x in claimed]
        try:
            if self._pass_deadline:
                results = list(self.sender.send(msgs, deadline=deadline))
            else:
                results = list(self.sender.send(msgs))
        except Exception as exc:  # a broken sender must not kill the worker
            log.exception("sender %s raised; batch of %d will be retried", getattr(self.sender, "name", "?"), len(msgs))
            return [SendResult.retry(f"sender error: {type(exc).__name__}: {exc}")] * len(msgs)
        if len(results) != len(msgs):
            log.error("sender returned %d results for %d messages", len(results), len(msgs))
            results = (results + [SendResult.retry("no result from sender")] * len(msgs))[: len(msgs)]
        return results

    # -- 3. record

    @contextlib.contextmanager
    def _tx(self, conn: Connection | None):
        """A transaction on ``conn`` (the dispatch's own connection), or on a fresh one from the pool."""
        if conn is None:
            with self.engine.begin() as own:
                yield own
        else:
            with conn.begin():
                yield conn

    def _outcome(self, x: Claimed, r: SendResult, now: dt.datetime) -> dict:
        """The row values one result leads to."""
        status: str  # a send result's status, or the row's ("queued" again for a retry)
        status, error, nxt, final_at, sent_at = r.status, r.error, now, None, None
        if status == "sent":
            # None, or how it got there (failover) and/or the takeover note: it may have gone twice
            sent_at, error = now, "; ".join(e for e in (r.error, x.taken_over) if e) or None
        elif status == "retry":
            if x.attempts >= self.max_attempts:
                status, final_at = "failed", now
                error = f"gave up after {x.attempts} attempts; last: {r.error}"
            else:
                status = "queued"
                nxt = now + dt.timedelta(seconds=backoff_seconds(x.attempts, self.retry_base, self.retry_max))
        else:
            status, final_at = "failed", now
        if status != "sent" and x.taken_over:
            error = f"{error}; {x.taken_over}"
        return dict(id=x.message.id, status=status, provider_id=r.provider_id, cost=r.cost, parts=r.parts,
                    status_code=r.status_code, provider_status=r.provider_status,
                    last_error=(error or None) and str(error)[:2000], next_attempt_at=nxt, sent_at=sent_at,
                    final_at=final_at, gateway=r.gateway, country=r.country, cost_amount=r.cost_amount,
                    cost_currency=r.cost_currency)

    def record(self, claimed: Sequence[Claimed], results: Sequence[SendResult], conn: Connection | None = None) -> int:
        """Write results for rows still leased under their token; returns how many were written.

        One :func:`convo.store.lease.finish_rows` (PostgreSQL: one guarded statement, one round trip).
        Delivery reports that arrived before their message's provider id was recorded are applied after
        (in their own transaction on an autocommit ``conn``).
        """
        if not claimed:
            return 0
        now = self.clock()
        token = claimed[0].token
        gateway = getattr(self.sender, "name", None)
        rows = [self._outcome(x, r, now) for x, r in zip(claimed, results)]
        opted_out = {x.message.id: x.message.to for x, r in zip(claimed, results) if r.opted_out}
        autocommit = conn is not None and conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
        with self._tx(conn) as conn:
            got = lease.finish_rows(conn, OUTBOX_LEASE, token, rows, values=_recorded_values, returning=(_EARLY,),
                                    params={"recorded_at": now, "sender_gateway": gateway})
            held = {g.id for g in got}
            early = any(g.early for g in got)
            pending: dict[str, int] = {}
            opted: list[str] = []
            for v in rows:
                if v["id"] not in held:
                    self.stats["lost_lease"] += 1
                    log.warning("lease on outbox %s lost before recording %s (another worker took it over)",
                                v["id"], v["status"])
                    continue
                self.stats["sent" if v["status"] == "sent" else "retry" if v["status"] == "queued" else "failed"] += 1
                metrics.OUTBOX_RESULTS.labels(v["gateway"] or gateway or "unknown", v["status"]).inc()
                if v["status"] == "sent" and v["provider_id"]:
                    pending[v["provider_id"]] = v["id"]
                if v["id"] in opted_out:  # the provider says the recipient opted out (e.g. Twilio 21610)
                    opted.append(opted_out[v["id"]])
            if opted:
                _mark_opted_out(conn, opted, rows[0]["gateway"] or gateway or "gateway")
            if pending and early and not autocommit:
                apply_pending_reports(conn, pending)
        if pending and early and autocommit:
            with self.engine.begin() as tx:
                apply_pending_reports(tx, pending)
        return len(held)

    # -- loop

    def release(self, claimed: Sequence[Claimed], conn: Connection | None = None) -> int:
        """Put rows we hold but did not send back to ``queued``, due now, this attempt not counted."""
        if not claimed:
            return 0
        now = self.clock()
        with self._tx(conn) as conn:
            n = len(lease.release(conn, OUTBOX_LEASE, [x.message.id for x in claimed], claimed[0].token, "queued",
                                  {"next_attempt_at": now, "updated_at": now}))
        self.stats["released"] += n
        return n

    def units(self, claimed: Sequence[Claimed]) -> list[list[Claimed]]:
        """Split a claimed batch into send units (one request each; see the module doc)."""
        cap = getattr(self.sender, "max_recipients", 1)
        cap = cap if isinstance(cap, int) and cap > 1 else 1
        out: list[list[Claimed]] = []
        open_: dict[tuple, list[Claimed]] = {}
        for x in claimed:
            m = x.message
            if cap == 1 or m.link_id:
                out.append([x])
                continue
            key = (m.body, m.sender_id)
            g = open_.get(key)
            if g is None or len(g) >= cap:
                g = open_[key] = []
                out.append(g)
            g.append(x)
        return out

    def _record_retrying(self, claimed: Sequence[Claimed], results: Sequence[SendResult], deadline: float,
                         conn: Connection) -> None:
        # The gateway has these now: try hard to record that (a lost result means a resend after the lease).
        for attempt in range(5):
            try:
                self.record(claimed, results, conn)
                return
            except sa.exc.OperationalError:
                if attempt == 4 or time.monotonic() > deadline:
                    raise
                log.warning("recording results failed (database); retrying", exc_info=True)
                time.sleep(0.2 * 2 ** attempt)

    def dispatch_once(self) -> int:
        """Claim one batch, send it unit by unit, record each unit's results as they come back.

        Returns the number of rows claimed. At most ``concurrency`` units are
        ever sent and not yet recorded (see the module doc).
        """
        claimed = self.claim()
        if not claimed:
            return 0
        margin = min(LEASE_MARGIN_SECONDS, self.lease.total_seconds() * 0.2)
        deadline = time.monotonic() + self.lease.total_seconds() - margin
        units = self.units(claimed)
        done: queue.Queue = queue.Queue()
        broken = threading.Event()  # results cannot be recorded: start no more sends

        def send_unit(unit: list[Claimed]) -> None:
            if self._stop.is_set() or broken.is_set() or time.monotonic() + self.send_timeout > deadline:
                done.put((unit, None, None))  # not started: goes back to the queue
                return
            recorded = threading.Event()
            results = None
            try:
                results = self._send(unit, deadline)  # never raises for a sender's error
            finally:  # whatever happens, never leave the dispatching thread waiting
                done.put((unit, results, recorded))
            recorded.wait()

        error: Exception | None = None
        # One connection records the whole batch (no pool checkout and ping per round). On PostgreSQL in
        # autocommit: a round of results is one atomic statement, so one round trip.
        with self.engine.connect() as conn, ThreadPoolExecutor(
            min(self.concurrency, len(units)), thread_name_prefix="outbox-send"
        ) as pool:
            if self.is_pg:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            for unit in units:
                pool.submit(send_unit, unit)
            left = len(units)
            while left:
                items = [done.get()]
                while True:
                    try:
                        items.append(done.get_nowait())
                    except queue.Empty:
                        break
                left -= len(items)
                sent = [(x, r) for unit, res, _ in items if res is not None for x, r in zip(unit, res)]
                unsent = [x for unit, res, _ in items if res is None for x in unit]
                try:
                    if error is None:
                        if sent:
                            self._record_retrying([x for x, _ in sent], [r for _, r in sent], deadline, conn)
                        if unsent:
                            self.release(unsent, conn)
                except Exception as exc:  # keep draining so no sending thread waits forever; rows stay leased
                    error = exc
                    broken.set()
                finally:
                    for _, _, recorded in items:
                        if recorded is not None:
                            recorded.set()
        if error is not None:
            raise error
        return len(claimed)

    def sweep(self) -> int:
        """Attach delivery reports that arrived before their provider id was committed (see outbox)."""
        with self.engine.begin() as conn:
            return attach_unmatched_reports(conn)

    def tick(self) -> int:
        """One dispatch round, and every ``sweep_seconds`` the :meth:`sweep` first. Returns rows claimed."""
        if time.monotonic() - self._last_sweep >= self.sweep_seconds:
            self._last_sweep = time.monotonic()
            try:
                self.sweep()
            except sa.exc.SQLAlchemyError:
                log.exception("delivery report sweep failed")
        return self.dispatch_once()

    def run(self, *, once: bool = False, stop_event: threading.Event | None = None) -> int:
        """Dispatch until ``stop_event`` is set (or, with ``once``, until nothing is due, then :meth:`sweep`).
        Returns rows claimed. (``convo worker`` runs :meth:`tick` in its loop: :class:`OutboxTask`.)"""
        stop = stop_event or threading.Event()
        self._stop = stop
        total = 0
        while not stop.is_set():
            try:
                n = self.tick()
            except sa.exc.OperationalError:
                if once:
                    raise
                log.exception("database error; retrying in %.1fs", max(self.poll_seconds, 1.0))
                stop.wait(max(self.poll_seconds, 1.0))
                continue
            total += n
            if n == 0:
                if once:
                    self.sweep()
                    break
                stop.wait(self.poll_seconds)
        return total


def outbox_worker(settings, engine: Engine, sender: SmsSender, **overrides) -> OutboxWorker:
    """An :class:`OutboxWorker` configured from ``settings`` (``CONVO_WORKER_*``, ``CONVO_OUTBOX_*``).

    ``overrides`` replace settings (``batch``, ``lease_seconds``, ``max_attempts``...). Raises
    :class:`LeaseTooShort` when the lease does not cover a send.
    """
    kw: dict[str, Any] = dict(
        batch=getattr(settings, "worker_batch", 100),
        lease_seconds=getattr(settings, "worker_lease_seconds", 60.0),
        max_attempts=getattr(settings, "outbox_max_attempts", 8),
        retry_base_seconds=getattr(settings, "outbox_retry_base_seconds", 30.0),
        retry_max_seconds=getattr(settings, "outbox_retry_max_seconds", 3600.0),
        poll_seconds=getattr(settings, "worker_poll_seconds", 1.0),
        concurrency=getattr(settings, "worker_concurrency", 8),
    )
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return OutboxWorker(engine, sender, **kw)


class OutboxTask:
    """The outbox as a task of the worker loop (:mod:`convo.jobs.worker`): sends what is due.

    Logs ``worker <name>: gateway=…`` when it starts and ``worker <name> stopped: <stats>`` at the end
    (operators and tests read these lines). Closes the sender when done.
    """

    name = "outbox"

    def __init__(self, worker: OutboxWorker):
        self.worker = worker
        self.idle_seconds = worker.poll_seconds

    def start(self, stop: threading.Event) -> None:
        w = self.worker
        w._stop = stop
        log.info("worker %s: gateway=%s batch=%d lease=%ss db=%s", w.name, getattr(w.sender, "name", "?"), w.batch,
                 w.lease.total_seconds(), w.engine.url.render_as_string(hide_password=True))

    def tick(self) -> int:
        return self.worker.tick()

    def drain(self, stop: threading.Event) -> int:
        """Send until nothing is due (then sweep once); rows claimed."""
        return self.worker.run(once=True, stop_event=stop)

    def close(self) -> None:
        log.info("worker %s stopped: %s", self.worker.name, self.worker.stats)
        close = getattr(self.worker.sender, "close", None)
        if callable(close):
            close()
