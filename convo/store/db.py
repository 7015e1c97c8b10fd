"""Database: engine/session factory, the declarative ``Base`` and the outbox models.

One SQLAlchemy URL (``CONVO_DATABASE_URL``) names the database: a SQLite file
by default (demo, one worker), PostgreSQL in production (many workers). The
schema is owned by Alembic (``convo/store/migrations``); :func:`upgrade` applies it
programmatically, no ``alembic.ini`` needed.

Tables: ``outbox`` (:class:`OutboxMessage`), ``delivery_reports``
(:class:`DeliveryReport`), ``opt_outs`` (:class:`OptOut`) (migration 0001);
``subscribers`` (:class:`Subscriber`) and ``audit_log`` (:class:`AuditEvent`)
(migration 0002); ``subscriber_pins`` (:class:`SubscriberPin`) (migration 0005).

All timestamps are timezone-aware UTC in Python; on SQLite they are stored as
naive UTC text (see :class:`UTCDateTime`) so comparisons stay correct.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import functools
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

__all__ = [
    "AuditEvent",
    "Base",
    "DeliveryReport",
    "OptOut",
    "OutboxMessage",
    "Subscriber",
    "SubscriberPin",
    "UTCDateTime",
    "SchemaBehind",
    "check_schema",
    "expected_heads",
    "make_engine",
    "make_session_factory",
    "schema_revision",
    "upgrade",
    "utcnow",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(sa.types.TypeDecorator):
    """Aware UTC datetimes in Python; ``timestamptz`` on PostgreSQL, naive UTC on SQLite."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column; use an aware UTC datetime")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


# BIGINT ids on PostgreSQL; SQLite needs INTEGER for its rowid autoincrement.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class OutboxMessage(Base):
    """One outbound SMS, written before anything is sent.

    Lifecycle (``status``): ``queued`` → ``sending`` (leased by a worker) →
    ``sent`` (gateway accepted) → ``submitted``/``buffered`` (operator) →
    final ``delivered`` | ``failed`` | ``rejected``; or final ``suppressed``
    (opted-out recipient). A retry puts the row back to ``queued`` with a later
    ``next_attempt_at``. See :mod:`convo.notify.outbox` for the rules.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    kind: Mapped[str] = mapped_column(sa.String(32), nullable=False, default="reply")
    recipient: Mapped[str] = mapped_column(sa.String(32), nullable=False, index=True)
    body: Mapped[str] = mapped_column(sa.Text, nullable=False)
    encoding: Mapped[str] = mapped_column(sa.String(8), nullable=False)
    chars: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    segments: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    gateway: Mapped[str | None] = mapped_column(sa.String(32))
    sender_id: Mapped[str | None] = mapped_column(sa.String(32))
    link_id: Mapped[str | None] = mapped_column(sa.String(100))
    requested_by_client: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=False)
    status: Mapped[str] = mapped_column(sa.String(16), nullable=False, default="queued")
    attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    lease_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    leased_by: Mapped[str | None] = mapped_column(sa.String(100))
    last_attempt_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    provider_id: Mapped[str | None] = mapped_column(sa.String(100), index=True)
    provider_status: Mapped[str | None] = mapped_column(sa.String(40))
    status_code: Mapped[int | None] = mapped_column(sa.Integer)
    cost: Mapped[str | None] = mapped_column(sa.String(32))
    parts: Mapped[int | None] = mapped_column(sa.Integer)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    final_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    #: the gateway a reply must leave through (the one the client's message came in on); NULL: routed
    via: Mapped[str | None] = mapped_column(sa.String(32))
    #: recipient's region code as routed, and the route's price (per segment x segments) in its currency
    country: Mapped[str | None] = mapped_column(sa.String(2))
    cost_amount: Mapped[Decimal | None] = mapped_column(sa.Numeric(18, 6))
    cost_currency: Mapped[str | None] = mapped_column(sa.String(3))

    __table_args__ = (
        sa.UniqueConstraint("idempotency_key", name="uq_outbox_idempotency_key"),
        sa.Index("ix_outbox_due", "status", "next_attempt_at"),
        sa.Index("ix_outbox_sent_at", "sent_at"),
    )

    def __repr__(self) -> str:
        return f"<OutboxMessage {self.id} {self.status} to={self.recipient} key={self.idempotency_key!r}>"


class DeliveryReport(Base):
    """Every delivery report as received, matched to a message or not (``outbox_id`` NULL).

    An unmatched report (unknown id, or one that raced ahead of the worker
    recording the provider id) is applied when the worker records that id.
    """

    __tablename__ = "delivery_reports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    gateway: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    provider_id: Mapped[str] = mapped_column(sa.String(100), nullable=False, index=True)
    provider_status: Mapped[str] = mapped_column(sa.String(40), nullable=False)
    status: Mapped[str | None] = mapped_column(sa.String(16))
    phone: Mapped[str | None] = mapped_column(sa.String(32))
    network_code: Mapped[str | None] = mapped_column(sa.String(16))
    failure_reason: Mapped[str | None] = mapped_column(sa.String(100))
    retry_count: Mapped[int | None] = mapped_column(sa.Integer)
    outbox_id: Mapped[int | None] = mapped_column(BigId, sa.ForeignKey("outbox.id", ondelete="SET NULL"), index=True)
    raw: Mapped[dict] = mapped_column(sa.JSON, nullable=False, default=dict)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class OptOut(Base):
    """Opt-out state per phone (E.164). A row with ``opted_out=False`` records an opt back in."""

    __tablename__ = "opt_outs"

    phone: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    opted_out: Mapped[bool] = mapped_column(sa.Boolean, nullable=False)
    source: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Subscriber(Base):
    """A phone number that uses the service: its language and its PIN lock.

    The lock is per phone, across every client registered to it and every
    channel: ``locked_until`` is set when the wrong PINs counted on its
    :class:`SubscriberPin` rows add up to ``CONVO_PIN_MAX_ATTEMPTS``.
    """

    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    phone: Mapped[str] = mapped_column(sa.String(32), nullable=False, unique=True)
    language: Mapped[str | None] = mapped_column(sa.String(8))
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class SubscriberPin(Base):
    """The PIN of one (phone, Mifos X client) pair: a PIN opens only the client it was set for.

    ``pin_hash`` is argon2id over HMAC-SHA256(pepper, PIN) (:mod:`convo.security`);
    ``new_pin_hash`` holds, for a few minutes, a new PIN entered once and not yet
    repeated. ``failed_attempts`` counts wrong PINs for this client since its last
    right one; the phone is locked (:class:`Subscriber`) when its pairs' counts add
    up to the limit, so a right PIN for one client never earns more guesses at another.
    """

    __tablename__ = "subscriber_pins"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    phone: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    client_id: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    pin_hash: Mapped[str | None] = mapped_column(sa.String(200))
    new_pin_hash: Mapped[str | None] = mapped_column(sa.String(200))
    new_pin_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    failed_attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    pin_set_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)

    __table_args__ = (sa.UniqueConstraint("phone", "client_id", name="uq_subscriber_pins_phone_client"),)


class AuditEvent(Base):
    """Who or what asked for which data about which client, when and over which channel; PIN events.

    ``actor``: ``client`` (the caller), ``staff:<user>`` or ``system``. ``action``:
    ``data.<action>`` (an answer from Mifos X), ``pin.set``, ``pin.changed``,
    ``pin.failed``, ``pin.locked``, ``pin.reset``, ``pin.unlocked``, ``pin.weak``,
    ``simswap.hold``, ``staff.<call>``. ``detail`` never holds a PIN or a hash.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    actor: Mapped[str] = mapped_column(sa.String(120), nullable=False)
    action: Mapped[str] = mapped_column(sa.String(60), nullable=False)
    channel: Mapped[str | None] = mapped_column(sa.String(16))
    phone: Mapped[str | None] = mapped_column(sa.String(32), index=True)
    client_id: Mapped[int | None] = mapped_column(sa.BigInteger, index=True)
    outcome: Mapped[str | None] = mapped_column(sa.String(40))
    detail: Mapped[dict] = mapped_column(sa.JSON, nullable=False, default=dict)

    __table_args__ = (sa.Index("ix_audit_log_at", "at"),)


def _sqlite_pragmas(dbapi_conn, _record):
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str, **kw) -> Engine:
    """Engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys on.

    ``hide_parameters``: a database error names the statement, never its values (phone numbers,
    message bodies, PIN hashes), in the exception text and so in every log line that shows it.
    """
    kw.setdefault("hide_parameters", True)
    u = sa.make_url(url)
    if u.get_backend_name() == "sqlite":
        kw.setdefault("connect_args", {}).setdefault("check_same_thread", False)
        if u.database in (None, "", ":memory:"):
            kw.setdefault("poolclass", sa.pool.StaticPool)
        engine = sa.create_engine(url, **kw)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kw.setdefault("pool_pre_ping", True)
    if u.get_backend_name() == "postgresql":         # an unreachable server fails a hop in seconds, not minutes
        kw.setdefault("connect_args", {}).setdefault("connect_timeout", 2)
    return sa.create_engine(url, **kw)


def make_session_factory(engine_or_url: Engine | str) -> sessionmaker[Session]:
    engine = make_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str | None = None, connection=None):
    """An Alembic ``Config`` pointing at ``convo/store/migrations`` (no ini file on disk)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


#: PostgreSQL advisory lock key held while migrating ("convo" in ASCII)
MIGRATION_LOCK_KEY = 0x636F6E766F


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine):
    """An exclusive ``flock`` on ``<database>.migrate-lock`` (SQLite lives on one host)."""
    import fcntl

    db = engine.url.database
    if not db or db == ":memory:":
        yield
        return
    with open(f"{db}.migrate-lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def upgrade(url_or_engine: str | Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (``convo db upgrade``, the demo at start).

    Safe when several processes run it at once (replicas starting together): they take turns, on
    PostgreSQL under a transaction-level advisory lock, on SQLite under a file lock next to the
    database; whoever comes second finds the schema at ``revision`` and does nothing.
    """
    from alembic import command

    engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
    try:
        lock = _sqlite_file_lock(engine) if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        with lock, engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            command.upgrade(alembic_config(connection=conn), revision)
    finally:
        if isinstance(url_or_engine, str):
            engine.dispose()


class SchemaBehind(RuntimeError):
    """The database is not at the migrations' head: ``convo db upgrade`` has not been run."""


@functools.lru_cache(maxsize=1)
def expected_heads() -> tuple[str, ...]:
    """The head revision(s) of the migration scripts shipped with this code (read once per process)."""
    from alembic.script import ScriptDirectory

    return tuple(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))


def schema_revision(engine: Engine) -> tuple[str, ...]:
    """The revision(s) the database is at (``()``: never migrated). Raises on a database that cannot be reached."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return ()
        return tuple(sorted(r[0] for r in conn.execute(sa.text("SELECT version_num FROM alembic_version"))))


def check_schema(engine: Engine) -> tuple[str, ...]:
    """The database's revision when it is the code's; else :class:`SchemaBehind` saying what to run."""
    current, head = schema_revision(engine), expected_heads()
    if current != head:
        where = engine.url.render_as_string(hide_password=True).split("@")[-1]
        raise SchemaBehind(f"the database ({where}) is at schema revision {', '.join(current) or 'none'}, "
                           f"this code needs {', '.join(head)}: run `convo db upgrade`")
    return current


# Tables defined in their own modules register on Base here, so Base.metadata is the whole
# schema (migrations are compared against it) whoever imports convo.store.db first.
import convo.store.notify_models  # noqa: E402,F401  (client_messages, fineract_hooks: migration 0003)
import convo.store.transfers  # noqa: E402,F401  (transfer_requests: migrations 0004, 0006)
