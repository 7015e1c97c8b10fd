"""The outbox: every outbound SMS is a row here before anything is sent.

Public functions (each takes a SQLAlchemy ``Session`` *or* an ``Engine``; with a
session the caller owns the transaction and commits, with an engine the
function commits its own):

* :func:`enqueue` - write one message (idempotent on ``idempotency_key``);
* :func:`apply_delivery_report` - move a message forward from a gateway's report;
* :func:`set_opt_out` / :func:`is_opted_out` / :func:`apply_opt_out` - STOP/START.

Statuses and their order (a delivery report only ever moves a message *up*;
a final status never changes)::

    queued 0 → sending 1 → sent 2 → submitted 3 → buffered 4 → delivered | failed | rejected (final)
    suppressed (final, set at enqueue or by the worker for opted-out numbers)

Of two different final reports the first one applied wins. The worker moves
``sending`` back to ``queued`` on a retryable error: that is the worker's own
lease-guarded transition, not a delivery report.

Example::

    msg = enqueue(engine, idempotency_key="sms-in:ATXid_1", to="0712345678",
                  body="Your balance is KES 1,200", requested_by_client=True,
                  link_id="SampleLinkId123")
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Iterable, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from convo.store.db import DeliveryReport, OptOut, OutboxMessage, utcnow
from gateways.base import DeliveryUpdate, OptOutUpdate

log = logging.getLogger(__name__)

__all__ = [
    "FINAL",
    "RANK",
    "DeliveryResult",
    "apply_delivery_report",
    "apply_opt_out",
    "apply_pending_reports",
    "attach_unmatched_reports",
    "enqueue",
    "is_opted_out",
    "opted_out_among",
    "set_opt_out",
]

RANK = {
    "queued": 0,
    "sending": 1,
    "sent": 2,
    "submitted": 3,
    "buffered": 4,
    "delivered": 10,
    "failed": 10,
    "rejected": 10,
    "suppressed": 10,
}
FINAL = frozenset(s for s, r in RANK.items() if r == 10)
MAX_KEY = 200

# declarative models' ``__table__`` is typed as a FromClause; these are Tables (update/insert)
outbox = cast(sa.Table, OutboxMessage.__table__)
reports = cast(sa.Table, DeliveryReport.__table__)
optouts = cast(sa.Table, OptOut.__table__)


class _Tx:
    """Use a given Session/Connection as is, or open (and commit) one from an Engine."""

    def __init__(self, db):
        self.db = db
        self.own = isinstance(db, Engine)

    def __enter__(self) -> Session | Connection:
        if self.own:
            self.session = Session(self.db, expire_on_commit=False)
            return self.session
        if isinstance(self.db, (Session, Connection)):
            return self.db
        raise TypeError(f"expected a SQLAlchemy Session, Connection or Engine, not {type(self.db).__name__}")

    def __exit__(self, exc_type, *_):
        if self.own:
            try:
                if exc_type is None:
                    self.session.commit()
                else:
                    self.session.rollback()
            finally:
                self.session.close()


def insert_for(conn):
    name = conn.get_bind().dialect.name if isinstance(conn, Session) else conn.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only PostgreSQL and SQLite are supported
        raise RuntimeError(f"unsupported database {name!r}")
    return insert


def _normalize_phone(raw: str, region: str) -> str:
    from convo.text.phone import normalize

    return normalize(raw, region)


# --------------------------------------------------------------------------- enqueue


def enqueue(
    db,
    *,
    idempotency_key: str,
    to: str,
    body: str,
    kind: str = "reply",
    gateway: str | None = None,
    link_id: str | None = None,
    sender_id: str | None = None,
    requested_by_client: bool = False,
    region: str = "KE",
    not_before: dt.datetime | None = None,
) -> OutboxMessage:
    """Write one outbound SMS (status ``queued``) and return its row.

    * ``idempotency_key`` is unique: the same key again returns the existing
      row and writes nothing (safe between threads and processes: the unique
      constraint with ``ON CONFLICT DO NOTHING`` decides). Use a key that names
      the cause, e.g. ``"reply:at:<inbound id>"``, ``"reminder:<loan>:<date>"``.
    * ``to`` is normalized to E.164 (``region`` for national numbers); raises
      ``convo.text.phone.InvalidPhone`` (a ``ValueError``).
    * ``body`` is normalized to GSM-7 where a close equivalent exists (curly
      quotes, dashes) and its encoding, length and segment count are recorded.
    * An opted-out recipient gets status ``suppressed`` (never sent) unless
      ``requested_by_client`` (a reply to the client's own BAL, STOP...).
    * ``link_id`` makes it a premium reply (Africa's Talking); ``gateway``
      pins a gateway by name, stored as ``via`` (a reply leaves through the
      gateway the client wrote to; None = routed by country, cheapest first,
      :mod:`convo.notify.routing`); ``not_before``
      delays the first attempt (quiet hours).
    """
    from convo.text.sms import sms_info, to_gsm

    if not idempotency_key or not isinstance(idempotency_key, str):
        raise ValueError("idempotency_key is required")
    if len(idempotency_key) > MAX_KEY:
        raise ValueError(f"idempotency_key longer than {MAX_KEY} characters")
    if not body or not body.strip():
        raise ValueError("an SMS body cannot be empty")
    recipient = _normalize_phone(to, region)
    text = to_gsm(body)
    info = sms_info(text)
    now = utcnow()

    with _Tx(db) as s:
        status = "queued"
        if not requested_by_client and _opted_out(s, recipient):
            status = "suppressed"
        values = dict(
            idempotency_key=idempotency_key,
            kind=kind,
            recipient=recipient,
            body=text,
            encoding=info.encoding,
            chars=info.chars,
            segments=info.segments,
            via=gateway,
            sender_id=sender_id,
            link_id=link_id,
            requested_by_client=bool(requested_by_client),
            status=status,
            attempts=0,
            next_attempt_at=not_before or now,
            created_at=now,
            updated_at=now,
            final_at=now if status == "suppressed" else None,
            last_error="recipient opted out" if status == "suppressed" else None,
        )
        insert = insert_for(s)
        s.execute(insert(outbox).values(**values).on_conflict_do_nothing(index_elements=["idempotency_key"]))
        if isinstance(s, Session):
            return s.scalars(sa.select(OutboxMessage).where(OutboxMessage.idempotency_key == idempotency_key)).one()
        row = s.execute(sa.select(outbox).where(outbox.c.idempotency_key == idempotency_key)).one()
        return OutboxMessage(**row._asdict())


# --------------------------------------------------------------------------- opt-out


def _opted_out(conn, phone: str) -> bool:
    return bool(conn.execute(sa.select(optouts.c.opted_out).where(optouts.c.phone == phone)).scalar())


def opted_out_among(conn, phones: Iterable[str]) -> set[str]:
    """Which of ``phones`` (E.164) are opted out - one query, for the worker."""
    phones = list(set(phones))
    if not phones:
        return set()
    q = sa.select(optouts.c.phone).where(optouts.c.phone.in_(phones), optouts.c.opted_out.is_(True))
    return set(conn.execute(q).scalars())


def is_opted_out(db, phone: str, *, region: str = "KE") -> bool:
    """True when ``phone`` has opted out (STOP, gateway opt-out) and not back in."""
    with _Tx(db) as s:
        return _opted_out(s, _normalize_phone(phone, region))


def set_opt_out(db, phone: str, opted_out: bool = True, *, source: str = "sms", region: str = "KE") -> OptOut:
    """Record STOP (``opted_out=True``) or START (``False``) for ``phone``; last write wins.

    ``source`` says who asked: ``sms`` (keyword), ``africastalking`` (gateway
    callback), ``staff``... Messages already queued for the number are
    suppressed by the worker when their turn comes (unless client-requested).
    """
    e164 = _normalize_phone(phone, region)
    now = utcnow()
    with _Tx(db) as s:
        insert = insert_for(s)
        stmt = insert(optouts).values(phone=e164, opted_out=bool(opted_out), source=source, updated_at=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=["phone"], set_=dict(opted_out=bool(opted_out), source=source, updated_at=now)
        )
        s.execute(stmt)
        return OptOut(phone=e164, opted_out=bool(opted_out), source=source, updated_at=now)


def apply_opt_out(db, update: OptOutUpdate) -> OptOut:
    """Apply a gateway's opt-out callback (e.g. :func:`gateways.africastalking.parse_optout`)."""
    return set_opt_out(db, update.phone, update.opted_out, source=update.gateway)


# --------------------------------------------------------------------------- delivery reports


@dataclass(frozen=True)
class DeliveryResult:
    """What :func:`apply_delivery_report` did.

    ``outcome``: ``applied`` (status moved), ``ignored`` (duplicate, stale or
    after a final status), ``unknown`` (no message has this provider id yet;
    the report is kept and applied if the id shows up later).
    """

    outcome: str
    message_id: int | None
    status: str | None


def _advance(conn, message_id: int, update: DeliveryUpdate, now: dt.datetime) -> bool:
    """Move message ``message_id`` to ``update.status`` if that is forward; one atomic UPDATE."""
    new = update.status
    if new not in RANK or new in ("queued", "sending", "suppressed"):
        return False
    lower = [s for s, r in RANK.items() if r < RANK[new]]
    values = dict(status=new, provider_status=update.provider_status, updated_at=now)
    if new in FINAL:
        values["final_at"] = now
        if new != "delivered":
            values["last_error"] = update.failure_reason or update.provider_status
    res = conn.execute(
        sa.update(outbox).where(outbox.c.id == message_id, outbox.c.status.in_(lower)).values(**values)
    )
    return res.rowcount == 1


def _update_from_row(r) -> DeliveryUpdate:
    return DeliveryUpdate(
        gateway=r.gateway, provider_id=r.provider_id, provider_status=r.provider_status, status=r.status,
        phone=r.phone, network_code=r.network_code, failure_reason=r.failure_reason, retry_count=r.retry_count,
    )


def apply_delivery_report(db, update: DeliveryUpdate) -> DeliveryResult:
    """Record a delivery report and move its message forward (never back, never off a final status).

    Safe to call with duplicates and out-of-order reports, from several web
    processes at once: the move is one conditional UPDATE. A report whose id
    matches no message is stored with ``outbox_id`` NULL and returns
    ``unknown`` - not an error (the worker may not have recorded the id yet;
    :func:`apply_pending_reports` applies it when it does).
    """
    if not isinstance(update, DeliveryUpdate):
        raise TypeError("apply_delivery_report takes a gateways.base.DeliveryUpdate (parse the callback first)")
    now = utcnow()
    with _Tx(db) as s:
        # Insert first: on SQLite this takes the write lock, so the lookup below
        # sees any provider id the worker committed. On PostgreSQL a report and
        # the worker's commit can still pass each other; the worker's periodic
        # attach_unmatched_reports() picks such a report up.
        rid = s.execute(
            sa.insert(reports).values(
                gateway=update.gateway, provider_id=update.provider_id, provider_status=update.provider_status,
                status=update.status, phone=update.phone, network_code=update.network_code,
                failure_reason=update.failure_reason, retry_count=update.retry_count, outbox_id=None,
                raw=dict(update.raw), received_at=now,
            ).returning(reports.c.id)
        ).scalar_one()
        msg = s.execute(
            sa.select(outbox.c.id).where(outbox.c.provider_id == update.provider_id).order_by(outbox.c.id).limit(1)
        ).first()
        if msg is None:
            return DeliveryResult("unknown", None, None)
        mid = msg.id
        s.execute(sa.update(reports).where(reports.c.id == rid).values(outbox_id=mid))
        moved = _advance(s, mid, update, now)
        status = s.execute(sa.select(outbox.c.status).where(outbox.c.id == mid)).scalar()
        return DeliveryResult("applied" if moved else "ignored", mid, status)


def apply_pending_reports(conn, ids_by_provider: dict[str, int]) -> int:
    """Apply stored reports that arrived before their provider id was recorded (called by the worker).

    ``ids_by_provider`` maps provider id → outbox id for messages just marked
    sent. Returns how many reports were attached.
    """
    if not ids_by_provider:
        return 0
    rows = conn.execute(
        sa.select(reports)
        .where(reports.c.provider_id.in_(list(ids_by_provider)), reports.c.outbox_id.is_(None))
        .order_by(reports.c.id)
    ).all()
    now = utcnow()
    for r in rows:
        mid = ids_by_provider[r.provider_id]
        res = conn.execute(
            sa.update(reports).where(reports.c.id == r.id, reports.c.outbox_id.is_(None)).values(outbox_id=mid)
        )
        if res.rowcount == 1:
            _advance(conn, mid, _update_from_row(r), now)
    return len(rows)


def attach_unmatched_reports(conn, *, max_age: dt.timedelta = dt.timedelta(days=2)) -> int:
    """Attach stored reports with no message to messages that now have their provider id; apply them.

    Run periodically by the worker: it closes the window where a report and
    the worker's own commit of the provider id pass each other. Reports older
    than ``max_age`` with no message are left alone (genuinely unknown ids).
    Returns how many reports were attached.
    """
    since = utcnow() - max_age
    found = conn.execute(
        sa.select(reports.c.id, outbox.c.id.label("mid"))
        .join(outbox, outbox.c.provider_id == reports.c.provider_id)
        .where(reports.c.outbox_id.is_(None), reports.c.received_at >= since)
        .order_by(reports.c.id)
    ).all()
    if not found:
        return 0
    rows = conn.execute(sa.select(reports).where(reports.c.id.in_([f.id for f in found])).order_by(reports.c.id)).all()
    mids = {f.id: f.mid for f in found}
    now = utcnow()
    n = 0
    for r in rows:
        res = conn.execute(
            sa.update(reports).where(reports.c.id == r.id, reports.c.outbox_id.is_(None)).values(outbox_id=mids[r.id])
        )
        if res.rowcount == 1:
            _advance(conn, mids[r.id], _update_from_row(r), now)
            n += 1
    return n


class OutboxCollector:
    """Backlog per gateway, one cheap query at scrape time (``ix_outbox_due``: status, next_attempt_at):
    messages waiting (queued or being sent), those due now, and the age of the oldest waiting one."""

    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        from convo.metrics import OUTBOX_DUE, OUTBOX_OLDEST_AGE, OUTBOX_QUEUED, OUTBOX_SCRAPE_ERROR

        O = OutboxMessage  # noqa: N806
        queued = GaugeMetricFamily(OUTBOX_QUEUED, "Outbox messages waiting (queued or sending), per gateway",
                                   labels=["gateway"])
        due = GaugeMetricFamily(OUTBOX_DUE, "Outbox messages due now and not yet sent, per gateway",
                                labels=["gateway"])
        oldest = GaugeMetricFamily(OUTBOX_OLDEST_AGE, "Age of the oldest waiting outbox message, per gateway",
                                   labels=["gateway"])
        error = GaugeMetricFamily(OUTBOX_SCRAPE_ERROR, "1 when the outbox could not be read at this scrape")
        now = utcnow()
        try:
            q = (sa.select(O.gateway, sa.func.count(),
                           sa.func.sum(sa.case((O.next_attempt_at <= now, 1), else_=0)),
                           sa.func.min(O.created_at))
                 .where(O.status.in_(("queued", "sending"))).group_by(O.gateway))
            with self.engine.connect() as conn:
                rows = conn.execute(q).all()
        except Exception as e:  # noqa: BLE001 - /metrics answers even with the database down
            log.warning("outbox metrics unavailable: %s", str(e).splitlines()[0][:200])
            error.add_metric([], 1)
            return [error]
        for gateway, count, due_now, first in rows:
            label = gateway or "unrouted"
            queued.add_metric([label], count)
            due.add_metric([label], due_now or 0)
            if first is not None:
                oldest.add_metric([label], max(0.0, (now - first).total_seconds()))
        error.add_metric([], 0)
        return [queued, due, oldest, error]
