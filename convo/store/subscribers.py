"""Subscribers' PIN state and the audit log, in the database (``CONVO_DATABASE_URL``).

A PIN belongs to a (phone, client) pair (table ``subscriber_pins``): on a phone
shared by several Mifos X clients each has their own, one never opens
another, and setting one never touches another's. The lock belongs to the phone
(table ``subscribers``): wrong PINs are counted per pair and the phone locks,
for every client and channel, when its pairs' counts add up to
``pin_max_attempts``. A right PIN clears only its own pair's count, so knowing
one client's PIN earns no extra guesses at another's. Every attempt runs in one
transaction that first takes the phone row's write lock, so concurrent attempts
over USSD and SMS can never get more tries than the limit between them.

Every function takes the SQLAlchemy engine and commits its own transaction. A
PIN never reaches this module's SQL: only argon2id hashes do (see
:mod:`convo.security`).
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Iterable, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from convo.security import PinHasher
from convo.store.db import AuditEvent, Subscriber, SubscriberPin, utcnow

log = logging.getLogger(__name__)

# declarative models' ``__table__`` is typed as a FromClause; these are Tables (update/insert)
subs = cast(sa.Table, Subscriber.__table__)
pins = cast(sa.Table, SubscriberPin.__table__)
audit_log = cast(sa.Table, AuditEvent.__table__)

#: ``locked_until`` of a lock that only a staff reset lifts (``pin_lock_minutes = 0``)
FOREVER = dt.datetime(9000, 1, 1, tzinfo=dt.timezone.utc)
NEW_PIN_TTL = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Status:
    state: str                      # none | set | locked (the PIN of ``client_id``, or of any client when None)
    locked_until: dt.datetime | None = None
    failed_attempts: int = 0        # wrong PINs on this phone that count towards its lock
    pin_set_at: dt.datetime | None = None
    client_id: int | None = None
    #: (client id, PIN set at) of every client with a PIN on this phone
    clients: tuple[tuple[int, dt.datetime], ...] = ()


def _locked(locked_until: dt.datetime | None, now: dt.datetime) -> bool:
    return locked_until is not None and locked_until > now


def _pair(phone: str, client_id: int):
    return sa.and_(pins.c.phone == phone, pins.c.client_id == int(client_id))


def status(db: Engine, phone: str, client_id: int | None = None, now: dt.datetime | None = None) -> Status:
    """The phone's lock and the PIN of ``client_id`` (with None: whether any client has one)."""
    now = now or utcnow()
    with db.connect() as c:
        locked_until = c.execute(sa.select(subs.c.locked_until).where(subs.c.phone == phone)).scalar()
        rows = c.execute(sa.select(pins.c.client_id, pins.c.pin_hash, pins.c.pin_set_at, pins.c.failed_attempts)
                         .where(pins.c.phone == phone).order_by(pins.c.client_id)).all()
    expired = locked_until is not None and not _locked(locked_until, now)
    failed = 0 if expired else sum(r.failed_attempts for r in rows)
    with_pin = tuple((r.client_id, r.pin_set_at) for r in rows if r.pin_hash)
    mine = [r for r in rows if r.pin_hash and (client_id is None or r.client_id == int(client_id))]
    set_at = max((r.pin_set_at for r in mine if r.pin_set_at), default=None)
    if _locked(locked_until, now):
        return Status("locked", locked_until, failed, set_at, client_id, with_pin)
    return Status("set" if mine else "none", None, failed, set_at, client_id, with_pin)


@dataclass(frozen=True)
class Check:
    outcome: str                    # ok | wrong | locked | none
    attempts_left: int = 0
    just_locked: bool = False


def _lock_phone(c: Connection, phone: str, now: dt.datetime) -> dt.datetime | None:
    """First statement of a PIN transaction: take the phone row's write lock (creating the row if
    need be) and lift a lock that has run out, restarting the phone's count. Returns the lock in force."""
    row = c.execute(subs.update().where(subs.c.phone == phone).values(updated_at=now)
                    .returning(subs.c.locked_until)).first()
    if row is None:
        c.execute(subs.insert().values(phone=phone, created_at=now, updated_at=now))
        return None
    if row.locked_until is not None and row.locked_until <= now:
        c.execute(subs.update().where(subs.c.phone == phone).values(locked_until=None))
        c.execute(pins.update().where(pins.c.phone == phone, pins.c.failed_attempts != 0)
                  .values(failed_attempts=0))
        return None
    return row.locked_until


def verify(db: Engine, hasher: PinHasher, phone: str, client_id: int, pin: str, *, max_attempts: int = 3,
           lock_minutes: int = 1440, now: dt.datetime | None = None) -> Check:
    """Check ``pin`` for (``phone``, ``client_id``); count a wrong one; lock the phone at ``max_attempts``
    wrong PINs on it (all its clients together)."""
    now = now or utcnow()
    with db.connect() as c:
        locked_until = c.execute(sa.select(subs.c.locked_until).where(subs.c.phone == phone)).scalar()
        pin_hash = c.execute(sa.select(pins.c.pin_hash).where(_pair(phone, client_id))).scalar()
    if _locked(locked_until, now):
        return Check("locked")
    if not pin_hash:
        hasher.verify(None, pin)                      # same work as a real check
        return Check("none")
    good = hasher.verify(pin_hash, pin)
    with db.begin() as c:
        if _locked(_lock_phone(c, phone, now), now):
            return Check("locked")                  # locked by a concurrent attempt meanwhile
        if good:
            values: dict[str, Any] = {"failed_attempts": 0, "updated_at": now}
            if hasher.needs_rehash(pin_hash):
                values["pin_hash"] = hasher.hash(pin)
            n = c.execute(pins.update().where(_pair(phone, client_id), pins.c.pin_hash.is_not(None))
                          .values(**values)).rowcount
            return Check("ok") if n else Check("none")      # the PIN was reset meanwhile
        c.execute(pins.update().where(_pair(phone, client_id))
                  .values(failed_attempts=pins.c.failed_attempts + 1, updated_at=now))
        total = int(c.execute(sa.select(sa.func.coalesce(sa.func.sum(pins.c.failed_attempts), 0))
                              .where(pins.c.phone == phone)).scalar_one())
        if total >= max_attempts:
            until = FOREVER if lock_minutes <= 0 else now + dt.timedelta(minutes=lock_minutes)
            c.execute(subs.update().where(subs.c.phone == phone).values(locked_until=until))
            return Check("locked", 0, just_locked=True)
    return Check("wrong", max(0, max_attempts - int(total)))


def _upsert_pin(c: Connection, phone: str, client_id: int, values: dict, now: dt.datetime) -> None:
    n = c.execute(pins.update().where(_pair(phone, client_id)).values(**values, updated_at=now)).rowcount
    if n == 0:
        c.execute(pins.insert().values(**{"failed_attempts": 0, **values}, phone=phone, client_id=int(client_id),
                                       created_at=now, updated_at=now))


def _retry_insert_race(fn) -> None:
    for attempt in range(2):
        try:
            fn()
            return
        except IntegrityError:                      # two first dialogs raced to insert
            if attempt:
                raise


def stage_new_pin(db: Engine, hasher: PinHasher, phone: str, client_id: int, pin: str, *,
                  now: dt.datetime | None = None) -> None:
    """Remember a new PIN for (``phone``, ``client_id``) entered once (hashed) until it is repeated
    (:func:`commit_new_pin`). Touches no other client's PIN, nor the subscriber's language."""
    now = now or utcnow()

    def run() -> None:
        with db.begin() as c:
            _lock_phone(c, phone, now)
            _upsert_pin(c, phone, client_id, {"new_pin_hash": hasher.hash(pin), "new_pin_until": now + NEW_PIN_TTL},
                        now)
    _retry_insert_race(run)


def commit_new_pin(db: Engine, hasher: PinHasher, phone: str, client_id: int, pin: str, *, replace_allowed: bool,
                   now: dt.datetime | None = None) -> str:
    """The repeat of a staged PIN: ``set`` | ``changed`` | ``mismatch`` | ``expired`` | ``refused`` | ``locked``.

    ``refused``: a PIN is already set and the dialog has not confirmed it
    (``replace_allowed`` False), so nothing changes. ``locked``: the phone is
    locked (a new PIN never lifts a lock).
    """
    now = now or utcnow()
    with db.connect() as c:
        row = c.execute(sa.select(pins.c.id, pins.c.pin_hash, pins.c.new_pin_hash, pins.c.new_pin_until)
                        .where(_pair(phone, client_id))).first()
    if row is None or not row.new_pin_hash or row.new_pin_until is None or row.new_pin_until <= now:
        return "expired"
    if row.pin_hash and not replace_allowed:
        return "refused"
    if not hasher.verify(row.new_pin_hash, pin):
        return "mismatch"
    with db.begin() as c:
        if _locked(_lock_phone(c, phone, now), now):
            return "locked"
        n = c.execute(pins.update().where(pins.c.id == row.id, pins.c.new_pin_hash == row.new_pin_hash).values(
            pin_hash=row.new_pin_hash, new_pin_hash=None, new_pin_until=None, pin_set_at=now,
            failed_attempts=0, updated_at=now)).rowcount
    if not n:
        return "expired"
    return "changed" if row.pin_hash else "set"


def reset(db: Engine, phone: str, *, client_id: int | None = None, unlock_only: bool = False,
          now: dt.datetime | None = None) -> bool:
    """Staff reset: unlock the phone (every client's wrong-PIN count back to 0) and, unless
    ``unlock_only``, forget the PIN of ``client_id`` (of every client on the phone when None) so
    that client sets a new one. False when the phone (or the pair) is unknown."""
    now = now or utcnow()
    with db.begin() as c:
        if client_id is not None and not unlock_only and \
                c.execute(sa.select(pins.c.id).where(_pair(phone, client_id))).first() is None:
            return False                            # nothing changes for an unknown pair
        known = c.execute(subs.update().where(subs.c.phone == phone)
                          .values(locked_until=None, updated_at=now)).rowcount
        c.execute(pins.update().where(pins.c.phone == phone).values(failed_attempts=0))
        if unlock_only:
            return bool(known)
        which = pins.c.phone == phone if client_id is None else _pair(phone, client_id)
        c.execute(pins.update().where(which).values(pin_hash=None, new_pin_hash=None, new_pin_until=None,
                                                    pin_set_at=None, updated_at=now))
        return bool(known)


def set_pin(db: Engine, hasher: PinHasher, phone: str, client_id: int, pin: str, *,
            now: dt.datetime | None = None) -> None:
    """Set the PIN of (``phone``, ``client_id``) directly (tests, seeding, migration from another
    system): clears the phone's lock and wrong-PIN counts."""
    now = now or utcnow()

    def run() -> None:
        with db.begin() as c:
            _lock_phone(c, phone, now)
            c.execute(subs.update().where(subs.c.phone == phone).values(locked_until=None))
            c.execute(pins.update().where(pins.c.phone == phone).values(failed_attempts=0))
            _upsert_pin(c, phone, client_id, {"pin_hash": hasher.hash(pin), "pin_set_at": now, "failed_attempts": 0,
                                              "new_pin_hash": None, "new_pin_until": None}, now)
    _retry_insert_race(run)


# --------------------------------------------------------------------------- audit log
def audit(db: Engine, action: str, *, actor: str = "client", channel: str | None = None, phone: str | None = None,
          client_id: int | None = None, outcome: str | None = None, detail: dict | None = None) -> None:
    audit_many(db, [dict(action=action, actor=actor, channel=channel, phone=phone, client_id=client_id,
                         outcome=outcome, detail=detail or {})])


def audit_many(db: Engine, events: Iterable[dict]) -> None:
    rows = [{"at": utcnow(), "actor": "client", "channel": None, "phone": None, "client_id": None,
             "outcome": None, "detail": {}, **e} for e in events]
    if not rows:
        return
    for r in rows:
        r["actor"] = str(r["actor"])[:120]
        if r["client_id"] is not None:
            try:
                r["client_id"] = int(r["client_id"])
            except (TypeError, ValueError):
                r["client_id"] = None
    with db.begin() as c:
        c.execute(audit_log.insert(), rows)


def language_of(db: Engine, phone: str) -> str | None:
    """The language the subscriber chose (Language menu), or None."""
    with db.connect() as c:
        return c.execute(sa.select(subs.c.language).where(subs.c.phone == phone)).scalar()


def set_language(db: Engine, phone: str, language: str, now: dt.datetime | None = None) -> None:
    """Remember the language the subscriber chose, for every later dialog and notification."""
    now = now or utcnow()

    def run() -> None:
        with db.begin() as c:
            if not c.execute(subs.update().where(subs.c.phone == phone)
                             .values(language=language, updated_at=now)).rowcount:
                c.execute(subs.insert().values(phone=phone, language=language, created_at=now, updated_at=now))
    _retry_insert_race(run)
