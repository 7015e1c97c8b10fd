"""The staff console (``/console/...``): sign in with one's own Mifos X user, find a client, help them.

Server-rendered pages, no build step, no inline script or style (the CSP of :mod:`convo.web`).

Sign-in (``/console/login``): the user name and password go to Fineract's ``POST /authentication``
(:meth:`convo.mifos.client.MifosClient.authenticate`) and are then forgotten. The session cookie
(``convo_console``, signed with ``CONVO_SECRET_KEY``, HttpOnly, SameSite=Lax, 8 hours) keeps the user
name, the display name, the office and the permissions that matter here (``CONVO_CONSOLE_PERM_*``;
``ALL_FUNCTIONS`` allows all, ``ALL_FUNCTIONS_READ`` allows viewing). It never keeps the password, nor
the ``base64EncodedAuthenticationKey`` Fineract returns: that key is base64("user:password"), so
keeping it in a cookie anyone holding it can read would hand out the password; the console does not
need it either, because it reads Mifos X with the gateway's own service user and checks the staff
member's permissions and office itself. A user who must renew their password, or for whom Mifos X
asks a second factor, is refused (the console cannot do either; signing in by password alone would
skip the MFI's second factor). Wrong passwords are throttled with the staff API's wrong tokens
(:mod:`convo.web.staff`).

Office scope, as in Mifos X (``ClientReadPlatformServiceImpl``: ``o.hierarchy like :hierarchy%``): a
user sees only clients of their own office and the offices below it; another branch's client is a
403 page, and search results leave them out.

Pages: ``/console/`` (find a client by phone as typed, name, or Mifos X id),
``/console/clients/<id>`` (the stable link from Mifos X: PIN, language, STOP, dialogs, messages, send
form), ``POST /console/clients/<id>/pin`` (reset or unlock, confirmed, audited, needs the PIN
permission), ``POST /console/clients/<id>/messages`` (send, needs the send permission). Every form
carries a CSRF token. Every action is audited as ``staff:<Mifos X user name>``.
"""
from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
import re
import secrets
import uuid
from typing import TYPE_CHECKING, cast
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, session, url_for

from convo.mifos import notify_reads as reads
from convo.web import BadRequest, services

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)
console = Blueprint("notify_console", __name__, url_prefix="/console", template_folder="templates",
                    static_folder="static", static_url_path="/static")

_USER_RE = re.compile(r"^[\w.@+\- ]{1,100}$")
ALL = "ALL_FUNCTIONS"
ALL_READ = "ALL_FUNCTIONS_READ"
MAX_RESULTS = 10                # each result costs Mifos X a client read and the shared-number searches


# --------------------------------------------------------------------------- who is signed in
def _server_mark() -> str:
    """Which Mifos X a sign-in is for, keyed with the cookie secret: pointing the gateway at another
    server or tenant signs everyone out."""
    st = services().settings
    key = current_app.secret_key
    assert isinstance(key, bytes), "create_app sets SECRET_KEY to bytes (cookie_secret)"
    return hmac.new(key, b"convo-console-mifos\0" + f"{st.fineract_url}\0{st.fineract_tenant}"
                    .encode(), "sha256").hexdigest()[:32]


def current() -> dict | None:
    """The signed-in staff member: ``user``, ``name``, ``office_id``, ``office_name``, ``perms``; or None."""
    user = session.get("staff_user")
    mark = session.get("server_mark")
    if not user or not isinstance(mark, str) or not hmac.compare_digest(mark, _server_mark()):
        return None
    return {"user": user, "name": session.get("staff_name") or user, "office_id": session.get("office_id"),
            "office_name": session.get("office_name") or "", "perms": list(session.get("perms") or ())}


def may(who: dict, what: str) -> bool:
    """Does the signed-in user hold the Mifos X permission for ``what`` (view | send | pin)?"""
    st = services().settings
    need = {"view": st.console_perm_view, "send": st.console_perm_send, "pin": st.console_perm_pin}[what]
    perms = set(who["perms"])
    return ALL in perms or need in perms or (what == "view" and ALL_READ in perms)


def _kept_permissions(perms) -> list[str]:
    """Only the permissions the console asks about: a Mifos X role can carry hundreds, a cookie 4 KB."""
    st = services().settings
    wanted = {ALL, ALL_READ, st.console_perm_view, st.console_perm_send, st.console_perm_pin, st.studio_permission}
    return sorted(p for p in perms or () if isinstance(p, str) and p in wanted)


def csrf() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(24)
    return session["csrf"]


def check_csrf() -> None:
    given = request.form.get("csrf", "")
    if not given or not hmac.compare_digest(given.encode(), session.get("csrf", "").encode()):
        abort(Response("forbidden: stale form, reload the page", 403, mimetype="text/plain"))


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/console/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("notify_console.home")


def denied(who: dict, what: str, status: int = 403):
    return render_template("console_denied.html", user=who, csrf=csrf(), what=what), status


def _audit(who: dict, action: str, *, phone=None, client_id=None, outcome=None, detail=None) -> None:
    from convo.store import subscribers

    subscribers.audit(services().db, action[:60], actor=f"staff:{who['user']}", channel="console", phone=phone,
                      client_id=client_id, outcome=outcome,
                      detail={"office_id": who["office_id"], **(detail or {})})


# --------------------------------------------------------------------------- sign in, out
@console.get("/login")
def login_form():
    return render_template("console_login.html", error=None, next=request.args.get("next", ""), csrf=csrf())


@console.post("/login")
def login():
    from convo.mifos.client import MifosError, MifosRejected
    from convo.web import staff

    check_csrf()
    user = (request.form.get("username") or "").strip()
    password = request.form.get("password") or ""
    nxt = request.form.get("next", "")[:300]
    named = user if _USER_RE.match(user) else None
    address = staff.caller_address()

    def page(error: str, status: int, **headers):
        return render_template("console_login.html", error=error, next=nxt, csrf=csrf()), status, headers

    wait = staff.throttled(address, named)
    if wait:
        staff.refused("console", "throttled")
        return page(f"Too many wrong passwords. Try again in {(wait + 59) // 60} minute(s).", 429,
                    **{"Retry-After": str(wait)})
    if not named or not password or len(password) > 200:
        staff.refused("console", "no_user")
        return page("Wrong user name or password.", 401)
    try:
        me = services().mifos.authenticate(named, password)
    except MifosRejected:
        staff.wrong_token(address, named, "console", reason="wrong_password")
        return page("Wrong user name or password.", 401)
    except MifosError as e:
        log.warning("console sign-in: Mifos X unavailable: %s", e)
        return page("Mifos X cannot be reached to check your password. Try again in a minute.", 503)
    if me.get("shouldRenewPassword"):
        staff.refused("console", "renew_password")
        return page("Mifos X asks you to change your password first: sign in to Mifos X, change it, "
                    "then come back.", 403)
    if me.get("isTwoFactorAuthenticationRequired"):
        staff.refused("console", "two_factor")
        return page("Your Mifos X user needs a second factor, which this console does not support. "
                    "Ask your administrator for the BYPASS_TWOFACTOR permission or use the staff API.", 403)
    session.clear()
    session.permanent = True
    session.update(staff_user=str(me.get("username") or named)[:100],
                   staff_name=str(me.get("staffDisplayName") or me.get("username") or named)[:100],
                   office_id=me.get("officeId"), office_name=str(me.get("officeName") or "")[:100],
                   perms=_kept_permissions(me.get("permissions")), server_mark=_server_mark())
    who = current()
    _audit(who, "staff.console_sign_in", outcome="ok", detail={"ip": address})
    if not may(who, "view"):
        return denied(who, f"view clients (Mifos X permission {services().settings.console_perm_view})")
    return redirect(_safe_next(nxt))


@console.post("/logout")
def logout():
    check_csrf()
    session.clear()
    return redirect(url_for("notify_console.login_form"))


def _signed_in_or_redirect():
    who = current()
    if who is None:
        return None, redirect(url_for("notify_console.login_form", next=request.path))
    if not may(who, "view"):
        return None, denied(who, f"view clients (Mifos X permission {services().settings.console_perm_view})")
    return who, None


# --------------------------------------------------------------------------- offices
def _offices() -> dict[int, dict]:
    """Office id → ``GET /offices`` row (id, name, hierarchy), cached in Redis for 5 minutes."""
    s = services()
    r = cast("Redis", s.redis)  # Services.redis is typed object
    key = "convo:console:offices"
    raw = r.get(key)
    if raw:
        return {int(k): v for k, v in json.loads(raw).items()}
    rows = {int(o["id"]): {"name": o.get("name") or "", "hierarchy": o.get("hierarchy") or "."}
            for o in reads.offices(s.mifos)}
    r.set(key, json.dumps(rows), ex=300)
    return rows


def in_scope(who: dict, office_id) -> bool:
    """Is ``office_id`` the user's office or below it (Mifos X's hierarchy rule)?"""
    offices = _offices()
    mine = offices.get(who["office_id"])
    theirs = offices.get(office_id) if office_id is not None else None
    return bool(mine and theirs and theirs["hierarchy"].startswith(mine["hierarchy"]))


def _zone(office_id) -> ZoneInfo:
    from convo.notify import messages as notify

    s = services()
    return notify.config_for(s).timezone(office_id, s.settings.timezone)


def _local(when: dt.datetime | None, tz: ZoneInfo) -> str:
    if when is None:
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(tz).strftime("%Y-%m-%d %H:%M")


# --------------------------------------------------------------------------- find a client
_PHONE_CHARS = re.compile(r"^[+0-9 ()./\-]+$")


def classify(query: str) -> str:
    """``phone`` (``0712 345 678``, ``+254…``, 9+ digits), ``id`` (up to 8 digits), else ``name``."""
    q = query.strip()
    digits = re.sub(r"\D", "", q)
    if q.isdigit() and len(q) <= 8 and not q.startswith("0"):
        return "id"
    if _PHONE_CHARS.match(q) and len(digits) >= 9 or q.startswith("+") and digits:
        return "phone"
    return "name"


def _shared_with(e164: str | None, client_id: int | None, regions) -> list[int]:
    """Other live clients with this phone number (:meth:`MifosClient.clients_by_phone`)."""
    if not e164:
        return []
    return [c.id for c in services().mifos.clients_by_phone(e164, regions) if c.id != client_id]


def find(who: dict, query: str) -> tuple[list[dict], str | None]:
    """Clients matching ``query`` that the user may see: (rows, note)."""
    from convo.mifos.client import MifosNotFound
    from convo.notify.recipients import office_regions
    from convo.text.phone import InvalidPhone, normalize, read_stored

    s = services()
    regions = office_regions(s)
    kind = classify(query)
    refs: list[dict] = []
    note = None
    if kind == "phone":
        region = regions(who["office_id"])            # typed as the staff member's own country writes it
        try:
            e164 = normalize(query, region)
        except InvalidPhone:
            return [], f"{query!r} is not a phone number in {region}"
        found = s.mifos.clients_by_phone(e164, regions)
        refs = [{"id": c.id, "office_id": c.office_id, "phone": e164} for c in found]
        if not refs:
            note = f"No live client has the number {e164}."
    elif kind == "id":
        refs = [{"id": int(query.strip())}]
    else:
        rows = reads.search_clients(s.mifos, query.strip())
        refs = [{"id": int(r["entityId"]), "office_id": r.get("parentId")} for r in rows
                if r.get("entityType", "CLIENT") == "CLIENT"][:MAX_RESULTS]
        if not refs:
            note = f"No client is called {query.strip()!r}."
    out = []
    hidden = 0
    for ref in refs:
        try:
            body = reads.client(s.mifos, ref["id"])
        except MifosNotFound:
            note = f"No client {ref['id']} in Mifos X."
            continue
        office = body.get("officeId")
        if not in_scope(who, office):
            hidden += 1
            continue
        number = ref.get("phone") or read_stored(body.get("mobileNo"), regions(office))
        out.append({"id": body.get("id"), "name": body.get("displayName") or "", "office": body.get("officeName"),
                    "account_no": body.get("accountNo"), "phone": number, "mobile_no": body.get("mobileNo"),
                    "status": ((body.get("status") or {}).get("value") or ""),
                    "shared": _shared_with(number, body.get("id"), regions)})
    if hidden:
        note = (note + " " if note else "") + f"{hidden} client(s) of other offices are not shown."
    return out, note


@console.get("/")
def home():
    from convo.mifos.client import MifosError

    who, bounce = _signed_in_or_redirect()
    if bounce:
        return bounce
    cid = request.args.get("client", type=int)
    if cid:
        return redirect(url_for("notify_console.client_page", client_id=cid))
    query = (request.args.get("q") or "").strip()[:100]
    results, note = [], None
    if query:
        try:
            results, note = find(who, query)
        except MifosError as e:
            note = f"Mifos X cannot be reached: {e}"
        _audit(who, "staff.console_search", outcome=str(len(results)),
               detail={"kind": classify(query), "results": [r["id"] for r in results][:MAX_RESULTS]})
    return render_template("console_home.html", user=who, csrf=csrf(), query=query, results=results, note=note)


# --------------------------------------------------------------------------- the client page
def _gsm_tables() -> dict:
    from convo.text.sms import GSM_REPLACEMENTS, GSM_SEPTETS

    return {"basic": "".join(c for c, v in GSM_SEPTETS.items() if v == 1),
            "ext": "".join(c for c, v in GSM_SEPTETS.items() if v == 2),
            "repl": GSM_REPLACEMENTS}


def _messages(client_id: int, tz: ZoneInfo, limit: int = 50) -> list[dict]:
    from convo.store.db import OutboxMessage
    from convo.store.notify_models import ClientMessage

    o, m = OutboxMessage.__table__, ClientMessage.__table__
    with services().db.connect() as c:
        rows = c.execute(
            sa.select(m.c.kind, m.c.sent_by, m.c.created_at, o.c.id.label("outbox_id"), o.c.body, o.c.status,
                      o.c.encoding, o.c.segments, o.c.cost, o.c.gateway, o.c.last_error)
            .join(o, o.c.id == m.c.outbox_id).where(m.c.client_id == client_id)
            .order_by(m.c.id.desc()).limit(limit)).all()
    return [{**r._asdict(), "when": _local(r.created_at, tz)} for r in rows]


def _dialogs(client_id: int, tz: ZoneInfo, limit: int = 20) -> list[dict]:
    """What the client did, from the audit log (``data.<action>`` rows: flow, action, outcome, channel;
    ``pin.*`` and ``simswap.hold``). The audit log never holds an input, so neither does this."""
    from convo.store.db import AuditEvent

    a = AuditEvent.__table__
    with services().db.connect() as c:
        rows = c.execute(sa.select(a.c.at, a.c.action, a.c.outcome, a.c.channel, a.c.detail, a.c.actor)
                         .where(a.c.client_id == client_id, a.c.actor == "client")
                         .order_by(a.c.id.desc()).limit(limit)).all()
    out = []
    for r in rows:
        detail = r.detail if isinstance(r.detail, dict) else {}
        out.append({"when": _local(r.at, tz), "channel": r.channel or "", "flow": str(detail.get("flow") or ""),
                    "action": r.action, "outcome": r.outcome or ""})
    return out


def _opted_out(phone: str | None) -> bool:
    from convo.store.db import OptOut

    if not phone:
        return False
    t = OptOut.__table__
    with services().db.connect() as c:
        return bool(c.execute(sa.select(t.c.opted_out).where(t.c.phone == phone)).scalar())


def _pin(phone: str | None, client_id: int, tz: ZoneInfo) -> dict:
    from convo.security import simswap
    from convo.store import subscribers
    from convo.store.subscribers import FOREVER

    if not phone:
        return {"state": "none", "text": "No PIN (no phone number)"}
    st = subscribers.status(services().db, phone, client_id)
    if st.state == "locked":
        until = "until a staff reset" if st.locked_until and st.locked_until >= FOREVER else \
            f"until {_local(st.locked_until, tz)}"
        text = f"Locked {until} ({st.failed_attempts} wrong PINs)"
    elif st.state == "set":
        text = f"Set on {_local(st.pin_set_at, tz)}" if st.pin_set_at else "Set"
    else:
        text = "No PIN yet (the client chooses one when first asked)"
    hold = False
    if services().settings.simswap_hold_days > 0:
        try:
            hold = simswap.on_hold(services(), phone, dt.datetime.now(tz).date())
        except Exception:  # noqa: BLE001 - the page still shows; the hold is checked on every PIN anyway
            hold = False
    return {"state": st.state, "text": text, "hold": hold, "failed": st.failed_attempts,
            "others": [cid for cid, _ in st.clients if cid != client_id]}


def _client(client_id: int) -> dict | None:
    from convo.mifos.client import MifosNotFound

    try:
        return reads.client(services().mifos, client_id) or None
    except MifosNotFound:
        return None


@console.get("/clients/<int:client_id>")
def client_page(client_id: int):
    from convo.mifos.client import MifosError
    from convo.notify import messages as notify
    from convo.notify.recipients import NoRecipient, client_phone, office_regions
    from convo.store import subscribers

    who, bounce = _signed_in_or_redirect()
    if bounce:
        return bounce
    s = services()
    try:
        body = _client(client_id)
    except MifosError as e:
        return render_template("console_unknown.html", user=who, csrf=csrf(), client_id=client_id,
                               error=f"Mifos X cannot be reached: {e}. Try again in a minute."), 503
    if body is None:
        return render_template("console_unknown.html", user=who, csrf=csrf(), client_id=client_id,
                               error=None), 404
    office = body.get("officeId")
    try:
        if not in_scope(who, office):
            _audit(who, "staff.console_view", client_id=client_id, outcome="403", detail={"client_office": office})
            return denied(who, f"see clients of {body.get('officeName') or 'another office'} "
                                f"(you belong to {who['office_name']})")
    except MifosError as e:
        return render_template("console_unknown.html", user=who, csrf=csrf(), client_id=client_id,
                               error=f"Mifos X cannot be reached: {e}."), 503
    tz = _zone(office)
    phone, phone_error, shared = None, None, []
    try:
        regions = office_regions(s)
        phone, _region = client_phone(s, client_id, body.get("mobileNo"), office, regions)
        shared = _shared_with(phone, client_id, regions)
    except NoRecipient as e:
        phone_error = str(e)
    except MifosError as e:
        phone_error = f"Mifos X cannot be reached: {e}"
    cfg = notify.config_for(s)
    locales = notify.flowset_for(s).locales
    templates = sorted(k[len("notify.staff."):] for k in locales.keys("en") if k.startswith("notify.staff."))
    _audit(who, "staff.console_view", phone=phone, client_id=client_id, outcome="200")
    return render_template(
        "console_client.html", user=who, csrf=csrf(), client_id=client_id, client=body, phone=phone,
        phone_error=phone_error, shared=shared, tz=str(tz), pin=_pin(phone, client_id, tz),
        language=subscribers.language_of(s.db, phone) if phone else None, opted_out=_opted_out(phone),
        dialogs=_dialogs(client_id, tz), messages=_messages(client_id, tz), templates=templates,
        template_vars={t: sorted(cfg.staff_templates.get(t, ())) for t in templates},
        gsm=json.dumps(_gsm_tables()), sent=request.args.get("sent"), done=request.args.get("done"),
        form_error=request.args.get("error"), may_send=may(who, "send"), may_pin=may(who, "pin"))


def _page_for(client_id: int, **args):
    return redirect(url_for("notify_console.client_page", client_id=client_id, **args))


def _form_problem(client_id: int):
    """The PIN form's own checks: a known action and the identity box ticked."""
    if request.form.get("action") not in ("reset", "unlock"):
        raise BadRequest("'action' must be reset or unlock")
    if request.form.get("confirm") != "yes":
        return _page_for(client_id, error="Tick the box to confirm you checked the client's identity.")
    return None


def _acting_on(client_id: int, perm: str, audit_as: str, doing: str, form_check=None):
    """Who may do ``doing`` to this client: signed in, CSRF token, the Mifos X permission, the
    client known and in the user's offices. Returns (who, client body, None) or (.., response);
    a refusal by permission or office is audited as ``audit_as``."""
    who, bounce = _signed_in_or_redirect()
    if bounce:
        return who, None, bounce
    check_csrf()
    if not may(who, perm):
        _audit(who, audit_as, client_id=client_id, outcome="403")
        needed = getattr(services().settings, f"console_perm_{perm}")
        return who, None, denied(who, f"{doing} (Mifos X permission {needed})")
    problem = form_check() if form_check else None
    if problem is not None:
        return who, None, problem
    body = _client(client_id)
    if body is None:
        abort(404)
    if not in_scope(who, body.get("officeId")):
        _audit(who, audit_as, client_id=client_id, outcome="403")
        return who, None, denied(who, f"{doing} for another office's clients")
    return who, body, None


@console.post("/clients/<int:client_id>/pin")
def client_pin(client_id: int):
    """Reset the client's PIN (and unlock the phone) or only unlock it: confirmed, audited, permission-checked."""
    from convo.notify.recipients import NoRecipient, client_phone
    from convo.store import subscribers

    who, body, refused = _acting_on(client_id, "pin", "pin.reset", "reset PINs",
                                    lambda: _form_problem(client_id))
    if refused:
        return refused
    what = request.form.get("action")
    s = services()
    try:
        phone, _ = client_phone(s, client_id, body.get("mobileNo"), body.get("officeId"))
    except NoRecipient as e:
        return _page_for(client_id, error=str(e))
    reason = (request.form.get("reason") or "")[:200]
    before = subscribers.status(s.db, phone, client_id)
    unlock_only = what == "unlock"
    ok = subscribers.reset(s.db, phone, client_id=None if unlock_only else client_id, unlock_only=unlock_only)
    _audit(who, "pin.unlocked" if unlock_only else "pin.reset", phone=phone, client_id=client_id,
           outcome="ok" if ok else "nothing", detail={"reason": reason, "was_locked": before.state == "locked"})
    if not ok:
        return _page_for(client_id, error="Nothing to reset: this client has no PIN on this phone yet.")
    return _page_for(client_id, done="unlocked" if unlock_only else "reset")


@console.post("/clients/<int:client_id>/messages")
def client_send(client_id: int):
    from convo.web.notify_api import send_staff_message

    who, _, refused = _acting_on(client_id, "send", "staff.console_send", "send SMS")
    if refused:
        return refused
    form: dict = {"idempotency_key": request.form.get("idempotency_key") or uuid.uuid4().hex}
    template = request.form.get("template") or ""
    if template:
        form["template"] = template
        form["variables"] = {k[4:]: v for k, v in request.form.items() if k.startswith("var_") and v}
    else:
        form["text"] = request.form.get("text", "")
    try:
        answer, status = send_staff_message(client_id, who["user"], form)
    except BadRequest as e:
        return _page_for(client_id, error=str(e))
    if status >= 400:
        return _page_for(client_id, error=answer["error"])
    _audit(who, "staff.console_send", phone=answer.get("to"), client_id=client_id, outcome=answer["status"],
           detail={"outbox_id": answer["id"]})
    return _page_for(client_id, sent=answer["id"])
