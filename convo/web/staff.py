"""Staff API (``/api/...``): bearer token, staff user named, every call audited.

Every request under ``/api/`` (this blueprint's and any other's) needs
``Authorization: Bearer <CONVO_STAFF_TOKEN>`` (compared in constant time) and
``X-Staff-User: <who>``; without a configured token the staff API refuses
every call. Every call, refused or not, is written to the audit log: who
(``staff:<user>``, or ``unauthenticated``), what (``staff.<endpoint>``,
method, path), when, and the HTTP status.

    curl -X POST https://<host>/api/subscribers/+254700000101/pin-reset \\
         -H "Authorization: Bearer $CONVO_STAFF_TOKEN" -H "X-Staff-User: alice" \\
         -H "Content-Type: application/json" -d '{"reason": "forgot PIN, ID checked at branch"}'

``{"unlock_only": true}`` lifts a lock and keeps the PIN; without it the PIN is
forgotten and the client chooses a new one the next time one is needed.
"""
from __future__ import annotations

import hmac
import logging
import re

from flask import Blueprint, Flask, Response, g, jsonify, request

from convo import subscribers
from convo.web import BadRequest, services

log = logging.getLogger(__name__)
bp = Blueprint("staff", __name__, url_prefix="/api")

_USER_RE = re.compile(r"^[\w.@+\- ]{1,100}$")


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
        return _deny(403, "the staff API is disabled: set CONVO_STAFF_TOKEN")
    auth = request.headers.get("Authorization", "")
    scheme, _, given = auth.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        return _deny(401, "missing or wrong bearer token")
    user = (request.headers.get("X-Staff-User") or "").strip()
    if not _USER_RE.match(user):
        return _deny(400, "header X-Staff-User must name the staff member (for the audit log)")
    g.staff_user = user
    return None


def _audit_call(response: Response) -> Response:
    """after_request for every ``/api/`` path: one audit row per call."""
    if not request.path.startswith("/api/"):
        return response
    user = getattr(g, "staff_user", None)
    try:
        subscribers.audit(services().db, f"staff.{request.endpoint or 'unknown'}"[:60],
                          actor=f"staff:{user}" if user else "unauthenticated", channel="api",
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
    from convo.phone import InvalidPhone, normalize

    try:
        phone = normalize(raw, services().settings.default_region)
    except InvalidPhone:
        raise BadRequest("not a phone number") from None
    g.audit_phone = phone
    return phone


def _describe(st: subscribers.Status) -> dict:
    return {"pin_set": st.state in ("set", "locked") and st.pin_set_at is not None, "locked": st.state == "locked",
            "locked_until": st.locked_until.isoformat() if st.locked_until else None,
            "failed_attempts": st.failed_attempts,
            "pin_set_at": st.pin_set_at.isoformat() if st.pin_set_at else None}


@bp.get("/subscribers/<path:phone>")
def subscriber_status(phone: str):
    """PIN state of one subscriber (never the PIN or its hash)."""
    s = services()
    e164 = _phone(phone)
    st = subscribers.status(s.db, e164)
    g.audit_client = st.client_id
    return jsonify({"phone": e164, **_describe(st)})


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
    before = subscribers.status(s.db, e164)
    g.audit_client = before.client_id
    if not subscribers.reset(s.db, e164, unlock_only=unlock_only):
        return _deny(404, "no subscriber with this phone number")
    subscribers.audit(s.db, "pin.unlocked" if unlock_only else "pin.reset", actor=f"staff:{g.staff_user}",
                      channel="api", phone=e164, client_id=before.client_id, outcome="ok",
                      detail={"reason": (reason or "")[:200], "was_locked": before.state == "locked"})
    return jsonify({"phone": e164, "reset": "unlock" if unlock_only else "pin",
                    **_describe(subscribers.status(s.db, e164))})
