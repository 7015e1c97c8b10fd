"""Claim-with-lease, the one implementation behind every job table (outbox, transfers, Fineract hooks).

A job row is *ready* (one of :attr:`LeaseTable.ready`, due when its ``due``
column is ``<= now``) or *leased* (:attr:`LeaseTable.leased`, with an owner
token and a ``lease_until``). The contract:

* :func:`claim` - one statement: up to ``limit`` rows that are ready and due,
  or leased with an expired lease (their worker died), become leased by
  ``token`` until ``now + lease`` with ``attempts + 1``. PostgreSQL picks them
  with ``FOR UPDATE SKIP LOCKED``, so concurrent workers on any number of
  machines never hold one row; SQLite runs the single ``UPDATE … RETURNING``
  under its database write lock (one writer at a time: the same guarantee).
* :func:`finish` / :func:`finish_rows` - write the outcome only where the row
  is still leased *by this token*: a row taken over after its lease expired
  cannot be finished by the old owner (the returned ids say which were).
  Finishing clears the owner and the lease.
* :func:`release` - give rows back untouched (the attempt is not counted).
* :func:`backoff_seconds` / :func:`retry_at` - when a retry is due:
  ``min(cap, base * 2**(attempt-1))``, jittered to 50-100 %.

Each table keeps its own columns and status names; a :class:`LeaseTable`
names them.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import random
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

__all__ = ["LeaseTable", "backoff_seconds", "claim", "finish", "finish_rows", "new_token", "release", "retry_at"]


@dataclass(frozen=True)
class LeaseTable:
    """Which columns and statuses of ``table`` hold a lease."""

    table: sa.Table
    #: statuses a worker may claim once due
    ready: tuple[str, ...]
    #: the status while a worker holds the row
    leased: str
    #: the column saying when a ready row is due (None: ready rows are always due)
    due: str | None = "next_attempt_at"
    owner: str = "leased_by"
    until: str = "lease_until"
    attempts: str = "attempts"
    status: str = "status"
    id: str = "id"

    def col(self, name: str) -> sa.Column:
        return self.table.c[name]

    def claimable(self, now: dt.datetime) -> sa.ColumnElement[bool]:
        """Ready and due, or leased with a lease that ran out."""
        c = self.col
        ready: sa.ColumnElement[bool] = c(self.status).in_(self.ready)
        if self.due is not None:
            ready = sa.and_(ready, c(self.due) <= now)
        return sa.or_(ready, sa.and_(c(self.status) == self.leased, c(self.until) < now))

    def held_by(self, token: str | sa.BindParameter[str]) -> sa.ColumnElement[bool]:
        """Still leased, and by ``token`` (a value, or a bind parameter of a statement built once)."""
        return sa.and_(self.col(self.owner) == token, self.col(self.status) == self.leased)


def new_token(name: str) -> str:
    """A fresh owner token: ``<name>:<10 hex digits>`` (one per claim, so a retaken row is told apart)."""
    return f"{name}:{uuid.uuid4().hex[:10]}"


def claim(conn: Connection, lt: LeaseTable, *, token: str, now: dt.datetime, lease: dt.timedelta, limit: int,
          where: sa.ColumnElement[bool] | None = None, values: Mapping[str, Any] | None = None,
          returning: Iterable[sa.ColumnElement] | None = None,
          order_by: Sequence[sa.ColumnElement] | None = None) -> Sequence[sa.Row[Any]]:
    """Lease up to ``limit`` claimable rows (optionally also matching ``where``) to ``token``; the rows.

    ``values`` are set on the claimed rows too (column name -> value or SQL expression; an expression sees
    the row as it was before the claim). ``returning`` defaults to every column (after the claim).
    Runs on ``conn``: commit it to make the claim durable.
    """
    c = lt.col
    cond = lt.claimable(now) if where is None else sa.and_(lt.claimable(now), where)
    order = order_by if order_by is not None else ([c(lt.due)] if lt.due else []) + [c(lt.id)]
    pick = sa.select(c(lt.id)).where(cond).order_by(*order).limit(limit)
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    stmt = (sa.update(lt.table).where(c(lt.id).in_(pick.scalar_subquery()))
            .values({lt.status: lt.leased, lt.owner: token, lt.until: now + lease,
                     lt.attempts: c(lt.attempts) + 1, **(values or {})})
            .returning(*(returning if returning is not None else lt.table.c)))
    return conn.execute(stmt).all()


def finish(conn: Connection, lt: LeaseTable, ids: Iterable[int], token: str, values: Mapping[str, Any]) -> set[int]:
    """Set ``values`` on the rows of ``ids`` still held by ``token`` and end their lease; the ids finished."""
    ids = list(ids)
    if not ids:
        return set()
    c = lt.col
    stmt = (sa.update(lt.table).where(c(lt.id).in_(ids), lt.held_by(token))
            .values({**values, lt.owner: None, lt.until: None}).returning(c(lt.id)))
    return set(conn.execute(stmt).scalars())


def release(conn: Connection, lt: LeaseTable, ids: Iterable[int], token: str, status: str,
            values: Mapping[str, Any] | None = None) -> set[int]:
    """Give rows held by ``token`` back as ``status`` without counting this attempt; the ids released."""
    return finish(conn, lt, ids, token, {lt.status: status, lt.attempts: lt.col(lt.attempts) - 1, **(values or {})})


class _Params:
    """``v.c[name]`` / ``v.c.name`` as a bind parameter (the per-row values of an executemany)."""

    class _Columns(dict):
        __getattr__ = dict.__getitem__

    def __init__(self, types: Mapping[str, Any]):
        self.c = self._Columns({k: sa.bindparam(f"v_{k}", type_=t) for k, t in types.items()})


def finish_rows(conn: Connection, lt: LeaseTable, token: str, rows: Sequence[Mapping[str, Any]], *,
                values: Callable[[Any], Mapping[str, Any]] | None = None,
                returning: tuple[sa.ColumnElement, ...] = (),
                params: Mapping[str, Any] | None = None) -> Sequence[sa.Row[Any]]:
    """Finish many held rows, each with its own values; returns ``(id, *returning)`` of the rows finished.

    ``rows``: dicts of ``id`` and column name -> value (every dict the same keys). ``values(v)`` may
    replace the default ``{name: v.c[name]}`` with expressions over ``v.c`` (the row's values) and the
    table's columns, e.g. ``coalesce(v.c["gateway"], table.c.gateway)``. The statement is built once per
    shape (``lt``, keys, ``values``, ``returning``) and reused: ``values`` must be a module-level function
    and take what changes between calls as bind parameters (``sa.bindparam("now")``) given in ``params``.
    PostgreSQL: one guarded ``UPDATE … FROM json_to_recordset(…) RETURNING`` (one round trip). Elsewhere:
    the rows still held are selected (``FOR UPDATE``), updated with one executemany, ``returning`` read after.
    """
    if not rows:
        return []
    c = lt.col
    names = tuple(k for k in rows[0] if k != lt.id)
    pg = conn.dialect.name == "postgresql"
    stmt = _rows_statement(lt, names, pg, values, tuple(returning))
    if pg:
        payload = json.dumps([{k: _jsonable(r[k]) for k in (lt.id, *names)} for r in rows])
        return conn.execute(stmt, {**(params or {}), "lease_rows": payload, "lease_token": token}).all()
    held = set(conn.execute(sa.select(c(lt.id)).where(c(lt.id).in_([r[lt.id] for r in rows]), lt.held_by(token))
                            .with_for_update()).scalars())
    if not held:
        return []
    conn.execute(stmt, [{**(params or {}), **{f"v_{k}": r[k] for k in names}, "_id": r[lt.id], "lease_token": token}
                        for r in rows if r[lt.id] in held])
    return conn.execute(sa.select(c(lt.id), *returning).where(c(lt.id).in_(held))).all()


@functools.lru_cache(maxsize=64)
def _rows_statement(lt: LeaseTable, names: tuple[str, ...], pg: bool, values, returning: tuple):
    c = lt.col
    held = lt.held_by(sa.bindparam("lease_token", type_=c(lt.owner).type))
    if pg:
        v = sa.func.json_to_recordset(sa.cast(sa.bindparam("lease_rows", type_=sa.Text), sa.JSON)).table_valued(
            sa.column(lt.id, c(lt.id).type), *(sa.column(k, c(k).type) for k in names), name="v",
        ).render_derived(with_types=True)
        sets = values(v) if values else {k: v.c[k] for k in names}
        return (sa.update(lt.table).where(c(lt.id) == v.c[lt.id], held)
                .values({**sets, lt.owner: None, lt.until: None}).returning(c(lt.id), *returning))
    bound = _Params({k: c(k).type for k in names})
    sets = values(bound) if values else {k: bound.c[k] for k in names}
    return (sa.update(lt.table).where(c(lt.id) == sa.bindparam("_id"), held)
            .values({**sets, lt.owner: None, lt.until: None}))


def _jsonable(x: Any) -> Any:
    if isinstance(x, (dt.datetime, dt.date)):
        return x.isoformat()
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return str(x)  # Decimal and the like: PostgreSQL reads the text into the column's type


def backoff_seconds(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Delay before retry number ``attempt`` (1-based): ``min(cap, base*2**(attempt-1))``, jittered to 50-100%."""
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    return delay * (0.5 + 0.5 * rng())


def retry_at(now: dt.datetime, attempt: int, base: float, cap: float,
             rng: Callable[[], float] = random.random) -> dt.datetime:
    """``now`` plus :func:`backoff_seconds`."""
    return now + dt.timedelta(seconds=backoff_seconds(attempt, base, cap, rng))
