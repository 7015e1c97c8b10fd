"""Subscribers' PIN state and the audit log, in the database (``CONVO_DATABASE_URL``).

Every function takes the SQLAlchemy engine and commits its own transaction.
Wrong PINs are counted with one atomic ``UPDATE ... RETURNING`` per attempt,
per subscriber (not per session), so concurrent attempts over USSD and SMS
can never get more tries than ``pin_max_attempts`` between them. A PIN never
reaches this module's SQL: only argon2id hashes do (see :mod:`convo.security`).
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from convo.db import AuditEvent, Subscriber, UTCDateTime, utcnow
from convo.security import PinHasher

log = logging.getLogger(__name__)

subs = Subscriber.__table__
audit_log = AuditEvent.__table__

#: ``locked_until`` of a lock that only a staff reset lifts (``pin_lock_minutes = 0``)
FOREVER = dt.datetime(9000, 1, 1, tzinfo=dt.timezone.utc)
NEW_PIN_TTL = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class Status:
    state: str                      # none | set | locked
    locked_until: dt.datetime | None = None
    failed_attempts: int = 0
    pin_set_at: dt.datetime | None = None
    client_id: int | None = None


def _locked(row, now: dt.datetime) -> bool:
    return row.locked_until is not None and row.locked_until > now


def status(db: Engine, phone: str, now: dt.datetime | None = None) -> Status:
    now = now or utcnow()
    with db.connect() as c:
        row = c.execute(sa.select(subs.c.pin_hash, subs.c.locked_until, subs.c.failed_attempts,
                                  subs.c.pin_set_at, subs.c.client_id).where(subs.c.phone == phone)).first()
    if row is None:
        return Status("none")
    if _locked(row, now):
        return Status("locked", row.locked_until, row.failed_attempts, row.pin_set_at, row.client_id)
    return Status("set" if row.pin_hash else "none", None, row.failed_attempts, row.pin_set_at, row.client_id)


@dataclass(frozen=True)
class Check:
    outcome: str                    # ok | wrong | locked | none
    attempts_left: int = 0
    just_locked: bool = False


def verify(db: Engine, hasher: PinHasher, phone: str, pin: str, *, max_attempts: int = 3,
           lock_minutes: int = 1440, now: dt.datetime | None = None) -> Check:
    """Check ``pin`` for ``phone``; count a wrong one and lock at ``max_attempts``."""
    now = now or utcnow()
    with db.connect() as c:
        row = c.execute(sa.select(subs.c.id, subs.c.pin_hash, subs.c.locked_until)
                        .where(subs.c.phone == phone)).first()
    if row is None or not row.pin_hash:
        hasher.verify(None, pin)                      # same work as a real check
        return Check("none")
    if _locked(row, now):
        return Check("locked")
    good = hasher.verify(row.pin_hash, pin)
    not_locked = sa.or_(subs.c.locked_until.is_(None), subs.c.locked_until <= now)
    with db.begin() as c:
        if good:
            values: dict[str, Any] = {"failed_attempts": 0, "locked_until": None, "updated_at": now}
            if hasher.needs_rehash(row.pin_hash):
                values["pin_hash"] = hasher.hash(pin)
            n = c.execute(subs.update().where(subs.c.id == row.id, not_locked).values(**values)).rowcount
            return Check("ok") if n else Check("locked")    # locked by a concurrent attempt meanwhile
        expired = sa.and_(subs.c.locked_until.is_not(None), subs.c.locked_until <= now)
        base = sa.case((expired, 0), else_=subs.c.failed_attempts)
        until = FOREVER if lock_minutes <= 0 else now + dt.timedelta(minutes=lock_minutes)
        res = c.execute(subs.update().where(subs.c.id == row.id, not_locked).values(
            failed_attempts=base + 1,
            locked_until=sa.case((base + 1 >= max_attempts, sa.literal(until, UTCDateTime())),
                                 (expired, sa.null()), else_=subs.c.locked_until),
            updated_at=now,
        ).returning(subs.c.failed_attempts, subs.c.locked_until)).first()
    if res is None:
        return Check("locked")
    if res.locked_until is not None and res.locked_until > now:
        return Check("locked", 0, just_locked=True)
    return Check("wrong", max(0, max_attempts - res.failed_attempts))


def _upsert(c, phone: str, values: dict, now: dt.datetime) -> None:
    n = c.execute(subs.update().where(subs.c.phone == phone).values(**values, updated_at=now)).rowcount
    if n == 0:
        c.execute(subs.insert().values(**{"failed_attempts": 0, **values}, phone=phone, created_at=now,
                                       updated_at=now))


def stage_new_pin(db: Engine, hasher: PinHasher, phone: str, pin: str, *, client_id: int | None = None,
                  language: str | None = None, now: dt.datetime | None = None) -> None:
    """Remember a new PIN entered once (hashed) until it is repeated (:func:`commit_new_pin`)."""
    now = now or utcnow()
    values = {"new_pin_hash": hasher.hash(pin), "new_pin_until": now + NEW_PIN_TTL}
    if client_id is not None:
        values["client_id"] = client_id
    if language:
        values["language"] = language
    for attempt in range(2):
        try:
            with db.begin() as c:
                _upsert(c, phone, values, now)
            return
        except IntegrityError:                      # two first dialogs raced to insert
            if attempt:
                raise


def commit_new_pin(db: Engine, hasher: PinHasher, phone: str, pin: str, *, replace_allowed: bool,
                   now: dt.datetime | None = None) -> str:
    """The repeat of a staged PIN: ``set`` | ``changed`` | ``mismatch`` | ``expired`` | ``refused``.

    ``refused``: a PIN is already set and the dialog has not confirmed it
    (``replace_allowed`` False), so nothing changes.
    """
    now = now or utcnow()
    with db.connect() as c:
        row = c.execute(sa.select(subs.c.id, subs.c.pin_hash, subs.c.new_pin_hash, subs.c.new_pin_until)
                        .where(subs.c.phone == phone)).first()
    if row is None or not row.new_pin_hash or row.new_pin_until is None or row.new_pin_until <= now:
        return "expired"
    if row.pin_hash and not replace_allowed:
        return "refused"
    if not hasher.verify(row.new_pin_hash, pin):
        return "mismatch"
    with db.begin() as c:
        n = c.execute(subs.update().where(subs.c.id == row.id, subs.c.new_pin_hash == row.new_pin_hash).values(
            pin_hash=row.new_pin_hash, new_pin_hash=None, new_pin_until=None, pin_set_at=now,
            failed_attempts=0, locked_until=None, updated_at=now)).rowcount
    if not n:
        return "expired"
    return "changed" if row.pin_hash else "set"


def reset(db: Engine, phone: str, *, unlock_only: bool = False, now: dt.datetime | None = None) -> bool:
    """Staff reset: unlock, and (unless ``unlock_only``) forget the PIN so the client sets a new one."""
    now = now or utcnow()
    values: dict[str, Any] = {"failed_attempts": 0, "locked_until": None, "updated_at": now}
    if not unlock_only:
        values.update(pin_hash=None, new_pin_hash=None, new_pin_until=None, pin_set_at=None)
    with db.begin() as c:
        return bool(c.execute(subs.update().where(subs.c.phone == phone).values(**values)).rowcount)


def set_pin(db: Engine, hasher: PinHasher, phone: str, pin: str, *, client_id: int | None = None,
            language: str | None = None, now: dt.datetime | None = None) -> None:
    """Set a PIN directly (tests, seeding, migration from another system): clears any lock."""
    now = now or utcnow()
    values = {"pin_hash": hasher.hash(pin), "pin_set_at": now, "failed_attempts": 0, "locked_until": None,
              "new_pin_hash": None, "new_pin_until": None}
    if client_id is not None:
        values["client_id"] = client_id
    if language:
        values["language"] = language
    with db.begin() as c:
        _upsert(c, phone, values, now)


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
    """Remember the subscriber's language for every later dialog and notification."""
    now = now or utcnow()
    with db.begin() as c:
        _upsert(c, phone, {"language": language}, now)
