"""Conversation state in Redis: one small value per conversation, with a TTL.

A hop costs two round trips: :meth:`SessionStore.acquire` takes the
conversation's lock *and* reads its value in one transaction (``MULTI``/``EXEC``:
for Redis a third of the CPU of a Lua script doing the same);
:meth:`SessionStore.save` writes the new value and
releases the lock in one Lua script that checks the lock is still ours, so two
concurrent callbacks for one session can never both advance it. Keys carry a
hash tag (``convo:{ussd:africastalking:ATUid_1:+254700000101}:s``) so a value and its lock live in one
Redis Cluster slot.

The value is written by :func:`encode_session` (see there: a JSON array led by the codec version,
without the key names) and read by :func:`decode_session`, which also reads the JSON objects the
code wrote before, so conversations open during a deploy carry on.
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from typing import Callable, cast

import redis as redis_lib
from redis.exceptions import NoScriptError

pack_command: Callable[[tuple], bytes] | None
try:
    # hiredis's stub types the command as a 1-tuple; any tuple of str/int/bytes is what it packs
    from hiredis import pack_command as _hiredis_pack

    pack_command = cast(Callable[[tuple], bytes], _hiredis_pack)
except ImportError:                                 # hiredis is a dependency; without it, redis-py's client
    pack_command = None

_MULTI, _EXEC = (b"*1\r\n$5\r\nMULTI\r\n", b"*1\r\n$4\r\nEXEC\r\n")

log = logging.getLogger(__name__)

#: the session fields (convo/dialog/hop.py ``Engine._hop``): flows version, flow, state,
#: variables, language, page, pages, call stack, characters of USSD text consumed, reply, ended, time,
#: positions of secret inputs. Append new names at the end only: a value's mask bits index this tuple.
FIELDS = ("v", "f", "s", "vars", "lang", "pg", "np", "stk", "n", "r", "e", "t", "sp")
CODEC_VERSION = 1
_EXTRAS_BIT = 1 << 20                       # above any FIELDS bit, now and later
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode


def encode_session(data: dict) -> str:
    """``data`` as ``[1, mask, value, ...]``: codec version 1, a bit mask of the :data:`FIELDS` present
    (bit i = ``FIELDS[i]``), their values in that order, then, when ``data`` has keys outside
    :data:`FIELDS`, one object with those (mask bit 20). Compact JSON (no spaces, UTF-8 as is), about
    50 bytes less than the same object with its key names; values that are not JSON are written with
    ``str`` as before."""
    mask, values = 0, []
    for i, name in enumerate(FIELDS):
        if name in data:
            mask |= 1 << i
            values.append(data[name])
    extras = {k: v for k, v in data.items() if k not in FIELDS} if len(values) < len(data) else None
    if extras:
        mask |= _EXTRAS_BIT
        values.append(extras)
    return _dumps([CODEC_VERSION, mask, *values])


def decode_session(raw: bytes | str | None) -> dict | None:
    """A session as :func:`encode_session` wrote it, or as a JSON object (the format before it); None for
    no value, and for a codec version newer than this code (logged: the caller starts a new dialog)."""
    if not raw:
        return None
    got = json.loads(raw)
    if isinstance(got, dict):
        return got                                  # written before the codec had a version
    if not (isinstance(got, list) and len(got) >= 2 and got[0] == CODEC_VERSION):
        log.warning("session value in an unknown format (codec %r): treated as no session",
                    got[0] if isinstance(got, list) and got else type(got).__name__)
        return None
    mask, values = got[1], iter(got[2:])
    out = {name: next(values) for i, name in enumerate(FIELDS) if mask >> i & 1}
    if mask & _EXTRAS_BIT:
        out.update(next(values))
    return out

# write and unlock if the lock is still ours
_SAVE = """
if redis.call('get', KEYS[2]) == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3])
  redis.call('del', KEYS[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""

_fake_servers: dict = {}


def make_redis(url: str, timeout: float = 0.5) -> redis_lib.Redis:
    """An in-process fakeredis for ``memory://`` (a new, empty one each time) or ``memory://NAME``
    (one per NAME in the process, for threads that share it); else a real client.

    A real client waits at most ``timeout`` seconds to connect or for an answer
    (``CONVO_REDIS_TIMEOUT``), so a Redis that refuses or never answers costs a hop
    that much, well inside its budget. A refused or reset connection is retried once
    at once (a restarted Redis, a stale pooled connection); a timeout never is: the
    command may have run, and waiting twice would spend the hop's budget.
    """
    if url.startswith("memory://"):
        import fakeredis

        name = url[len("memory://"):].strip("/")
        if not name:
            return fakeredis.FakeRedis(server=fakeredis.FakeServer())
        if name not in _fake_servers:
            _fake_servers[name] = fakeredis.FakeServer()
        return fakeredis.FakeRedis(server=_fake_servers[name])
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.retry import Retry

    return redis_lib.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                    retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
                                    health_check_interval=30)


class SessionBusy(Exception):
    """Another request holds this conversation's lock for longer than we can wait."""


def _plain_pool(client) -> redis_lib.ConnectionPool | None:
    """The pool of a plain ``redis.Redis`` client (TCP, TLS or Unix socket), whose connections the store
    may open for its own thread-held use; None for anything else (fakeredis, a single-connection client)."""
    from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection

    pool = getattr(client, "connection_pool", None)
    if (type(client) is not redis_lib.Redis or type(pool) is not redis_lib.ConnectionPool
            or getattr(client, "connection", None) is not None
            or pool.connection_class not in (Connection, SSLConnection, UnixDomainSocketConnection)):
        return None
    return pool


class SessionStore:
    """The conversation store. Its two calls per hop run on connections of its own (made with the
    client's settings: timeouts, retry, health checks), taken from a plain free list: redis-py's pool
    check-out and per-command wrapping cost more CPU than the round trip's own work (bench/README.md).
    A refused or reset connection is retried as the client's ``retry`` says; a timeout or any other
    error closes that connection, which connects again when it is next used."""

    LOCK_MS = 8000

    def __init__(self, redis: redis_lib.Redis, prefix: str = "convo:"):
        self.redis = redis
        self.prefix = prefix
        self._save = redis.register_script(_SAVE)
        self._release = redis.register_script(_RELEASE)
        self._pool = _plain_pool(redis)
        self._free: list = []                               # idle connections (see _on_connection)
        self._pid = os.getpid()

    def _on_connection(self, io):
        """``io(connection)`` on a connection of the store's own free list (last in, first out: the few
        that are busy stay warm however many server threads there are), retried as the client's
        ``retry`` says. ``list.pop``/``append`` are atomic: no lock."""
        if self._pid != os.getpid():                        # a forked child: its parent's sockets are not ours
            self._free, self._pid = [], os.getpid()
        try:
            conn = self._free.pop()
        except IndexError:
            conn = self._pool.connection_class(**self._pool.connection_kwargs)
        try:
            got = conn.retry.call_with_retry(lambda: io(conn), lambda error: conn.disconnect())
        except BaseException:
            conn.disconnect()                               # never reuse a connection left mid-answer
            self._free.append(conn)                         # closed: it connects again when next used
            raise
        self._free.append(conn)
        return got

    def _run(self, script, keys: list, args: list):
        """``script`` with EVALSHA (EVAL when Redis does not have it yet): one round trip."""
        if self._pool is None or pack_command is None:
            return script(keys=keys, args=args)

        def io(conn):
            conn.send_packed_command([pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))])
            try:
                return conn.read_response()
            except NoScriptError:
                conn.send_command("EVAL", script.script, len(keys), *keys, *args)
                return conn.read_response()

        return self._on_connection(io)

    def _lock_and_read(self, skey: str, lkey: str, token: str) -> tuple[bool, bytes | None]:
        """``SET lock token NX PX`` and ``GET value`` in one ``MULTI``/``EXEC``: (lock taken, value)."""
        if self._pool is None or pack_command is None:
            pipe = self.redis.pipeline(transaction=True)
            pipe.set(lkey, token, nx=True, px=self.LOCK_MS)
            pipe.get(skey)
            got, raw = pipe.execute()
            return bool(got), raw
        packed = b"".join((_MULTI, pack_command(("SET", lkey, token, "NX", "PX", self.LOCK_MS)),
                           pack_command(("GET", skey)), _EXEC))

        def io(conn):
            conn.send_packed_command([packed])
            for _ in range(3):                              # OK, QUEUED, QUEUED
                conn.read_response()
            got, raw = conn.read_response()
            return got is not None, raw

        return self._on_connection(io)

    def _keys(self, sid: str) -> tuple[str, str]:
        base = f"{self.prefix}{{{sid}}}"
        return base + ":s", base + ":l"

    def acquire(self, sid: str, wait: float = 2.0) -> tuple[dict | None, str]:
        """Lock the conversation and read it in one round trip: (session or None, lock token).

        Raises :class:`SessionBusy` after ``wait`` seconds of contention.
        """
        keys = self._keys(sid)
        token = uuid.uuid4().hex
        deadline = time.monotonic() + wait
        delay = 0.005
        while True:
            got, raw = self._lock_and_read(*keys, token)
            if got:
                return decode_session(raw), token
            if time.monotonic() >= deadline:
                raise SessionBusy(sid)
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def peek(self, sid: str) -> dict | None:
        return decode_session(self.redis.get(self._keys(sid)[0]))

    def save(self, sid: str, token: str, data: dict, ttl: int) -> bool:
        """Write and unlock; False if our lock had expired (someone else may have written)."""
        skey, lkey = self._keys(sid)
        return bool(self._run(self._save, [skey, lkey], [token, encode_session(data), int(ttl)]))

    def release(self, sid: str, token: str) -> None:
        self._run(self._release, [self._keys(sid)[1]], [token])
