"""Where callers drop off: per flows version, flow, state and day, how many dialogs entered a state,
went on to each next state, ended there or hit an error.

Counted on the hop path at no Redis command at all: the engine adds :func:`hop_fields`' result to
:data:`PENDING`, this process's counts not yet written, and a background thread writes them every
``FLUSH_SECONDS`` (1 s) in one pipeline; :func:`read_counts`, :func:`totals` and :func:`versions` write
this process's first. The price: other processes' counts show up to a second late, and a process killed
outright loses at most its last second of counts. (Counting inside the session write's Lua script cost
the hop more than the rest of its Redis work: bench/README.md.) Nothing about the caller is kept: no
phone number, no input, no session id; only flow and state names and counts.

Keys (one Redis Cluster slot, hash tag ``{stats}``):

* ``convo:{stats}:d:<version>:<YYYY-MM-DD>``: a hash ``flow|state|in``, ``flow|state|end``,
  ``flow|state|err``, ``flow|state|>next`` -> count; expires ``flow_stats_days`` (90) after its last write;
* ``convo:{stats}:total``: ``flow|state|entered|ended|error|next`` for ``/metrics``
  (``convo_flow_state_total{flow,state,outcome}``), kept for the life of the Redis;
* ``convo:{stats}:versions``: version -> last day it was counted.

A caller who stops answering sends no hop, so "timed out" is not counted as it happens: it is what
entered a state that waits for input and neither went on, ended nor errored
(:func:`read_counts`; today's figure includes dialogs still open).
"""
from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

PREFIX = "convo:{stats}:"
TOTAL_KEY = PREFIX + "total"
VERSIONS_KEY = PREFIX + "versions"


def day_key(version: str, day: str) -> str:
    return f"{PREFIX}d:{version}:{day}"


FLUSH_SECONDS = 1.0
_TOTAL_OUTCOME = {"in": "entered", "end": "ended", "err": "error"}
_EPOCH = dt.date(1970, 1, 1)


class Pending:
    """Counts this process made and has not written yet (see the module docstring).

    :meth:`add` is all a hop does: no Redis command. A daemon thread started by the first :meth:`add`
    calls :meth:`flush` every ``FLUSH_SECONDS``: one pipeline per Redis client with the same fields,
    expiry and versions as the hop used to write. Counts a failed write could not store are kept
    for the next one. A forked child starts empty (its parent writes what it had)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._flushing = threading.Lock()          # a reader's flush waits for one under way
        self._counts: dict[tuple, Counter] = {}    # (redis, version, day, days kept) -> counts
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._day = (-1, "")
        self._failing = False

    def add(self, redis, version: str, counts: Counter, days: int) -> None:
        n = int(time.time() // 86400)              # the UTC day, as the day hashes are named
        if self._day[0] != n:
            self._day = (n, (_EPOCH + dt.timedelta(days=n)).isoformat())
        with self._lock:
            if self._pid != os.getpid():
                self._counts, self._thread, self._pid = {}, None, os.getpid()
            key = (redis, version, self._day[1], days)
            got = self._counts.get(key)
            if got is None:
                self._counts[key] = Counter(counts)
            else:
                got.update(counts)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="convo-stats-flush", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the counts stay pending; a dead writer would never write again
                log.exception("drop-off counts: flush failed, trying again in %s s", FLUSH_SECONDS)

    def flush(self) -> None:
        """Write every pending count now (readers call it first, so they see this process's counts)."""
        from redis.exceptions import RedisError

        with self._flushing:
            with self._lock:
                if self._pid != os.getpid() or not self._counts:
                    return
                batch, self._counts = self._counts, {}
            by_redis: dict = {}
            for (redis, version, day, days), counts in sorted(batch.items(), key=lambda kv: kv[0][2]):
                by_redis.setdefault(redis, []).append((version, day, days, counts))
            for redis, items in by_redis.items():
                pipe = redis.pipeline(transaction=False)
                for version, day, days, counts in items:
                    key = day_key(version, day)
                    for (flow, state, outcome), n in counts.items():
                        pipe.hincrby(key, f"{flow}|{state}|{outcome}", n)
                        pipe.hincrby(TOTAL_KEY, f"{flow}|{state}|{_TOTAL_OUTCOME.get(outcome, 'next')}", n)
                    pipe.expire(key, days * 86400)
                    pipe.hset(VERSIONS_KEY, version, day)
                try:
                    pipe.execute()
                    self._failing = False
                except (RedisError, OSError) as e:
                    with self._lock:                    # kept for the next flush
                        for version, day, days, counts in items:
                            self._counts.setdefault((redis, version, day, days), Counter()).update(counts)
                    if not self._failing:
                        log.warning("drop-off counts not written (kept for the next try): %s",
                                    str(e).splitlines()[0][:200] if str(e) else type(e).__name__)
                    self._failing = True


#: this process's pending counts
PENDING = Pending()


@atexit.register
def _flush_at_exit() -> None:
    try:
        PENDING.flush()
    except Exception:  # noqa: BLE001 - a process going away writes what it can
        pass


def hop_fields(fs, start: tuple[str, str], trail: list[tuple[str, str]], fresh: bool, end: bool,
               errored: bool, stack=()) -> Counter:
    """The counts one hop adds: ``(flow, state, outcome)`` -> n, from where the hop began (``start``),
    the states it passed through (``trail``, in order) and how it finished. A dialog that ends (or fails)
    inside a sub-flow ends (fails) at the calling states on ``stack`` too."""
    out: Counter = Counter()
    if fresh:
        out[(*start, "in")] += 1
    prev = start
    for cur in trail:
        if cur == prev:
            continue
        returned = _kind(fs, prev) == "return" and cur[0] != prev[0]
        if cur[0] == prev[0]:
            out[(*prev, ">" + cur[1])] += 1
        if not returned:                     # back in the caller's flow state: it was entered when called
            out[(*cur, "in")] += 1
        prev = cur
    if errored or end:
        for where in [*(tuple(f) for f in stack), prev]:
            out[(*where, "err" if errored else "end")] += 1
    return out


def _kind(fs, where: tuple[str, str]) -> str | None:
    cf = fs.flows.get(where[0])
    st = cf.spec.states.get(where[1]) if cf else None
    return st.kind if st else None


@dataclass
class StateCounts:
    entered: int = 0
    ended: int = 0
    errored: int = 0
    to: dict[str, int] = field(default_factory=dict)     # next state -> count
    waits: bool = False

    @property
    def went_on(self) -> int:
        return sum(self.to.values())

    @property
    def timed_out(self) -> int:
        """Entered a state that waits for input and never left it (no hop after): the caller went away."""
        return max(0, self.entered - self.went_on - self.ended - self.errored) if self.waits else 0


def read_counts(redis, fs, flow: str, days: int = 7, version: str | None = None,
                today: dt.date | None = None) -> dict[str, StateCounts]:
    """The counts of ``flow`` in flows ``version`` (default: ``fs``'s) over the last ``days`` days (UTC)."""
    PENDING.flush()
    version = version or fs.version
    today = today or dt.datetime.now(dt.timezone.utc).date()
    cf = fs.flows[flow]
    out = {name: StateCounts(waits=st.waits_for_input) for name, st in cf.spec.states.items()}
    pipe = redis.pipeline(transaction=False)
    for i in range(days):
        pipe.hgetall(day_key(version, (today - dt.timedelta(days=i)).isoformat()))
    for h in pipe.execute():
        for k, v in h.items():
            k = k.decode() if isinstance(k, bytes) else k
            f, _, rest = k.partition("|")
            state, _, outcome = rest.partition("|")
            if f != flow or state not in out:
                continue
            c, n = out[state], int(v)
            if outcome == "in":
                c.entered += n
            elif outcome == "end":
                c.ended += n
            elif outcome == "err":
                c.errored += n
            elif outcome.startswith(">"):
                c.to[outcome[1:]] = c.to.get(outcome[1:], 0) + n
    return out


def funnel(fs, flow: str, counts: dict[str, StateCounts]) -> list[tuple[str, StateCounts]]:
    """The states in the order a caller meets them (breadth first from the start), with their counts."""
    from convo.flowlang.graph import layers

    return [(name, counts[name]) for layer in layers(fs.flows[flow]) for name in layer]


def totals(redis) -> list[tuple[str, str, str, int]]:
    """``(flow, state, outcome, count)`` for ``/metrics``."""
    PENDING.flush()
    rows = []
    for k, v in (redis.hgetall(TOTAL_KEY) or {}).items():
        k = k.decode() if isinstance(k, bytes) else k
        parts = k.split("|")
        if len(parts) == 3:
            rows.append((*parts, int(v)))
    return sorted(rows)


def versions(redis) -> list[tuple[str, str]]:
    """``(flows version, last day it was counted)``, newest first."""
    PENDING.flush()
    rows = [(k.decode() if isinstance(k, bytes) else k, v.decode() if isinstance(v, bytes) else v)
            for k, v in (redis.hgetall(VERSIONS_KEY) or {}).items()]
    return sorted(rows, key=lambda r: r[1], reverse=True)


class FlowStateCollector:
    """``convo_flow_state_total{flow,state,outcome}``: dialogs that entered a state, went on from it, ended
    there or hit an error, since the Redis began counting (:mod:`convo.dialog.stats`), read at scrape time."""

    def __init__(self, redis):
        self.redis = redis

    def collect(self):
        from prometheus_client.core import CounterMetricFamily

        fam = CounterMetricFamily("convo_flow_state", "Dialogs per flow state by outcome (entered, next, ended, "
                                  "error)", labels=["flow", "state", "outcome"])
        try:
            rows = totals(self.redis)
        except Exception as e:  # noqa: BLE001 - the rest of /metrics still answers
            log.warning("flow state metrics unavailable: %s", str(e).splitlines()[0][:200])
            return []
        for flow, state, outcome, n in rows:
            fam.add_metric([flow, state, outcome], n)
        return [fam]
