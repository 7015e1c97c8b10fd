"""The Flask app: gateway callbacks, operations endpoints.

``gunicorn 'convo.web:create_app()'`` (or granian, see the README) serves it,
configured from ``CONVO_*`` variables and an optional ``.env``.
"""
from __future__ import annotations

import datetime as dt
import hmac
import logging
import math
import os
import secrets
from pathlib import Path

from flask import Flask, Request, Response, current_app, request
from werkzeug.exceptions import BadRequest as HTTPBadRequest
from werkzeug.exceptions import NotFound
from werkzeug.routing import IntegerConverter

from convo.config import Settings, load_dotenv_if_present
from convo.services import Services, build_services

log = logging.getLogger(__name__)


class BadRequest(ValueError):
    """Malformed input from a caller: answered with 400 and the reason, never a 500."""


def services() -> Services:
    return current_app.extensions["convo"]


def plain(text: str, status: int = 200) -> Response:
    return Response(text, status=status, mimetype="text/plain")


def check_callback_ip() -> Response | None:
    """403 unless the caller's address is in ``CONVO_CALLBACK_ALLOW_IPS`` (when set).

    The address is the socket peer; with ``CONVO_TRUSTED_PROXIES=N`` it is the
    N-th ``X-Forwarded-For`` entry from the right (what our own proxy saw).
    """
    if not caller_allowed(current_app.config.get("CONVO_ALLOW_NETS") or (), request.remote_addr,
                          request.headers.get("X-Forwarded-For"), services().settings.trusted_proxies):
        return plain("forbidden: caller address not allowed", 403)
    return None


def caller_allowed(nets, remote_addr: str | None, forwarded_for: str | None, trusted_proxies: int) -> bool:
    """Whether a callback's caller is in ``CONVO_CALLBACK_ALLOW_IPS`` (always, when the list is empty); the
    one rule of the Flask path and of the lean USSD entry (:mod:`convo.web.fast`)."""
    from convo.security import client_ip, ip_allowed

    return not nets or ip_allowed(client_ip(remote_addr, forwarded_for, trusted_proxies), nets)


def callback_token_ok(given: str, expected: str) -> bool:
    """Whether ``given`` is ``CONVO_CALLBACK_TOKEN`` (always, when none is set), compared in constant time;
    the one rule of the Flask path and of the lean USSD entry."""
    if not expected:
        return True
    try:
        return hmac.compare_digest(given.encode(), expected.encode())
    except UnicodeError:                            # a lone surrogate cannot be the token
        return False


def _protect_callbacks():
    """before_request: every ``/gateways/`` and ``/hooks/`` call passes the IP allow-list and the token."""
    if request.path.startswith(("/gateways/", "/hooks/")):
        return check_callback_ip() or check_callback_token()
    return None


def check_callback_token() -> Response | None:
    """403 unless the ``token`` query parameter, or the route's ``<token>`` path segment
    (``/hooks/fineract/<token>/``), matches ``CONVO_CALLBACK_TOKEN`` (when set)."""
    given = request.args.get("token", "") or str((request.view_args or {}).get("token") or "")
    if not callback_token_ok(given, services().settings.callback_token):
        return plain("forbidden: missing or wrong token", 403)
    return None


# --------------------------------------------------------------------------- hostile input
#: body size allowed per path prefix (first match); anything else gets MAX_CONTENT_LENGTH
BODY_LIMITS = (("/gateways/", 8 * 1024),      # Africa's Talking posts a few hundred bytes of form fields
               ("/api/", 16 * 1024), ("/console/flows", 256 * 1024), ("/console/", 16 * 1024),
               ("/hooks/", 64 * 1024))         # a Fineract hook carries one command's JSON
MAX_BODY = 64 * 1024
MAX_QUERY = 2048                               # bytes of query string (?token=... and a few fields)
MAX_PATH = 1024
MAX_JSON_DEPTH = 32
INT64 = (-(2 ** 63), 2 ** 63 - 1)


class Int64Converter(IntegerConverter):
    """``<int:...>`` in every route: within a signed 64-bit integer (PostgreSQL ``bigint``), so
    ``/api/clients/99999999999999999999999/messages`` is a 404 that says why, never a database error.

    NotFound rather than werkzeug's ValidationError: with a ValidationError a GET to a path that also
    has a POST rule would be answered 405."""

    def to_python(self, value: str):
        if len(value.lstrip("-")) > 19 or not INT64[0] <= int(value) <= INT64[1]:
            raise NotFound("the number in the path is beyond 64 bits")
        return super().to_python(value)


def _check_json(obj) -> None:
    """Raise a 400 for JSON PostgreSQL or our code cannot take: NUL, lone surrogates, deep nesting,
    integers beyond 64 bits, NaN/Infinity. Iterative, so depth cannot exhaust the stack."""
    stack = [(obj, 1)]
    while stack:
        o, depth = stack.pop()
        if isinstance(o, str):
            _check_text(o, "a JSON string")
        elif isinstance(o, dict):
            if depth > MAX_JSON_DEPTH:
                raise HTTPBadRequest(f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep")
            for k, v in o.items():
                _check_text(k, "a JSON key")
                stack.append((v, depth + 1))
        elif isinstance(o, list):
            if depth > MAX_JSON_DEPTH:
                raise HTTPBadRequest(f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep")
            stack.extend((v, depth + 1) for v in o)
        elif isinstance(o, bool) or o is None:
            pass
        elif isinstance(o, int):
            if not INT64[0] <= o <= INT64[1]:
                raise HTTPBadRequest("a number in the JSON body is beyond 64 bits")
        elif isinstance(o, float) and not math.isfinite(o):
            raise HTTPBadRequest("the JSON body has NaN or Infinity, which JSON does not allow")


def _check_text(value: str, what: str) -> None:
    if "\x00" in value:
        raise HTTPBadRequest(f"{what} contains a NUL byte")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise HTTPBadRequest(f"{what} is not valid UTF-8") from None


class ConvoRequest(Request):
    """``get_json`` answers 400 with the reason for JSON that would otherwise crash a handler
    (a RecursionError for deep nesting) or the database (NUL, 2**70), even with ``silent=True``."""

    def get_json(self, force=False, silent=False, cache=True):
        try:
            rv = super().get_json(force=force, silent=silent, cache=cache)
        except RecursionError:
            raise HTTPBadRequest(f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep") from None
        if rv is not None:
            _check_json(rv)
        return rv


def _limit_input():
    """before_request, first of all: body size per path, URL length, NUL bytes anywhere (PostgreSQL
    refuses them in text), each answered 4xx with the reason."""
    path = request.path
    for prefix, limit in BODY_LIMITS:
        if path.startswith(prefix):
            request.max_content_length = limit
            break
    if len(path) > MAX_PATH or len(request.query_string) > MAX_QUERY:
        return plain("request URL too long", 414)
    if "\x00" in path:
        return plain("bad request: the path contains a NUL byte", 400)
    for where, values in (("query", request.args), ("header", request.headers)):
        for k, v in values.items(multi=True) if where == "query" else values.items():
            if "\x00" in k or "\x00" in v:
                return plain(f"bad request: {where} field {k[:40]!r} contains a NUL byte", 400)
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        for k, v in request.form.items(multi=True):
            if "\x00" in k or "\x00" in v:
                return plain(f"bad request: form field {k[:40]!r} contains a NUL byte", 400)
    return None


# --------------------------------------------------------------------------- console cookie, headers
#: every page under /console/ (and any HTML page) carries these
CONSOLE_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
DEV_SECRET_FILE = ".convo-secret-key"


def _console_headers(response: Response) -> Response:
    if request.path.startswith("/console") or response.mimetype == "text/html":
        for k, v in CONSOLE_HEADERS.items():
            response.headers.setdefault(k, v)
    return response


def cookie_secret(settings: Settings) -> bytes:
    """The key that signs the console's session cookie: ``CONVO_SECRET_KEY``, never the staff token.

    Production without a key of 32+ bytes does not start (:func:`convo.security.check_production_settings`).
    In development a random key is created once in ``.convo-secret-key`` in the working directory (mode
    0600), so every worker process of ``convo serve`` and every restart signs alike; where that file
    cannot be written, each process makes its own random key (a sign-in then holds in that process only).
    """
    if settings.secret_key:
        return settings.secret_key.encode()
    path = Path.cwd() / DEV_SECRET_FILE
    for _ in range(2):
        try:
            key = path.read_text().strip()
            if len(key) >= 43:
                return key.encode()
            break                                   # not ours, or damaged: leave it alone
        except FileNotFoundError:
            pass
        except OSError:
            break
        key = secrets.token_urlsafe(32)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key + "\n")
            os.link(tmp, path)                      # atomic: several workers starting at once agree on one key
            log.info("CONVO_SECRET_KEY is not set: console cookies are signed with a random key kept in %s", path)
            return key.encode()
        except FileExistsError:
            continue                                # another process won: read its key
        except OSError:
            break
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    log.warning("CONVO_SECRET_KEY is not set and %s is not usable: console sign-ins hold in this process only",
                path)
    return secrets.token_bytes(32)


def create_app(settings: Settings | None = None, svc: Services | None = None, *, lean: bool = True) -> Flask:
    """The app; ``lean=False`` leaves out the lean USSD entry (:mod:`convo.web.fast`), so every request goes
    through Flask (tests compare the two)."""
    if settings is None and svc is None:
        load_dotenv_if_present()
    settings = settings or (svc.settings if svc else Settings.from_env())
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from convo import logs
    from convo.security import check_production_settings, parse_networks

    check_production_settings(settings)            # production without its secrets: refuse to start
    allow_nets = parse_networks(settings.callback_allow_ips)
    logs.install()                                 # phones masked at INFO+, access logs show ?token=***
    app = Flask(__name__)
    app.request_class = ConvoRequest
    app.url_map.converters["int"] = Int64Converter  # before any route is added
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY,
        SECRET_KEY=cookie_secret(settings),
        SESSION_COOKIE_NAME="convo_console",
        SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",             # Strict would sign staff out on links from Mifos X
        SESSION_COOKIE_SECURE=settings.env.strip().lower() not in ("development", "dev"),
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=8),
    )
    app.config["CONVO_ALLOW_NETS"] = allow_nets
    if svc is None:
        from convo.devkit.convtest import reload_tests

        svc = build_services(settings, flow_tests=reload_tests(create_app))
    app.extensions["convo"] = svc
    app.before_request(_limit_input)
    app.after_request(_console_headers)

    from convo.notify.routing import routes_from_settings
    from convo.web import staff
    from convo.web.gateways import blueprint as gateways_blueprint
    from convo.web.ops import bp as ops_bp

    app.before_request(_protect_callbacks)
    staff.install(app)
    # the routes file is validated here, at start: a wrong one stops the app with the place and reason
    app.extensions["convo_gateways"] = routes_from_settings(settings).gateways
    app.register_blueprint(gateways_blueprint(app.extensions["convo_gateways"]))
    app.register_blueprint(ops_bp)
    from convo.web import notify_api

    notify_api.install(app)                        # /api/clients/<id>/messages, /console, /hooks/fineract
    from convo.web.studio import studio  # /console/flows: diagrams, browser phone, lint, drop-offs
    app.register_blueprint(studio)

    @app.errorhandler(BadRequest)
    def _bad(e: BadRequest):
        return plain(f"bad request: {e}", 400)

    @app.errorhandler(404)
    def _nf(e):
        return plain("not found" if e.description == NotFound.description else f"not found: {e.description}", 404)

    @app.errorhandler(405)
    def _na(e):
        return plain("method not allowed", 405)

    @app.errorhandler(413)
    def _big(e):
        return plain(f"request too large: at most {request.max_content_length} bytes here", 413)

    @app.errorhandler(Exception)
    def _crash(e):
        from werkzeug.exceptions import HTTPException

        if isinstance(e, HTTPException):
            return plain(f"{e.code} {e.name}: {e.description}", e.code or 500)
        log.exception("unhandled error on %s", request.path)
        return plain("internal error", 500)

    if lean:
        from convo.web import fast

        fast.install(app)                          # POST /gateways/<name>/ussd without Flask's request machinery
    return app
