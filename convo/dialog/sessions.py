"""Conversation state in Redis: one small JSON value per conversation, with a TTL.

A hop costs two round trips: :meth:`SessionStore.acquire` takes the
conversation's lock *and* reads its value in one Lua script;
:meth:`SessionStore.save` writes the new value and
releases the lock in one Lua script that checks the lock is still ours, so two
concurrent callbacks for one session can never both advance it. Keys carry a
hash tag (``convo:{ussd:africastalking:ATUid_1:+254700000101}:s``) so a value and its lock live in one
Redis Cluster slot.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any

import redis as redis_lib

_ACQUIRE = """
if redis.call('set', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('get', KEYS[1])}
end
return {0}
"""
# write and unlock if the lock is still ours; ``also`` Lua (see save) may follow before the return
_SAVE_THEN = """
local saved = 0
if redis.call('get', KEYS[2]) == ARGV[1] then
  redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3])
  redis.call('del', KEYS[2])
  saved = 1
end
"""
_SAVE = _SAVE_THEN + "return saved\n"
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


class SessionStore:
    LOCK_MS = 8000

    def __init__(self, redis: redis_lib.Redis, prefix: str = "convo:"):
        self.redis = redis
        self.prefix = prefix
        self._acquire = redis.register_script(_ACQUIRE)
        self._save = redis.register_script(_SAVE)
        self._release = redis.register_script(_RELEASE)
        self._combined: dict = {}

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
            got, *raw = self._acquire(keys=keys, args=[token, self.LOCK_MS])
            if got:
                return (json.loads(raw[0]) if raw and raw[0] else None), token
            if time.monotonic() >= deadline:
                raise SessionBusy(sid)
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def peek(self, sid: str) -> dict | None:
        raw = self.redis.get(self._keys(sid)[0])
        return json.loads(raw) if raw else None

    def save(self, sid: str, token: str, data: dict, ttl: int, also=None) -> bool:
        """Write and unlock; False if our lock had expired (someone else may have written).

        ``also``: ``(lua, keys, args)``, Lua that runs in the same script right after the save, so it costs
        no extra command nor round trip (the drop-off counts of :mod:`convo.dialog.stats`). Its keys are
        ``KEYS[3]``..., its arguments ``ARGV[4]``...; it ends with ``return saved``. Its keys live in
        another Cluster slot than the session's: on Redis Cluster turn it off (``CONVO_FLOW_STATS=false``)."""
        skey, lkey = self._keys(sid)
        blob = json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)
        if also is None:
            return bool(self._save(keys=[skey, lkey], args=[token, blob, int(ttl)]))
        lua, keys, args = also
        script = self._combined.get(lua)
        if script is None:
            script = self._combined[lua] = self.redis.register_script(_SAVE_THEN + lua)
        return bool(script(keys=[skey, lkey, *keys], args=[token, blob, int(ttl), *args]))

    def release(self, sid: str, token: str) -> None:
        self._release(keys=[self._keys(sid)[1]], args=[token])
