"""The lean entry for USSD hops: ``POST /gateways/<name>/ussd`` answered without building a Flask request.

Why it exists: a USSD hop is the service's hot path (every key a caller presses is one), and Flask's
request machinery (request and app contexts, the ``before_request`` hooks' generic form, header and query
walks, routing, the ``Response`` object) cost about as much CPU as the dialog engine and both Redis round
trips together (bench/README.md). This WSGI middleware sits in front of the Flask app (``create_app``
installs it as ``app.wsgi_app``) and answers the common case, a well-formed Africa's Talking form post,
with the same parser (:func:`gateways.africastalking.parse_ussd`) and the same hop function
(:func:`convo.web.gateways.answer_ussd`: engine, metrics, DEBUG line with PINs redacted) as the Flask view.

What it must keep equal to Flask (tests/integration/test_fast_path.py checks it request by request): it takes a
request only when every check of the Flask path passes, and hands everything else, unchanged, to Flask:
another path or method, a query string over ``MAX_QUERY``, a NUL byte in a header, the query or the form,
a content type other than a plain form, no or a bad ``Content-Length``, a body over the ``/gateways/``
limit (8 KB), a body that is not UTF-8, a caller outside ``CONVO_CALLBACK_ALLOW_IPS`` (the same functions as
the Flask path: :func:`convo.web.caller_allowed`, :func:`convo.web.callback_token_ok`), a missing or
wrong ``?token=``, a form
the parser refuses. Flask then answers as it always has (4xx with the reason, ``convo_bad_requests_total``
counted); the body already read is handed on as it came. A hop that raises is answered by Flask's own
error handlers. Redis or the database down is the engine's business (``END`` service unavailable), as on
the Flask path.

The shortcut stays off for an app whose request hooks are not exactly the ones it mirrors (``KNOWN_HOOKS``):
a hook added later must be taught here first, or USSD hops simply go through Flask again.
"""
from __future__ import annotations

import io
import logging
from urllib.parse import unquote

from convo.web import callback_token_ok, caller_allowed
from convo.web.gateways import answer_ussd
from gateways.africastalking import parse_ussd
from gateways.base import BadCallback

log = logging.getLogger(__name__)

#: gateway types whose USSD handler reads the form fields only (no signature over the URL or raw body)
FORM_USSD_TYPES = frozenset({"africastalking"})
#: the content types taken here; any other (or parameters other than utf-8) goes to Flask
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8",
                        "application/x-www-form-urlencoded;charset=utf-8"})
#: what werkzeug's header view reads from the environ besides ``HTTP_*``
_BARE_HEADERS = ("CONTENT_TYPE", "CONTENT_LENGTH")
_HEADERS_200 = "200 OK"


def _hook_names(funcs: dict) -> dict:
    return {bp: sorted(f"{f.__module__}.{f.__qualname__}" for f in fs) for bp, fs in funcs.items() if fs}


#: the Flask hooks this entry reproduces for ``/gateways/<name>/ussd``: input limits and NULs, IP
#: allow-list and token (:func:`convo.web._limit_input`, :func:`convo.web._protect_callbacks`); the
#: staff guard and audit act on ``/api/`` only, the console headers on ``/console`` and HTML only
KNOWN_HOOKS = {
    "before": {None: sorted(["convo.web._limit_input", "convo.web._protect_callbacks", "convo.web.staff._guard"])},
    "after": {None: sorted(["convo.web._console_headers", "convo.web.staff._audit_call"])},
}


def form_items(text: str) -> list[tuple[str, str]]:
    """``a=1&b=%2A`` as ``[("a", "1"), ("b", "*")]``: exactly what werkzeug reads from a form body or a
    query string (``urllib.parse.parse_qsl(text, keep_blank_values=True, errors="werkzeug.url_quote")``:
    ``+`` is a space, invalid UTF-8 after unquoting stays percent-encoded), without its per-field overhead."""
    out = []
    if text:
        for part in text.split("&"):
            if part:
                name, _, value = part.partition("=")
                name, value = name.replace("+", " "), value.replace("+", " ")
                if "%" in name:
                    name = unquote(name, errors="werkzeug.url_quote")
                if "%" in value:
                    value = unquote(value, errors="werkzeug.url_quote")
                out.append((name, value))
    return out


class LeanUssd:
    """WSGI middleware: answers plain USSD form posts itself, hands every other request to ``flask_wsgi``."""

    def __init__(self, app, flask_wsgi, gateways: dict):
        from convo.web import BODY_LIMITS, MAX_QUERY

        self.app = app
        self.flask_wsgi = flask_wsgi
        self.max_query = MAX_QUERY
        self.max_body = next(limit for prefix, limit in BODY_LIMITS if prefix == "/gateways/")
        rules = {r.rule for r in app.url_map.iter_rules() if "POST" in (r.methods or ())}
        # PATH_INFO is the path's bytes read as latin-1 (PEP 3333)
        self.routes = {f"/gateways/{name}/ussd".encode().decode("latin-1"): gw for name, gw in gateways.items()
                       if gw.type in FORM_USSD_TYPES and f"/gateways/{name}/ussd" in rules}
        self._hooks_ok: bool | None = None

    def hooks_ok(self) -> bool:
        """True when Flask's hooks are the ones mirrored here (checked once: Flask takes none after the
        first request)."""
        if self._hooks_ok is None:
            app = self.app
            seen = {"before": _hook_names(app.before_request_funcs), "after": _hook_names(app.after_request_funcs)}
            others = [n for n, fs in (("teardown_request", app.teardown_request_funcs),
                                      ("url_value_preprocessor", app.url_value_preprocessors)) if _hook_names(fs)]
            self._hooks_ok = seen == KNOWN_HOOKS and not others and not app.teardown_appcontext_funcs
            if not self._hooks_ok:
                log.warning("lean USSD entry off: the app's request hooks changed (%s); USSD hops go through "
                            "Flask until convo/web/fast.py mirrors them", seen)
        return self._hooks_ok

    def __call__(self, environ, start_response):
        gw = self.routes.get(environ.get("PATH_INFO", ""))
        if gw is None or environ.get("REQUEST_METHOD") != "POST" or not self.hooks_ok():
            return self.flask_wsgi(environ, start_response)
        body = self._read_body(environ)
        req = None if body is None else self._parse(environ, gw, body)
        if req is None:
            return self.flask_wsgi(environ, start_response)
        try:
            text = answer_ussd(self.app.extensions["convo"], gw, req)
        except Exception as e:  # noqa: BLE001 - answered by Flask's error handlers, as on the Flask path
            return self._flask_error(environ, start_response, e)
        out = text.encode()
        start_response(_HEADERS_200, [("Content-Type", "text/plain; charset=utf-8"),
                                      ("Content-Length", str(len(out)))])
        return [out]

    # ------------------------------------------------------------------ the Flask path's checks
    def _read_body(self, environ) -> bytes | None:
        """The form body when the request's framing is plain (Content-Length within the limit, a form
        content type, nothing chunked); else None, with the input stream untouched."""
        if environ.get("CONTENT_TYPE", "").lower() not in FORM_TYPES or "HTTP_TRANSFER_ENCODING" in environ:
            return None
        length = environ.get("CONTENT_LENGTH", "")
        if not (length.isascii() and length.isdigit()) or int(length) > self.max_body:
            return None
        n = int(length)
        body = environ["wsgi.input"].read(n) if n else b""
        environ["wsgi.input"] = io.BytesIO(body)        # Flask reads it again if the request goes there
        return body if len(body) == n else None

    def _parse(self, environ, gw, body: bytes):
        """The :class:`gateways.base.UssdRequest`, or None for anything the Flask path would refuse."""
        qs = environ.get("QUERY_STRING", "")
        if len(qs) > self.max_query:
            return None
        for k, v in environ.items():                    # header names and values, as werkzeug's view has them
            if (k.startswith("HTTP_") or k in _BARE_HEADERS) and ("\x00" in v or "\x00" in k):
                return None
        try:
            args = form_items(qs.encode("latin-1").decode()) if qs else []
            items = form_items(body.decode())
        except (UnicodeError, ValueError):
            return None
        form: dict[str, str] = {}
        for k, v in (*args, *items):
            if "\x00" in k or "\x00" in v:
                return None
        for k, v in items:
            form.setdefault(k, v)                      # MultiDict.get: the first value
        svc = self.app.extensions["convo"]
        settings = svc.settings
        if not caller_allowed(self.app.config.get("CONVO_ALLOW_NETS") or (), environ.get("REMOTE_ADDR"),
                              environ.get("HTTP_X_FORWARDED_FOR"), settings.trusted_proxies):
            return None
        if not callback_token_ok(next((v for k, v in args if k == "token"), ""), settings.callback_token):
            return None
        try:
            return parse_ussd(form, settings.default_region)
        except BadCallback:
            return None                                 # Flask answers 400 with the reason and counts it

    def _flask_error(self, environ, start_response, exc: Exception):
        """A hop that raised: Flask's error handlers answer it (the same status, body and log line)."""
        app = self.app
        with app.request_context(environ):
            response = app.finalize_request(app.handle_user_exception(exc))
        return response(environ, start_response)


def install(app) -> None:
    """Put the lean entry in front of ``app``'s WSGI callable (after its gateways are configured)."""
    app.wsgi_app = LeanUssd(app, app.wsgi_app, app.extensions["convo_gateways"])
