"""Notifications on the web: the staff API for client messages, the console page, Fineract hooks.

Staff API (bearer token + ``X-Staff-User``, audited: the ``/api/`` guard of
:mod:`convo.web.staff`; checked here too when that guard is not installed)::

    POST /api/clients/<clientId>/messages   {"text": "..."} or {"template": "branch_visit", "variables": {...}}
                                            optional "idempotency_key" (a retried POST sends once)
    GET  /api/clients/<clientId>/messages   what was sent: status, segments, cost, who sent it

The console (``/console/...``, staff sign in with their own Mifos X user) is :mod:`convo.web.console`;
its send form goes through :func:`send_staff_message` like the API.

Fineract hooks: ``POST /hooks/fineract/<CONVO_CALLBACK_TOKEN>/`` (see :mod:`convo.notify.receipts`). The token
is in the path because Fineract sends hooks with Retrofit, which drops a query string.
"""
from __future__ import annotations

import hmac
import json
import re
import uuid

import sqlalchemy as sa
from flask import Blueprint, Flask, Response, abort, g, jsonify, request

from convo.web import BadRequest, services

api = Blueprint("notify_api", __name__, url_prefix="/api")
hooks = Blueprint("hooks", __name__, url_prefix="/hooks")

_USER_RE = re.compile(r"^[\w.@+\- ]{1,100}$")
MAX_TEXT = 918  # 6 GSM-7 segments: free text, and a template once its variables are filled in
MAX_VARIABLE = 100  # characters of one template variable (a date, a place, an amount)
MAX_VARIABLES = 20


# --------------------------------------------------------------------------- shared


def _staff_user_from_bearer() -> str | None:
    expected = services().settings.staff_token
    if not expected:
        return None
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        return None
    user = (request.headers.get("X-Staff-User") or "").strip()
    return user if _USER_RE.match(user) else None


def _require_api_staff() -> str:
    user = getattr(g, "staff_user", None) or _staff_user_from_bearer()
    if not user:
        abort(Response(json.dumps({"error": "missing or wrong bearer token / X-Staff-User"}), 401,
                       mimetype="application/json", headers={"WWW-Authenticate": 'Bearer realm="convo staff API"'}))
    return user


def _message_rows(client_id: int, limit: int = 100) -> list[dict]:
    from convo.store.db import OutboxMessage
    from convo.store.notify_models import ClientMessage

    o, m = OutboxMessage.__table__, ClientMessage.__table__
    with services().db.connect() as c:
        rows = c.execute(
            sa.select(m.c.id, m.c.kind, m.c.template, m.c.sent_by, m.c.created_at, o.c.id.label("outbox_id"),
                      o.c.recipient, o.c.body, o.c.status, o.c.encoding, o.c.chars, o.c.segments, o.c.cost,
                      o.c.sent_at, o.c.final_at, o.c.last_error, o.c.next_attempt_at)
            .join(o, o.c.id == m.c.outbox_id).where(m.c.client_id == client_id)
            .order_by(m.c.id.desc()).limit(limit)).all()
    out = []
    for r in rows:
        d = r._asdict()
        for k in ("created_at", "sent_at", "final_at", "next_attempt_at"):
            d[k] = d[k].isoformat() if d[k] else None
        out.append(d)
    return out


def send_staff_message(client_id: int, user: str, body: object) -> tuple[dict, int]:
    """Validate a staff message, look the client up in Mifos X and enqueue it."""
    from convo.mifos.client import MifosError, MifosNotFound, MifosUnavailable
    from convo.mifos.notify_reads import client_contact
    from convo.notify import messages as notify
    from convo.notify.recipients import NoRecipient, client_phone

    s = services()
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    text, template = body.get("text"), body.get("template")
    variables = body.get("variables") or {}
    if (text is None) == (template is None):
        raise BadRequest("give either 'text' or 'template' (with 'variables')")
    if text is not None and (not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT):
        raise BadRequest(f"'text' must be 1 to {MAX_TEXT} characters")
    if not isinstance(variables, dict) or not all(isinstance(k, str) for k in variables):
        raise BadRequest("'variables' must be an object")
    if len(variables) > MAX_VARIABLES:
        raise BadRequest(f"'variables' has more than {MAX_VARIABLES} entries")
    for k, v in variables.items():
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise BadRequest(f"variable {k[:40]!r} must be text or a number")
        if len(k) > 40 or len(str(v)) > MAX_VARIABLE:
            raise BadRequest(f"variable {k[:40]!r} is longer than {MAX_VARIABLE} characters")
    key = body.get("idempotency_key") or uuid.uuid4().hex
    if not isinstance(key, str) or len(key) > 100:
        raise BadRequest("'idempotency_key' must be a string of at most 100 characters")
    cfg = notify.config_for(s)
    locales = notify.flowset_for(s).locales
    tkey = None
    if template is not None:
        if not isinstance(template, str) or template not in cfg.staff_templates and \
                not locales.has("en", f"notify.staff.{template}"):
            raise BadRequest(f"unknown template {str(template)[:60]!r} (notify.staff.* in the locale files)")
        tkey = f"notify.staff.{template}"
        needed = cfg.template_variables(tkey)
        assert needed is not None  # every notify.staff.* key has its variables
        missing = needed - {"first_name", "name", "lang"} - set(variables)
        if missing:
            raise BadRequest(f"template {template!r} needs variables: {', '.join(sorted(missing))}")
    try:
        contact = client_contact(s.mifos, client_id)
    except MifosNotFound:
        return {"error": f"no client {client_id} in Mifos X"}, 404
    except MifosUnavailable as e:
        return {"error": f"Mifos X unavailable: {e}"}, 503
    g.audit_client = client_id
    office = cfg.office(contact.office_id)
    try:
        e164, region = client_phone(s, client_id, contact.mobile_no, contact.office_id)
    except NoRecipient as e:
        return {"error": str(e)}, 422
    except MifosError as e:                      # the office tree (which country the number is in)
        return {"error": f"Mifos X unavailable: {e}"}, 503
    g.audit_phone = e164
    lang = notify.client_language(s, e164, office.language)
    variables = {**variables, "first_name": contact.first_name, "name": contact.display_name}
    if tkey is not None:
        try:
            text = notify.render_text(locales, tkey, lang, variables)
        except Exception as e:  # jinja errors from staff-supplied variables
            if isinstance(e, (KeyError, ValueError, TypeError)) or type(e).__module__.startswith("jinja2"):
                raise BadRequest(f"cannot render the template: {str(e)[:200]}") from None
            raise
        if len(text) > MAX_TEXT:
            raise BadRequest(f"the message would be {len(text)} characters, more than {MAX_TEXT}: "
                             "shorten the variables")
    msg = notify.send_to_client(
        s, client_id=client_id, phone=e164, key=tkey, text=text, variables=variables,
        kind="staff", idempotency_key=f"staff:{client_id}:{key}", sent_by=user, lang=lang, region=region,
        locales=locales)
    return {"id": msg.id, "status": msg.status, "to": msg.recipient, "body": msg.body, "encoding": msg.encoding,
            "chars": msg.chars, "segments": msg.segments, "language": lang}, 202


# --------------------------------------------------------------------------- staff API


@api.post("/clients/<int:client_id>/messages")
def post_message(client_id: int):
    user = _require_api_staff()
    body = request.get_json(silent=True)
    answer, status = send_staff_message(client_id, user, body)
    return jsonify(answer), status


@api.get("/clients/<int:client_id>/messages")
def list_messages(client_id: int):
    _require_api_staff()
    g.audit_client = client_id
    return jsonify({"client_id": client_id, "messages": _message_rows(client_id)})


# --------------------------------------------------------------------------- Fineract hooks


@hooks.route("/fineract/<token>/", methods=["GET", "POST"])
def fineract_hook(token: str):
    """Fineract's "Web" hook; Payload URL ``https://<host>/hooks/fineract/<CONVO_CALLBACK_TOKEN>/``.

    Fineract posts through Retrofit (``ProcessorHelper.createWebHookService``:
    ``baseUrl(url)``, which must end in ``/``; ``WebHookService``: ``@POST(".")``,
    which keeps the path and drops the query), so the token is a path segment.
    Saving the hook in Mifos X first sends a GET to the same URL: answered 200.
    Only hooks of our own tenant (``Fineract-Platform-TenantId`` =
    CONVO_FINERACT_TENANT) are taken: another tenant's hook is refused (403).
    """
    from convo.notify import receipts

    s = services()
    expected = s.settings.callback_token
    if not expected:
        return jsonify({"error": "hooks are disabled: set CONVO_CALLBACK_TOKEN and use "
                                 "https://<host>/hooks/fineract/<token>/ as the hook's Payload URL"}), 403
    if not hmac.compare_digest(token.encode(), expected.encode()):
        return jsonify({"error": "missing or wrong token"}), 403
    if request.method == "GET":
        return jsonify({"status": "ok"})      # HookWritePlatformServiceJpaRepositoryImpl: sendEmptyRequest()
    tenant = request.headers.get("Fineract-Platform-TenantId") or ""
    if not tenant:
        raise BadRequest("the Fineract-Platform-TenantId header is required")
    if tenant != s.settings.fineract_tenant:
        return jsonify({"error": f"this gateway serves Mifos X tenant {s.settings.fineract_tenant!r}, "
                                 f"not {tenant!r}"}), 403
    body = request.get_json(silent=True, force=True)
    if body is None and request.form:
        body = request.form.to_dict()   # content type "form": Fineract sends the fields flat
    if not isinstance(body, dict):
        raise BadRequest("the hook body must be a JSON object")
    entity = request.headers.get("X-Fineract-Entity") or body.get("entityName") or ""
    action = request.headers.get("X-Fineract-Action") or body.get("actionName") or ""
    if not entity or not action:
        raise BadRequest("X-Fineract-Entity and X-Fineract-Action headers are required")
    result = receipts.receive(s, entity=entity, action=action, tenant=tenant, body=body)
    return jsonify(dict(result)), result.http_status


def install(app: Flask) -> None:
    """Register the API, console and hooks blueprints (called by ``create_app``)."""
    if not app.secret_key:
        raise RuntimeError("create_app sets SECRET_KEY (CONVO_SECRET_KEY) before the console is installed")
    from convo.web.console import console

    app.register_blueprint(api, name="notify_api")
    app.register_blueprint(console)
    app.register_blueprint(hooks)

