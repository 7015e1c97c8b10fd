"""Staff API (``/api/...``): bearer token, staff user named, every call audited.

Every request under ``/api/`` (this blueprint's and any other's) needs
``Authorization: Bearer <CONVO_STAFF_TOKEN>`` (compared in constant time) and
``X-Staff-User: <who>``; without a configured token the staff API refuses
every call. Every authenticated call is written to the audit log: who
(``staff:<user>``), what (``staff.<endpoint>``, method, path), when, and the
HTTP status. Refused calls (no token, wrong token, no user, throttled) are not
audit rows: they are counted (``convo_staff_auth_refused_total`` on
``/metrics``) and logged in aggregate, at most one line a minute.

Wrong tokens are throttled (:func:`throttled`): after
``CONVO_STAFF_AUTH_FAILURES`` wrong tokens from one address, or naming one
staff user, within ``CONVO_STAFF_AUTH_WINDOW_SECONDS``, every further attempt
from that address or for that user, right or wrong, gets 429 with
``Retry-After`` until the window ends. The console's sign-in form (Mifos X user
and password, :mod:`convo.web.console`) shares the counters: a wrong password
counts like a wrong token.

    curl -X POST https://<host>/api/subscribers/+254700000101/pin-reset \\
         -H "Authorization: Bearer $CONVO_STAFF_TOKEN" -H "X-Staff-User: alice" \\
         -H "Content-Type: application/json" \\
         -d '{"client_id": 1, "reason": "forgot PIN, ID checked at branch"}'

A PIN belongs to a (phone, Mifos X client) pair; the lock belongs to the phone.
A reset forgets the PIN of the client named by ``client_id`` only (required:
on a shared phone the others keep theirs) and unlocks the phone; the client
chooses a new PIN the next time one is needed. ``{"unlock_only": true}`` lifts
the phone's lock and keeps every PIN (no ``client_id`` needed).
"""
from __future__ import annotations

import hmac
import logging
import re
import threading
import time
from collections import Counter as Tally
from typing import TYPE_CHECKING, cast

from flask import Blueprint, Flask, Response, g, jsonify, request
from prometheus_client import Counter

from convo.store import subscribers
from convo.web import BadRequest, services

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)
bp = Blueprint("staff", __name__, url_prefix="/api")

_USER_RE = re.compile(r"^[\w.@+\- ]{1,100}$")
REFUSED = Counter("convo_staff_auth_refused_total", "Staff API calls and console sign-ins refused",
                  ["channel", "reason"])


# --------------------------------------------------------------------------- throttling, refusals
def caller_address() -> str:
    """The caller's address for throttling (``CONVO_TRUSTED_PROXIES`` as for the callback allow-list)."""
    from convo.security import client_ip

    return client_ip(request.remote_addr, request.headers.get("X-Forwarded-For"),
                     services().settings.trusted_proxies) or "?"


def _keys(address: str, user: str | None) -> list[str]:
    window = max(1, services().settings.staff_auth_window_seconds)
    n = int(time.time() // window)
    keys = [f"convo:staff-auth:{{ip:{address[:64]}}}:{n}"]
    if user:
        keys.append(f"convo:staff-auth:{{user:{user[:100].lower()}}}:{n}")
    return keys


def throttled(address: str, user: str | None) -> int | None:
    """Seconds until ``address`` / ``user`` may try again, or None when neither is over the limit."""
    st = services().settings
    if st.staff_auth_failures <= 0:
        return None
    pipe = cast("Redis", services().redis).pipeline(transaction=False)  # Services.redis is typed object
    for k in _keys(address, user):
        pipe.get(k)
    if any(int(c or 0) >= st.staff_auth_failures for c in pipe.execute()):
        window = max(1, st.staff_auth_window_seconds)
        return int(window - time.time() % window) + 1
    return None


def wrong_token(address: str, user: str | None, channel: str, reason: str = "wrong_token") -> None:
    """Count one wrong token (or console password) against ``address`` and ``user``; say so once when
    either reaches the limit."""
    st = services().settings
    refused(channel, reason)
    if st.staff_auth_failures <= 0:
        return
    pipe = cast("Redis", services().redis).pipeline(transaction=False)  # Services.redis is typed object
    keys = _keys(address, user)
    for k in keys:
        pipe.incr(k)
        pipe.expire(k, st.staff_auth_window_seconds + 60)
    counts = pipe.execute()[::2]
    for k, c in zip(keys, counts):
        if int(c) == st.staff_auth_failures:
            who = k.split("{", 1)[1].split("}", 1)[0]
            log.warning("staff access: %s reached %d wrong tokens; refused until the window of %ds ends",
                        who, c, st.staff_auth_window_seconds)


class _RefusalLog:
    """Refused calls logged in aggregate: the first at once, then one line a minute at most."""

    every = 60.0

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: Tally = Tally()
        self._since = 0.0

    def note(self, channel: str, reason: str) -> None:
        with self._lock:
            self._counts[f"{channel}/{reason}"] += 1
            now = time.monotonic()
            if now - self._since < self.every:
                return
            counts, self._counts, since, self._since = self._counts, Tally(), self._since, now
        span = f"in the last {int(now - since)}s" if since else "since start"
        log.warning("staff access: %d refused %s (%s)", sum(counts.values()), span,
                    ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))


_refusals = _RefusalLog()


def refused(channel: str, reason: str) -> None:
    """Count a refused staff call or sign-in (``/metrics``) and log it in aggregate; never an audit row."""
    REFUSED.labels(channel, reason).inc()
    _refusals.note(channel, reason)


def _deny(status: int, reason: str) -> Response:
    r = jsonify({"error": reason})
    r.status_code = status
    if status == 401:
        r.headers["WWW-Authenticate"] = 'Bearer realm="convo staff API"'
    return r


def _guard():
    """before_request for every ``/api/`` path: bearer token and staff user."""
    if not request.path.startswith("/api/"):
        return None
    g.staff_user = None
    expected = services().settings.staff_token
    if not expected:
        refused("api", "disabled")
        return _deny(403, "the staff API is disabled: set CONVO_STAFF_TOKEN")
    user = (request.headers.get("X-Staff-User") or "").strip()
    named = user if _USER_RE.match(user) else None
    address = caller_address()
    wait = throttled(address, named)
    if wait:
        refused("api", "throttled")
        r = _deny(429, "too many wrong tokens from this address or for this user; try again later")
        r.headers["Retry-After"] = str(wait)
        return r
    auth = request.headers.get("Authorization", "")
    scheme, _, given = auth.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        wrong_token(address, named, "api")
        return _deny(401, "missing or wrong bearer token")
    if not named:
        refused("api", "no_user")
        return _deny(400, "header X-Staff-User must name the staff member (for the audit log)")
    g.staff_user = user
    return None


def _audit_call(response: Response) -> Response:
    """after_request for every ``/api/`` path: one audit row per authenticated call (refusals: :func:`refused`)."""
    if not request.path.startswith("/api/"):
        return response
    user = getattr(g, "staff_user", None)
    if not user:
        return response
    try:
        subscribers.audit(services().db, f"staff.{request.endpoint or 'unknown'}"[:60],
                          actor=f"staff:{user}", channel="api",
                          phone=getattr(g, "audit_phone", None), client_id=getattr(g, "audit_client", None),
                          outcome=str(response.status_code),
                          detail={"method": request.method, "path": request.path[:200],
                                  "ip": request.remote_addr})
    except Exception as e:  # noqa: BLE001 - say so, loudly; the call itself already happened
        log.error("staff API audit write failed: %s", type(e).__name__)
    return response


def install(app: Flask) -> None:
    app.before_request(_guard)
    app.after_request(_audit_call)
    app.register_blueprint(bp)


def _phone(raw: str) -> str:
    from convo.text.phone import InvalidPhone, normalize

    try:
        phone = normalize(raw, services().settings.default_region)
    except InvalidPhone:
        raise BadRequest("not a phone number") from None
    g.audit_phone = phone
    return phone


def _client_id(value, required: bool) -> int | None:
    if value is None and not required:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2 ** 63:
        raise BadRequest("'client_id' must be the Mifos X client id whose PIN this is (a positive number)")
    g.audit_client = value
    return value


def _describe(st: subscribers.Status) -> dict:
    """The phone's lock, and whose PINs are set (of ``st.client_id``'s when given, else of any client)."""
    return {"pin_set": st.pin_set_at is not None, "locked": st.state == "locked",
            "locked_until": st.locked_until.isoformat() if st.locked_until else None,
            "failed_attempts": st.failed_attempts,
            "pin_set_at": st.pin_set_at.isoformat() if st.pin_set_at else None,
            "clients": [{"client_id": cid, "pin_set_at": at.isoformat() if at else None} for cid, at in st.clients]}


@bp.get("/subscribers/<path:phone>")
def subscriber_status(phone: str):
    """The phone's PIN lock and which clients have a PIN on it (never a PIN or its hash);
    ``?client_id=N``: ``pin_set`` and ``pin_set_at`` of that client."""
    s = services()
    e164 = _phone(phone)
    cid = _client_id(request.args.get("client_id"), required=False)
    st = subscribers.status(s.db, e164, cid)
    return jsonify({"phone": e164, **({"client_id": cid} if cid else {}), **_describe(st)})


@bp.post("/subscribers/<path:phone>/pin-reset")
def pin_reset(phone: str):
    s = services()
    e164 = _phone(phone)
    body = request.get_json(silent=True) if request.data else {}
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unlock_only = body.get("unlock_only", False)
    if not isinstance(unlock_only, bool):
        raise BadRequest("'unlock_only' must be true or false")
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise BadRequest("'reason' must be text")
    cid = _client_id(body.get("client_id"), required=not unlock_only)
    before = subscribers.status(s.db, e164, cid)
    if not subscribers.reset(s.db, e164, client_id=None if unlock_only else cid, unlock_only=unlock_only):
        return _deny(404, "no subscriber with this phone number" if unlock_only
                     else "no subscriber with this phone number and client")
    subscribers.audit(s.db, "pin.unlocked" if unlock_only else "pin.reset", actor=f"staff:{g.staff_user}",
                      channel="api", phone=e164, client_id=cid, outcome="ok",
                      detail={"reason": (reason or "")[:200], "was_locked": before.state == "locked"})
    return jsonify({"phone": e164, **({"client_id": cid} if cid else {}), "reset": "unlock" if unlock_only else "pin",
                    **_describe(subscribers.status(s.db, e164, cid))})
