"""The product manager's studio in the console (``/console/flows``): every flow as a diagram, a phone in the
browser against the Fineract simulator, lint in the page, and where callers drop off.

Signed-in console users holding ``CONVO_STUDIO_PERMISSION`` (default ``ALL_FUNCTIONS``) only; the sign-in
is the console's (:mod:`convo.web.console`). Pages are server-rendered; the diagrams are SVG drawn here
(:func:`svg`), no JavaScript library, nothing from a CDN; ``static/studio.js`` drives the phone.

The phone never reaches the production Mifos X: each flows folder it runs (the live one, or a pasted
preview) gets a sandbox of its own, built from the built-in defaults (not the environment) with the
in-process Fineract simulator, an in-memory Redis (``memory://``) and a throwaway SQLite database, so no
money moves and no SMS is sent (replies come back to the page; nothing reaches the outbox). Every demo
client's PIN in the sandbox is :data:`DEMO_PIN`.

A pasted or uploaded flow file is kept one hour in Redis (never written to ``flows/``), checked as
``convo lint`` would, and previewed: diagrams and the phone run on a temporary copy of the flows folder
with that file replaced. The files in ``flows/`` stay the source of truth.
"""
from __future__ import annotations

import datetime as dt
import hmac
import json
import logging
import re
import secrets
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from flask import Blueprint, abort, jsonify, redirect, render_template, request, session, url_for
from markupsafe import Markup

from convo.web import services

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)
studio = Blueprint("studio", __name__, url_prefix="/console/flows", template_folder="templates")

DEMO_PIN = "2468"
PREVIEW_TTL = 3600
PREVIEW_KEY = "convo:studio:preview:"
MAX_PREVIEW = 200 * 1024
_FILE_RE = re.compile(r"^(locales/)?[a-z0-9_]{1,60}\.yaml$")
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
KIND_NAMES = {"menu": "menu", "ask": "question", "do": "action", "route": "route", "flow": "sub-flow",
              "end": "end", "return": "return"}


# --------------------------------------------------------------------------- who may
def _who():
    """The signed-in user allowed in the studio, or a response (sign-in redirect, 403 page)."""
    from convo.web import console

    who = console.current()
    if who is None:
        return None, redirect(url_for("notify_console.login_form", next=request.full_path.rstrip("?")))
    need = services().settings.studio_permission
    if console.ALL not in who["perms"] and need not in who["perms"]:
        return who, console.denied(who, "the studio")
    return who, None


def _csrf_ok(given: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), session.get("csrf", "").encode())


# --------------------------------------------------------------------------- the diagram
BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 168, 46, 28, 74, 24


@dataclass
class Drawn:
    svg: Markup
    width: int
    height: int


def svg(cf, counts=None, issues=None, link=None) -> Drawn:
    """``cf`` as an SVG picture: states in rows breadth first from the start, boxes coloured by kind
    (class ``k-<kind>``), arrows labelled by option number or outcome and, with ``counts``
    (:func:`convo.dialog.stats.read_counts`), how many dialogs took each arrow. ``issues``: state -> "error" |
    "warning" (lint), drawn outlined. ``link(flow)``: the URL a sub-flow box links to."""
    from convo.flowlang.graph import edges, layers

    counts, issues = counts or {}, issues or {}
    rows = layers(cf)
    widest = max(len(r) for r in rows)
    width = PAD * 2 + widest * BOX_W + (widest - 1) * GAP_X + 120
    height = PAD * 2 + len(rows) * BOX_H + (len(rows) - 1) * GAP_Y
    pos: dict[str, tuple[float, float]] = {}
    for i, row in enumerate(rows):
        row_w = len(row) * BOX_W + (len(row) - 1) * GAP_X
        x0 = (width - 120 - row_w) / 2
        for j, name in enumerate(row):
            pos[name] = (x0 + j * (BOX_W + GAP_X), PAD + i * (BOX_H + GAP_Y))
    row_of = {n: i for i, r in enumerate(rows) for n in r}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="diagram" viewBox="0 0 {width:.0f} {height:.0f}" '
             f'width="{width:.0f}" height="{height:.0f}" role="img" aria-label="flow {escape(cf.name)}">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>']
    # arrows first, boxes over them
    seen: dict[tuple[str, str], int] = {}
    for src, dst, label in edges(cf):
        if src not in pos or dst not in pos:
            continue
        k = seen[(src, dst)] = seen.get((src, dst), -1) + 1     # several arrows between one pair
        n = (counts.get(src).to.get(dst, 0) if src in counts else 0) if k == 0 else 0
        sx, sy = pos[src]
        dx, dy = pos[dst]
        if src == dst:                                          # a loop on itself
            x, y = sx + BOX_W, sy + BOX_H / 2
            d = f"M{x:.0f},{y - 8:.0f} C{x + 40:.0f},{y - 30:.0f} {x + 40:.0f},{y + 30:.0f} {x:.0f},{y + 8:.0f}"
            lx, ly = x + 34, y + 4
        elif row_of[dst] > row_of[src]:                         # down
            x1, y1 = sx + BOX_W / 2, sy + BOX_H
            x2, y2 = dx + BOX_W / 2, dy
            mid = (y1 + y2) / 2
            d = f"M{x1:.0f},{y1:.0f} C{x1:.0f},{mid:.0f} {x2:.0f},{mid:.0f} {x2:.0f},{y2:.0f}"
            lx, ly = (x1 + x2) / 2 + 4, mid + 4 + 12 * k
        elif row_of[dst] == row_of[src]:                        # sideways: an arc under the row
            right = dx > sx
            x1, y1 = (sx + BOX_W * (0.75 if right else 0.25)), sy + BOX_H
            x2, y2 = (dx + BOX_W * (0.25 if right else 0.75)), dy + BOX_H
            dip = y1 + 22 + 8 * k
            d = f"M{x1:.0f},{y1:.0f} C{x1:.0f},{dip:.0f} {x2:.0f},{dip:.0f} {x2:.0f},{y2:.0f}"
            lx, ly = (x1 + x2) / 2 - 10, dip + 2
        else:                                                   # back up: around the right
            x1, y1 = sx + BOX_W, sy + BOX_H / 2 + 6
            x2, y2 = dx + BOX_W, dy + BOX_H / 2 - 6
            bulge = max(x1, x2) + 50 + 14 * (row_of[src] - row_of[dst])
            d = f"M{x1:.0f},{y1:.0f} C{bulge:.0f},{y1:.0f} {bulge:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"
            lx, ly = bulge - 18, (y1 + y2) / 2 + 4
        text = escape(label) + (f" · {n}" if n else "")
        parts.append(f'<g class="edge" data-from="{escape(src)}" data-to="{escape(dst)}" data-count="{n}">'
                     f'<path d="{d}" marker-end="url(#arrow)"/>'
                     f'<text x="{lx:.0f}" y="{ly:.0f}" class="edge-label">{text}</text></g>')
    parts.append(f'<g class="start"><circle cx="{pos[cf.spec.start][0] - 14:.0f}" '
                 f'cy="{pos[cf.spec.start][1] + BOX_H / 2:.0f}" r="6"/></g>')
    for name, (x, y) in pos.items():
        st = cf.spec.states[name]
        what = st.action or st.subflow or st.outcome or ""
        sub = KIND_NAMES.get(st.kind, st.kind) + (f": {what}" if what else "")
        c = counts.get(name)
        tally = ""
        if c and c.entered:
            tally = f"in {c.entered}" + (f" · end {c.ended}" if c.ended else "") + \
                (f" · left {c.timed_out}" if c.timed_out else "") + (f" · err {c.errored}" if c.errored else "")
        cls = f"node k-{st.kind}" + (f" lint-{issues[name]}" if name in issues else "")
        box = (f'<rect x="{x:.0f}" y="{y:.0f}" width="{BOX_W}" height="{BOX_H}" rx="7"/>'
               f'<text x="{x + 8:.0f}" y="{y + 16:.0f}" class="name">{escape(name)}</text>'
               f'<text x="{x + 8:.0f}" y="{y + 30:.0f}" class="kind">{escape(sub[:26])}</text>'
               + (f'<text x="{x + 8:.0f}" y="{y + 42:.0f}" class="tally">{escape(tally)}</text>' if tally else ""))
        if st.kind == "flow" and link:
            box = f'<a href="{escape(link(st.subflow))}" class="subflow">{box}</a>'
        parts.append(f'<g class="{cls}" id="state-{escape(name)}" data-state="{escape(name)}" '
                     f'data-kind="{st.kind}"><title>{escape(name)} ({escape(sub)})</title>{box}</g>')
    parts.append("</svg>")
    return Drawn(Markup("".join(parts)), int(width), int(height))


# --------------------------------------------------------------------------- flows, lint, preview
def _flows_dir() -> Path:
    return Path(services().settings.flows_dir)


def _pin_flows(fs) -> set[str]:
    """Flows that ask for the PIN: ``pin_required`` or a ``confirm_pin`` sub-flow state."""
    return {n for n, cf in fs.flows.items() if n != "confirm_pin" and (
        cf.spec.settings.get("pin_required") or any(s.subflow == "confirm_pin" for s in cf.spec.states.values()))}


def _starts(fs) -> dict[str, list[str]]:
    """flow -> how a caller starts it (USSD code, USSD start, SMS keyword and its aliases)."""
    out: dict[str, list[str]] = {}
    ussd = fs.channels.get("ussd", {}) or {}
    if ussd.get("start"):
        out.setdefault(ussd["start"], []).append("USSD (any code)")
    for code, flow in (ussd.get("codes") or {}).items():
        out.setdefault(flow, []).append(f"USSD {code}")
    sms = fs.channels.get("sms", {}) or {}
    for word, spec in (sms.get("keywords") or {}).items():
        spec = spec if isinstance(spec, dict) else {"flow": spec}
        aliases = [a for lang in (spec.get("aliases") or {}).values() for a in lang]
        if spec.get("flow") is None:  # the linter reports a keyword without a flow
            continue
        out.setdefault(spec["flow"], []).append(f"SMS {word}" + (f" ({', '.join(aliases)})" if aliases else ""))
    if sms.get("otherwise"):
        out.setdefault(sms["otherwise"], []).append("SMS (any other text)")
    return out


def _issues(res, directory: Path) -> list[dict]:
    """Lint errors and warnings as dicts, files relative to the flows folder, with the flow they are in."""
    from convo.flowlang.spec import FlowError

    rows = []
    for sev, items in (("error", res.errors), ("warning", res.warnings)):
        for e in items:
            d: dict[str, Any] = e.as_dict() if isinstance(e, FlowError) else {
                "message": str(e), "file": "", "line": 0, "state": None, "text": str(e)}
            f = d.get("file") or ""
            try:
                f = str(Path(f).resolve().relative_to(directory.resolve()))
            except (ValueError, OSError):
                f = Path(f).name if f else ""
            flow = Path(f).stem if f and not f.startswith("locales/") else None
            rows.append({**d, "severity": sev, "file": f, "flow": flow})
    return rows


def _lint(directory: Path):
    from convo.services import lint_folder

    res = lint_folder(directory)
    return res, _issues(res, directory)


def _preview_get(token: str) -> dict | None:
    if not _TOKEN_RE.match(token or ""):
        return None
    raw = cast("Redis", services().redis).get(PREVIEW_KEY + token)  # Services.redis is typed object
    return json.loads(raw) if raw else None


_materialized: "OrderedDict[str, Path]" = OrderedDict()
_mat_lock = threading.Lock()


def _preview_dir(token: str, preview: dict) -> Path:
    """A temporary copy of the flows folder with the previewed file replaced (kept per process, last 8)."""
    with _mat_lock:
        if token in _materialized and _materialized[token].exists():
            _materialized.move_to_end(token)
            return _materialized[token]
        tmp = Path(tempfile.mkdtemp(prefix="convo-studio-preview-"))
        dest = tmp / "flows"
        shutil.copytree(_flows_dir(), dest, ignore=shutil.ignore_patterns("tests"))
        (dest / preview["file"]).parent.mkdir(parents=True, exist_ok=True)
        (dest / preview["file"]).write_text(preview["content"], encoding="utf-8")
        _materialized[token] = dest
        while len(_materialized) > 8:
            _, old = _materialized.popitem(last=False)
            shutil.rmtree(old.parent, ignore_errors=True)
            gone = _sandboxes.pop(str(old), None)
            if gone is not None:
                gone.close()
        return dest


# --------------------------------------------------------------------------- the sandbox phone
class Sandbox:
    """An engine of its own for one flows folder: simulator, in-memory Redis, throwaway SQLite."""

    def __init__(self, flows_dir: Path):
        from convo.config import Settings
        from convo.services import build_services
        from convo.store.db import upgrade

        self.tmp = tempfile.mkdtemp(prefix="convo-studio-")
        live = services().settings
        sim = _simulator()
        # the built-in defaults, never the environment: no production Mifos X, gateway or database
        settings = Settings().replace(
            env="development", fineract_url=f"{sim.url}/fineract-provider/api/v1", fineract_user="mifos",
            fineract_password="password", fineract_tenant="default", flows_dir=str(flows_dir),
            redis_url=f"memory://studio-{uuid.uuid4().hex}", database_url=f"sqlite:///{self.tmp}/studio.db",
            flow_stats=False, flows_reload_tests=False, ussd_sessions_per_hour=0, sms_inbound_per_hour=0,
            pin_argon2_memory_kib=1024, pin_argon2_time_cost=1, default_language=live.default_language)
        self.services = build_services(settings)
        upgrade(self.services.db)
        self.pinned: set[str] = set()
        self.lock = threading.Lock()

    def close(self) -> None:
        self.services.db.dispose()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def hop(self, channel: str, flow: str, phone: str, lang: str, session_id: str, text: str, fresh: bool) -> dict:
        from convo.devkit.convtest import client_ids_of
        from convo.dialog.engine import Inbound
        from convo.security import PinHasher
        from convo.store.subscribers import set_language, set_pin

        sv = self.services
        with self.lock:
            sv.flows.maybe_reload()
            fs = sv.flows.current
            code = f"*studio*{flow}#"
            fs.channels.setdefault("ussd", {}).setdefault("codes", {})[code] = flow
            if phone not in self.pinned:
                for cid in client_ids_of(sv, phone):
                    set_pin(sv.db, PinHasher.from_settings(sv.settings), phone, cid, DEMO_PIN)
                self.pinned.add(phone)
            if fresh:
                set_language(sv.db, phone, lang)
                sv.cache.drop(f"convo:lang:{phone}")
        reply = sv.engine.handle(Inbound(channel, "studio", session_id, phone, text, code))
        key = f"ussd:studio:{session_id}:{phone}" if channel == "ussd" else f"{channel}:{phone}"
        data = sv.sessions.peek(key) or {}
        hidden = {"phone"}
        vars_ = {k: v for k, v in (data.get("vars") or {}).items() if k not in hidden and not k.startswith("_")}
        return {"text": reply.text, "end": reply.end, "flow": data.get("f"), "state": data.get("s"),
                "page": data.get("pg", 0), "pages": data.get("np", 1), "lang": data.get("lang"), "vars": vars_}


_sim = None
_sandboxes: dict[str, Sandbox] = {}
_sb_lock = threading.Lock()


def _simulator():
    global _sim
    if _sim is None:
        from convo.devkit.fineract_sim import start_simulator

        _sim = start_simulator()
    return _sim


def _sandbox(flows_dir: Path) -> Sandbox:
    key = str(flows_dir)
    with _sb_lock:
        if key not in _sandboxes:
            _sandboxes[key] = Sandbox(flows_dir)
        return _sandboxes[key]


# --------------------------------------------------------------------------- pages
def _render(template: str, who, **kw):
    from convo.web import console

    return render_template(template, user=who, csrf=console.csrf(), **kw)


def _source(token: str | None):
    """(flows folder, preview or None) for the live flows or a preview token; 404 for a gone preview."""
    if token is None:
        return _flows_dir(), None
    preview = _preview_get(token)
    if preview is None:
        abort(404, "this preview has expired (kept one hour): paste the file again")
    return _preview_dir(token, preview), preview


def _flowset(directory: Path, token: str | None):
    if token is None:
        lib = services().flows
        lib.maybe_reload()
        return lib.current
    from convo.flowlang.compiler import load_flowset
    from convo.flowlang.spec import FlowValidationError

    try:
        return load_flowset(directory)
    except FlowValidationError:
        return None


@studio.route("", methods=["GET", "POST"])
def index():
    """GET: the flows (``?preview=<token>``: those of a preview); POST: check a pasted or uploaded file.
    Two rules in all for the studio (this and :func:`flow_page`): every rule is one more the fuzz must reach."""
    if request.method == "POST":
        return make_preview()
    return _index(request.args.get("preview") or None)


def _index(token: str | None):
    who, refused = _who()
    if refused:
        return refused
    directory, preview = _source(token)
    res, issues = _lint(directory)
    fs = res.flowset if token else _flowset(directory, None)
    rows = []
    if fs is not None:
        starts, pins = _starts(fs), _pin_flows(fs)
        for name, cf in sorted(fs.flows.items()):
            rows.append({"name": name, "description": cf.spec.description, "file": cf.spec.file,
                         "enabled": cf.spec.settings.get("enabled", True), "pin": name in pins,
                         "starts": starts.get(name, []), "states": len(cf.spec.states),
                         "problems": sum(1 for i in issues if i["flow"] == name)})
    files = sorted(str(p.relative_to(_flows_dir())) for p in _flows_dir().rglob("*.yaml")
                   if "tests" not in p.relative_to(_flows_dir()).parts)
    return _render("studio_index.html", who, rows=rows, issues=issues, preview=preview, token=token,
                   version=fs.version if fs else None, files=files, languages=list(fs.languages) if fs else [])


@studio.route("/<name>", methods=["GET", "POST"])
def flow_page(name: str):
    """GET: the flow's page (``?preview=<token>``); POST: one step of the browser phone (JSON)."""
    if request.method == "POST":
        return phone(name)
    return _flow_page(name, request.args.get("preview") or None)


def _flow_page(name: str, token: str | None):
    from convo.devkit.fineract_seed import DEMO_PHONES
    from convo.dialog import stats

    who, refused = _who()
    if refused:
        return refused
    directory, preview = _source(token)
    fs = _flowset(directory, token)
    if fs is None or name not in fs.flows:
        abort(404, f"no flow {name!r}" + (" in this preview (it has errors)" if token and fs is None else ""))
    cf = fs.flows[name]
    _, issues = _lint(directory)
    mine = [i for i in issues if i["flow"] == name]
    marks: dict[str, str] = {}
    for i in mine:
        if i.get("state"):
            marks[i["state"]] = "error" if i["severity"] == "error" or marks.get(i["state"]) == "error" else "warning"
    try:
        days = max(1, min(int(request.args.get("days", 7)), services().settings.flow_stats_days))
    except ValueError:
        days = 7
    counts, funnel, versions, counted = {}, [], [], fs.version
    if token is None:
        try:
            versions = stats.versions(services().redis)
            wanted = request.args.get("version", "")
            counted = wanted if any(v == wanted for v, _ in versions) else fs.version
            counts = stats.read_counts(services().redis, fs, name, days=days, version=counted)
            funnel = stats.funnel(fs, name, counts)
        except Exception as e:  # noqa: BLE001 - the page still shows the diagram
            log.warning("studio: counts unavailable: %s", str(e)[:200])
    base = (lambda f: url_for("studio.flow_page", name=f, preview=token)) if token else \
        (lambda f: url_for("studio.flow_page", name=f))
    drawn = svg(cf, counts, marks, base)
    return _render("studio_flow.html", who, flow=cf, drawn=drawn, issues=mine, token=token, preview=preview,
                   funnel=funnel, days=days, version=fs.version, versions=versions, counted=counted,
                   languages=list(fs.languages),
                   phones=DEMO_PHONES, demo_pin=DEMO_PIN, starts=_starts(fs).get(name, []),
                   keyword=_keyword(fs, name), kinds=KIND_NAMES)


def _keyword(fs, flow: str) -> str:
    for word, spec in ((fs.channels.get("sms") or {}).get("keywords") or {}).items():
        if (spec.get("flow") if isinstance(spec, dict) else spec) == flow:
            return word
    return ""


def make_preview():
    who, refused = _who()
    if refused:
        return refused
    from convo.web import console

    console.check_csrf()
    up = request.files.get("upload")
    content = up.read(MAX_PREVIEW + 1).decode("utf-8", "replace") if up and up.filename else \
        request.form.get("content", "")
    name = (request.form.get("file") or (Path(up.filename).name if up and up.filename else "")).strip()
    if not _FILE_RE.match(name):
        abort(400, "name the file like balance.yaml or locales/en.yaml")
    if not content.strip() or len(content.encode()) > MAX_PREVIEW:
        abort(400, f"paste or upload the file (at most {MAX_PREVIEW // 1024} KB)")
    token = secrets.token_urlsafe(18)
    services().redis.set(PREVIEW_KEY + token, json.dumps({"file": name, "content": content, "by": who["user"],
                                                           "at": dt.datetime.now(dt.timezone.utc).isoformat()}),
                         ex=PREVIEW_TTL)
    return redirect(url_for("studio.index", preview=token), 303)


def phone(flow: str):
    """One step of the browser phone: JSON in (channel, phone, lang, session, text, fresh, preview), JSON out
    (the screen, whether it ended, flow, state, variables)."""
    from convo.devkit.fineract_seed import DEMO_PHONES

    who, refused = _who()
    if refused:
        return jsonify(error="sign in with the studio permission"), 403
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error="send a JSON object"), 400
    if not _csrf_ok(str(body.get("csrf", ""))):
        return jsonify(error="stale page: reload it"), 403
    token = body.get("preview") or None
    if token is not None and not isinstance(token, str):
        return jsonify(error="preview: a token"), 400
    directory, _ = _source(token)
    fs = _flowset(directory, token)
    channel, number = str(body.get("channel", "ussd")), str(body.get("phone", ""))
    if fs is None or flow not in fs.flows:
        return jsonify(error=f"no flow {flow!r}"), 400
    if channel not in ("ussd", "sms") or number not in {p for p, _ in DEMO_PHONES}:
        return jsonify(error="choose USSD or SMS and one of the demo clients"), 400
    lang = str(body.get("lang", ""))
    if lang and lang not in fs.languages:
        return jsonify(error=f"no language {lang!r}"), 400
    session_id = str(body.get("session", ""))[:64] or uuid.uuid4().hex
    text = str(body.get("text", ""))[:400]
    out = _sandbox(directory).hop(channel, flow, number, lang, "studio-" + session_id, text,
                                  bool(body.get("fresh")))
    return jsonify(session=session_id, **out)
