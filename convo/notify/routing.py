"""Which gateway sends which message: the routes file, cheapest first, failover, rate limits, health.

The routes file (``CONVO_ROUTES_FILE``, YAML) names the gateways and, per destination country, which of
them may send there and at what price::

    rates: {USD: 1, KES: 0.0077, UGX: 0.00027}      # to one currency, to compare costs
    gateways:
      twilio: {type: twilio, account_sid: "${TWILIO_SID}", auth_token: "${TWILIO_TOKEN}", from: "+15005550006"}
      phone-gulu: {type: smsgate, url: "http://10.0.0.5:8080", username: u, password: "${PHONE_PASS}"}
    routes:
      - to: [UG]                                      # phonenumbers region codes
        via: [{gateway: twilio, cost: 0.05, currency: USD}, {gateway: phone-gulu, cost: 25, currency: UGX}]
      - to: "*"
        via: [{gateway: twilio, cost: 0.05, currency: USD}]

:func:`load_routes` validates it whole at start and raises :class:`RoutesError` naming the place
(``routes[0].via[1].currency: no rate for 'UGX'``). ``${NAME}`` comes from the environment. Optional,
beyond the contract above: per gateway ``max_per_second`` / ``burst`` (send rate limit) and
``failures`` / ``pause_seconds`` (health: after that many failed sends in a row the gateway is skipped for
that long, then tried again). Without a routes file: one gateway ``africastalking`` from ``CONVO_AT_*``
(or the stdout ``log`` sender when ``CONVO_AT_USERNAME`` is empty), as before.

:class:`Router` is the worker's sender. Per message: the gateway it must leave through (``via``, a reply)
first, then the country's route sorted by price converted with ``rates`` (ties keep file order); the
first route whose ``to`` lists the country wins, ``"*"`` matches any. A result with ``failover`` goes to
the next gateway at once; ``failed`` (and ``opted_out``) is final; when no gateway is left the message
is retried later (worker backoff) with every gateway's error in ``last_error``. Rate limits and health
are kept per worker process (a token bucket and a failure counter each, no Redis: N workers send at
most N x the limit).
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from gateways import GATEWAY_TYPES, gateway_class
from gateways.base import ConfigError, Gateway, OutgoingSms, SendResult

__all__ = ["Health", "Route", "Routes", "RoutesError", "Router", "TokenBucket", "Via", "country_of",
           "load_routes", "routes_from_settings"]

log = logging.getLogger("convo.notify.routing")

#: keys of a gateway entry the router reads; the rest is the gateway's own config
ROUTER_KEYS = ("type", "max_per_second", "burst", "failures", "pause_seconds")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class RoutesError(ValueError):
    """The routes file is wrong; the message says where and why."""


@dataclass(frozen=True)
class Via:
    gateway: str
    cost: Decimal  #: per segment, in ``currency``
    currency: str
    base_cost: Decimal  #: ``cost`` in the rates' common currency (what is compared)


@dataclass(frozen=True)
class Route:
    to: frozenset[str] | None  #: None: any country ("*")
    via: tuple[Via, ...]  #: cheapest first


@dataclass
class Routes:
    gateways: dict[str, Gateway]
    routes: list[Route]
    rates: dict[str, Decimal] = field(default_factory=dict)
    limits: dict[str, "TokenBucket"] = field(default_factory=dict)
    health: dict[str, "Health"] = field(default_factory=dict)
    source: str = ""  #: the file, or "CONVO_AT_*"

    def route_for(self, country: str | None) -> Route | None:
        for r in self.routes:
            if r.to is None or (country and country in r.to):
                return r
        return None

    def close(self) -> None:
        for g in self.gateways.values():
            try:
                g.close()
            except Exception:  # pragma: no cover - closing is best effort
                pass


# --------------------------------------------------------------------------- loading


def _expand(value: Any, env: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            if m.group(1) not in env:
                raise RoutesError(f"{where}: environment variable {m.group(1)} is not set")
            return env[m.group(1)]
        return _ENV.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, env, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _decimal(value: Any, where: str, *, positive: bool = False) -> Decimal:
    try:
        d = Decimal(str(value)) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else None
    except InvalidOperation:
        d = None
    if d is None or not d.is_finite() or d < 0 or (positive and d == 0):
        raise RoutesError(f"{where}: {value!r} is not a {'positive ' if positive else ''}number")
    return d


def _regions() -> frozenset[str]:
    import phonenumbers

    return frozenset(phonenumbers.SUPPORTED_REGIONS)


def parse_routes(doc: Any, *, env: Mapping[str, str] | None = None, region: str = "KE",
                 clock: Callable[[], float] = time.monotonic, source: str = "routes file") -> Routes:
    """Validate a loaded routes document and build its gateways; :class:`RoutesError` on the first problem."""
    env = os.environ if env is None else env
    if not isinstance(doc, dict):
        raise RoutesError("the routes file must be a mapping with 'rates', 'gateways' and 'routes'")
    unknown = set(doc) - {"rates", "gateways", "routes"}
    if unknown:
        raise RoutesError(f"unknown top-level key(s) {', '.join(sorted(map(str, unknown)))} "
                          "(expected rates, gateways, routes)")
    rates_doc = doc.get("rates") or {}
    if not isinstance(rates_doc, dict):
        raise RoutesError("rates: must be a mapping like {USD: 1, KES: 0.0077}")
    rates = {}
    for cur, v in rates_doc.items():
        if not (isinstance(cur, str) and len(cur) == 3 and cur.isascii() and cur.isalpha()):
            raise RoutesError(f"rates: {cur!r} is not a 3-letter currency code")
        rates[cur.upper()] = _decimal(v, f"rates.{cur}", positive=True)

    gw_doc = doc.get("gateways")
    if not isinstance(gw_doc, dict) or not gw_doc:
        raise RoutesError("gateways: name at least one gateway, e.g. {africastalking: {type: africastalking, ...}}")
    gateways: dict[str, Gateway] = {}
    limits: dict[str, TokenBucket] = {}
    health: dict[str, Health] = {}
    for name, conf in gw_doc.items():
        where = f"gateways.{name}"
        if not (isinstance(name, str) and re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", name)):
            raise RoutesError(f"{where}: a gateway name is 1-32 of a-z, 0-9, '-', '_' (it is part of its URLs)")
        if not isinstance(conf, dict):
            raise RoutesError(f"{where}: must be a mapping with at least 'type'")
        conf = _expand(conf, env, where)
        type_ = conf.get("type")
        if type_ not in GATEWAY_TYPES:
            raise RoutesError(f"{where}.type: unknown gateway type {type_!r} "
                              f"(known: {', '.join(sorted(GATEWAY_TYPES))})")
        try:
            cls = gateway_class(type_)
        except (ImportError, AttributeError) as exc:
            raise RoutesError(f"{where}.type: gateway type {type_!r} is not available here: {exc}") from None
        own = {k: v for k, v in conf.items() if k not in ROUTER_KEYS}
        try:
            gateways[name] = cls(name, own, region=region)
        except ConfigError as exc:
            raise RoutesError(f"{where}: {exc}") from None
        if conf.get("max_per_second") is not None:
            rate = _decimal(conf["max_per_second"], f"{where}.max_per_second", positive=True)
            burst = _decimal(conf.get("burst", max(1, rate)), f"{where}.burst", positive=True)
            limits[name] = TokenBucket(float(rate), float(burst), clock=clock)
        health[name] = Health(int(_decimal(conf.get("failures", 5), f"{where}.failures", positive=True)),
                              float(_decimal(conf.get("pause_seconds", 60), f"{where}.pause_seconds")), clock=clock)

    routes_doc = doc.get("routes")
    if not isinstance(routes_doc, list) or not routes_doc:
        raise RoutesError("routes: list at least one route, e.g. [{to: '*', via: [{gateway: ..., cost: ..., "
                          "currency: ...}]}]")
    regions = _regions()
    routes = []
    for i, r in enumerate(routes_doc):
        where = f"routes[{i}]"
        if not isinstance(r, dict) or "to" not in r or "via" not in r:
            raise RoutesError(f"{where}: needs 'to' (region codes or \"*\") and 'via'")
        to = r["to"]
        if to == "*":
            countries = None
        else:
            if isinstance(to, str):
                to = [to]
            if not isinstance(to, list) or not to:
                raise RoutesError(f"{where}.to: a list of region codes like [UG, KE], or \"*\"")
            for code in to:
                if not isinstance(code, str) or code.upper() not in regions or code != code.upper():
                    raise RoutesError(f"{where}.to: {code!r} is not a region code (ISO 3166 alpha-2 in capitals "
                                      "as phonenumbers knows them, e.g. UG, KE, GB)")
            countries = frozenset(to)
        via_doc = r["via"]
        if not isinstance(via_doc, list) or not via_doc:
            raise RoutesError(f"{where}.via: list at least one {{gateway, cost, currency}}")
        vias = []
        for j, v in enumerate(via_doc):
            w = f"{where}.via[{j}]"
            if not isinstance(v, dict):
                raise RoutesError(f"{w}: must be {{gateway: NAME, cost: NUMBER, currency: CODE}}")
            g = v.get("gateway")
            if g not in gateways:
                raise RoutesError(f"{w}.gateway: unknown gateway {g!r} (configured: {', '.join(sorted(gateways))})")
            if "sms_out" not in gateways[g].capabilities:
                raise RoutesError(f"{w}.gateway: {g!r} (type {gateways[g].type}) cannot send SMS")
            if "cost" not in v:
                raise RoutesError(f"{w}.cost: missing (price of one SMS segment)")
            cost = _decimal(v["cost"], f"{w}.cost")
            cur = v.get("currency")
            if not isinstance(cur, str) or not cur.strip():
                raise RoutesError(f"{w}.currency: missing (e.g. USD)")
            cur = cur.strip().upper()
            if cur not in rates:
                raise RoutesError(f"{w}.currency: no rate for {cur!r} in rates "
                                  f"(rates has: {', '.join(sorted(rates)) or 'nothing'})")
            vias.append(Via(g, cost, cur, cost * rates[cur]))
        vias.sort(key=lambda x: x.base_cost)  # stable: equal prices keep the file's order
        routes.append(Route(countries, tuple(vias)))
    return Routes(gateways, routes, rates, limits, health, source)


def load_routes(path: str | os.PathLike, *, env: Mapping[str, str] | None = None, region: str = "KE",
                clock: Callable[[], float] = time.monotonic) -> Routes:
    """Read and validate the routes file; :class:`RoutesError` starting with the file name when wrong."""
    import yaml

    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RoutesError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise RoutesError(f"{p}: not YAML: {exc}") from None
    try:
        return parse_routes(doc, env=env, region=region, clock=clock, source=str(p))
    except RoutesError as exc:
        raise RoutesError(f"{p}: {exc}") from None


def routes_from_settings(settings, *, env: Mapping[str, str] | None = None,
                         clock: Callable[[], float] = time.monotonic) -> Routes:
    """The routes file when ``settings.routes_file`` is set, else ``africastalking`` from ``CONVO_AT_*``."""
    region = getattr(settings, "default_region", "KE")
    path = getattr(settings, "routes_file", "")
    if path:
        return load_routes(path, env=env, region=region, clock=clock)
    from gateways.africastalking import AfricasTalkingGateway
    from gateways.base import LogSender

    if getattr(settings, "at_username", ""):
        at = AfricasTalkingGateway.from_settings(settings)
    else:  # receives AT's callbacks, sends nothing: prints (the demo)
        at = AfricasTalkingGateway("africastalking", {}, region=region, sender=LogSender())
    via = Via("africastalking", Decimal(0), "", Decimal(0))
    return Routes({"africastalking": at}, [Route(None, (via,))], {}, {},
                  {"africastalking": Health(5, 0.0, clock=clock)}, "CONVO_AT_*")


def country_of(phone: str) -> str | None:
    """Region code of an E.164 number (``+256...`` -> ``UG``), None when phonenumbers cannot tell."""
    import phonenumbers

    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(phone, None)) or None
    except phonenumbers.NumberParseException:
        return None


# --------------------------------------------------------------------------- limits and health


class TokenBucket:
    """``rate`` sends per second on average, ``burst`` at once; thread-safe, injectable clock.

    :meth:`reserve` takes ``n`` tokens now and returns how long to wait before using them (0 = now), or
    ``None`` without taking anything when that wait would exceed ``max_wait``.
    """

    def __init__(self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = float(rate), float(burst), clock
        self.tokens = self.burst
        self.at = clock()
        self._lock = threading.Lock()

    def reserve(self, n: int = 1, max_wait: float = 0.0) -> float | None:
        with self._lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now
            wait = max(0.0, (n - self.tokens) / self.rate)
            if wait > max_wait:
                return None
            self.tokens -= n
            return wait


class Health:
    """``failures`` failed sends in a row pause the gateway for ``pause_seconds``; then one try decides."""

    def __init__(self, failures: int = 5, pause_seconds: float = 60.0, *, clock: Callable[[], float] = time.monotonic):
        self.failures, self.pause, self.clock = max(1, int(failures)), float(pause_seconds), clock
        self.in_a_row = 0
        self.paused_until = 0.0
        self.last_error = ""
        self._lock = threading.Lock()

    def available(self) -> bool:
        return self.clock() >= self.paused_until

    def ok(self) -> None:
        with self._lock:
            self.in_a_row, self.paused_until = 0, 0.0

    def failed(self, error: str) -> bool:
        """Count a failed send; True when this one paused the gateway."""
        with self._lock:
            self.in_a_row += 1
            self.last_error = error
            if self.in_a_row >= self.failures and self.pause > 0:
                self.paused_until = self.clock() + self.pause
                self.in_a_row = self.failures - 1  # after the pause, one more failure pauses again
                return True
            return False

    def state(self) -> str:
        return "paused" if not self.available() else "ok"


# --------------------------------------------------------------------------- the router


class Router:
    """The outbox worker's sender over every configured gateway (see the module docstring).

    ``max_wait`` is how long a send may wait for a rate-limited gateway before the next one is tried.
    """

    name = "router"

    def __init__(self, routes: Routes, *, max_wait: float = 2.0, sleep: Callable[[float], None] = time.sleep):
        self.routes = routes
        self.max_wait = float(max_wait)
        self.sleep = sleep
        outs = [g for g in routes.gateways.values() if "sms_out" in g.capabilities]
        slowest = max(outs, key=lambda g: _seconds(getattr(g, "timeout", 0)), default=None)
        self.timeout = _seconds(getattr(slowest, "timeout", 0))
        #: the gateway whose timeout the worker's lease must cover (named in its refusal to start)
        self.timeout_gateway = slowest.name if slowest is not None else self.name
        caps = [getattr(getattr(g, "sender", g), "max_recipients", 1) for g in outs]
        self.max_recipients = max([c for c in caps if isinstance(c, int)] or [1])

    @property
    def gateways(self) -> dict[str, Gateway]:
        return self.routes.gateways

    def close(self) -> None:
        self.routes.close()

    def candidates(self, m: OutgoingSms, country: str | None) -> list[tuple[str, Via | None]]:
        route = self.routes.route_for(country)
        vias = list(route.via) if route else []
        out: list[tuple[str, Via | None]] = []
        if m.via:
            pinned = self.gateways.get(m.via)
            if pinned is not None and "sms_out" in pinned.capabilities:
                out.append((m.via, next((v for v in vias if v.gateway == m.via), None)))
            if m.link_id:  # a premium reply (linkId) only its own gateway can send
                return out
        out += [(v.gateway, v) for v in vias if v.gateway != m.via]
        return out

    def send(self, messages: Sequence[OutgoingSms], *, deadline: float | None = None) -> list[SendResult]:
        n = len(messages)
        results: list[SendResult | None] = [None] * n
        countries = [country_of(m.to) for m in messages]
        todo = {i: self.candidates(m, countries[i]) for i, m in enumerate(messages)}
        notes: dict[int, list[str]] = {i: [] for i in range(n)}
        last: dict[int, SendResult] = {}
        while todo:
            groups: dict[str, list[tuple[int, Via | None]]] = {}
            for i, cands in list(todo.items()):
                while cands:
                    name, via = cands.pop(0)
                    if not self.routes.health[name].available():
                        notes[i].append(f"{name}: paused after {self.routes.health[name].failures} failed sends")
                        continue
                    groups.setdefault(name, []).append((i, via))
                    break
                else:
                    del todo[i]
                    prev = last.get(i)
                    why = "; ".join(notes[i]) or f"no route to {countries[i] or messages[i].to}"
                    results[i] = replace(prev, error=why, failover=False) if prev else \
                        SendResult.retry(why, country=countries[i])
            for name, items in groups.items():
                items = self._limit(name, items, notes, todo, deadline)
                if not items:
                    continue
                got = self._call(name, [messages[i] for i, _ in items], deadline)
                for (i, via), r in zip(items, got):
                    r = replace(r, gateway=name, country=countries[i])
                    if r.status == "sent":
                        segs = r.parts or messages[i].segments or 1
                        if via is not None and via.currency:  # no routes file: no price
                            r = replace(r, cost_amount=via.cost * segs, cost_currency=via.currency)
                        if notes[i]:
                            r = replace(r, error=f"sent via {name} after: " + "; ".join(notes[i]))
                    if r.status == "sent" or not r.failover or r.opted_out or not todo.get(i):
                        todo.pop(i, None)
                        if r.status != "sent" and notes[i]:
                            r = replace(r, error="; ".join(notes[i] + [f"{name}: {r.error}"]))
                        results[i] = r
                    else:
                        log.info("outbox %s: %s failed (%s); trying the route's next gateway", messages[i].id,
                                 name, (r.error or "")[:200])
                        notes[i].append(f"{name}: {r.error}")
                        last[i] = r
        return results  # type: ignore[return-value]

    def _limit(self, name, items, notes, todo, deadline):
        """Items that may go to ``name`` now (waiting up to ``max_wait`` for its rate limit)."""
        bucket = self.routes.limits.get(name)
        if bucket is None:
            return items
        room = self.max_wait
        if deadline is not None:
            room = min(room, max(0.0, deadline - time.monotonic() - self.timeout))
        keep, wait = [], 0.0
        for i, via in items:
            w = bucket.reserve(1, room)
            if w is None:
                notes[i].append(f"{name}: over its rate limit")
                continue  # stays in todo with its next candidates
            keep.append((i, via))
            wait = max(wait, w)
        if wait > 0:
            self.sleep(wait)
        return keep

    def _call(self, name: str, msgs: list[OutgoingSms], deadline: float | None) -> list[SendResult]:
        gw, health = self.gateways[name], self.routes.health[name]
        try:
            got = list(gw.send(msgs, deadline=deadline))
            if len(got) != len(msgs):
                raise RuntimeError(f"{len(got)} results for {len(msgs)} messages")
        except Exception as exc:  # a broken gateway must not stop the others
            got = [SendResult.retry(f"{type(exc).__name__}: {str(exc)[:300]}", failover=True)] * len(msgs)
        if any(r.status == "sent" for r in got) or not all(r.failover for r in got):
            health.ok()
        elif health.failed(got[0].error or ""):
            log.warning("gateway %s paused for %gs after %d failed sends in a row; last: %s", name, health.pause,
                        health.failures, (got[0].error or "")[:200])
        return got

    def state(self) -> dict[str, str]:
        """``{gateway: "ok" | "paused"}`` for /healthz and logs."""
        return {n: h.state() for n, h in self.routes.health.items()}


def _seconds(t: Any) -> float:
    if isinstance(t, (tuple, list)):
        return float(sum(float(x) for x in t if x is not None))
    return float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else 0.0
