"""Short-lived JSON cache for Mifos X answers: a per-process layer in front of Redis.

The per-process layer (a few seconds) spares a Redis round trip on hops that
re-read what the previous hop fetched; Redis shares answers between workers
for longer. Keys are plain strings chosen by the caller (``convo:client:+2547…``).
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any

MISSING = object()


class Cache:
    def __init__(self, redis, local_ttl: float = 10.0, max_local: int = 50_000):
        self.redis = redis
        self.local_ttl = local_ttl
        self.max_local = max_local
        self._local: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def _local_get(self, key: str) -> Any:
        hit = self._local.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        return MISSING

    def _local_put(self, key: str, value: Any) -> None:
        with self._lock:
            if len(self._local) >= self.max_local:
                self._local.clear()
            self._local[key] = (time.monotonic() + self.local_ttl, value)

    def get(self, key: str, raw: Any = MISSING) -> Any:
        """Cached value or None. ``raw`` is the Redis value if the caller already fetched it."""
        value = self._local_get(key)
        if value is not MISSING:
            return value
        if raw is MISSING:
            raw = self.redis.get(key)
        if raw is None:
            return None
        value = json.loads(raw)
        self._local_put(key, value)
        return value

    def put(self, key: str, value: Any, ttl: int) -> None:
        self.redis.set(key, json.dumps(value, separators=(",", ":"), default=str), ex=int(ttl))
        self._local_put(key, value)

    def remember(self, key: str, value: Any, ttl: int, last_ttl: int, stamp: str) -> None:
        """Cache ``value`` for ``ttl`` and keep it as the last good answer (with its time) for ``last_ttl``."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(key, json.dumps(value, separators=(",", ":"), default=str), ex=int(ttl))
        pipe.set("convo:last:" + key, json.dumps({"v": value, "t": stamp}, separators=(",", ":"), default=str),
                 ex=int(last_ttl))
        pipe.execute()
        self._local_put(key, value)

    def last_good(self, key: str) -> tuple[Any, str] | None:
        """The last good answer stored by :meth:`remember` and when it was fetched, or None."""
        raw = self.redis.get("convo:last:" + key)
        if raw is None:
            return None
        hit = json.loads(raw)
        return hit["v"], hit["t"]

    def drop(self, key: str) -> None:
        self.redis.delete(key)
        with self._lock:
            self._local.pop(key, None)
