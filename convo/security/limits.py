"""Rate limits per phone: fixed windows counted in Redis."""
from __future__ import annotations

import time


def allowed(redis, name: str, phone: str, limit: int, window: int = 3600) -> bool:
    """Count one event ``name`` for ``phone`` in a fixed window of ``window`` seconds: True while the count
    is within ``limit``, False once it is exceeded (0 = no limit)."""
    if limit <= 0:
        return True
    key = f"convo:rl:{name}:{{{phone}}}:{int(time.time() // window)}"
    pipe = redis.pipeline(transaction=False)
    pipe.incr(key)
    pipe.expire(key, window + 60)
    count, _ = pipe.execute()
    return int(count) <= limit
