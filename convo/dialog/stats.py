"""Where callers drop off: per flows version, flow, state and day, how many dialogs entered a state,
went on to each next state, ended there or hit an error.

Counted on the hop path at no extra Redis command: the engine hands :func:`hop_fields`' result to
:meth:`convo.dialog.sessions.SessionStore.save`, which runs :data:`LUA` inside the session write's own script (one
command, one round trip, as before). Nothing about the caller is kept: no phone number, no input, no
session id; only flow and state names and counts.

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

import logging

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

PREFIX = "convo:{stats}:"
TOTAL_KEY = PREFIX + "total"
VERSIONS_KEY = PREFIX + "versions"

#: Run by :meth:`convo.dialog.sessions.SessionStore.save` right after the session write, in the same script.
#: KEYS[3..5]: day hash, totals hash, versions hash. ARGV[4..7]: ttl, version, day, the fields
#: ``flow|state|outcome`` joined by newlines (one argument: few arguments keep the cost per hop small)
LUA = """
local total = {['in'] = 'entered', ['end'] = 'ended', ['err'] = 'error'}
for f in string.gmatch(ARGV[7], '[^\\n]+') do
  redis.call('hincrby', KEYS[3], f, 1)
  local head, outcome = string.match(f, '^(.*|)([^|]*)$')
  redis.call('hincrby', KEYS[4], head .. (total[outcome] or 'next'), 1)
end
redis.call('expire', KEYS[3], ARGV[4])
redis.call('hset', KEYS[5], ARGV[5], ARGV[6])
return saved
"""


def day_key(version: str, day: str) -> str:
    return f"{PREFIX}d:{version}:{day}"


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


def script_call(version: str, counts: Counter, days: int, today: dt.date | None = None) -> tuple[list, list]:
    """(keys, args) of :data:`LUA` for ``counts``."""
    day = (today or dt.datetime.now(dt.timezone.utc).date()).isoformat()
    fields = "\n".join(f"{flow}|{state}|{outcome}" for (flow, state, outcome), n in counts.items() for _ in range(n))
    return [day_key(version, day), TOTAL_KEY, VERSIONS_KEY], [days * 86400, version, day, fields]


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
    rows = []
    for k, v in (redis.hgetall(TOTAL_KEY) or {}).items():
        k = k.decode() if isinstance(k, bytes) else k
        parts = k.split("|")
        if len(parts) == 3:
            rows.append((*parts, int(v)))
    return sorted(rows)


def versions(redis) -> list[tuple[str, str]]:
    """``(flows version, last day it was counted)``, newest first."""
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
