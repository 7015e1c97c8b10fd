"""The Flask app: gateway callbacks, operations endpoints.

``gunicorn 'convo.web:create_app()'`` (or granian, see the README) serves it,
configured from ``CONVO_*`` variables and an optional ``.env``.
"""
from __future__ import annotations

import hmac
import logging

from flask import Flask, Response, current_app, request

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
    from convo.security import client_ip, ip_allowed

    nets = current_app.config.get("CONVO_ALLOW_NETS") or ()
    if not nets:
        return None
    ip = client_ip(request.remote_addr, request.headers.get("X-Forwarded-For"),
                   services().settings.trusted_proxies)
    if not ip_allowed(ip, nets):
        return plain("forbidden: caller address not allowed", 403)
    return None


def _protect_callbacks():
    """before_request: every ``/gateways/`` and ``/hooks/`` call passes the IP allow-list and the token."""
    if request.path.startswith(("/gateways/", "/hooks/")):
        return check_callback_ip() or check_callback_token()
    return None


def check_callback_token() -> Response | None:
    """403 unless the ``token`` query parameter matches ``CONVO_CALLBACK_TOKEN`` (when set)."""
    expected = services().settings.callback_token
    if not expected:
        return None
    given = request.args.get("token", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return plain("forbidden: missing or wrong token", 403)
    return None


def create_app(settings: Settings | None = None, svc: Services | None = None) -> Flask:
    if settings is None and svc is None:
        load_dotenv_if_present()
    settings = settings or (svc.settings if svc else Settings.from_env())
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from convo.security import RedactSecretsFilter, check_production_settings, parse_networks

    check_production_settings(settings)            # production without a PIN pepper: refuse to start
    allow_nets = parse_networks(settings.callback_allow_ips)
    for name in ("werkzeug", "gunicorn.access", "granian.access"):
        lg = logging.getLogger(name)
        if not any(isinstance(f, RedactSecretsFilter) for f in lg.filters):
            lg.addFilter(RedactSecretsFilter())     # access logs show ?token=*** instead of the token
    app = Flask(__name__)
    app.config["CONVO_ALLOW_NETS"] = allow_nets
    app.extensions["convo"] = svc or build_services(settings)

    from convo.web.gateways import bp as gateways_bp
    from convo.web.ops import bp as ops_bp

    from convo.web import staff

    app.before_request(_protect_callbacks)
    staff.install(app)
    app.register_blueprint(gateways_bp)
    app.register_blueprint(ops_bp)
    from convo.web import notify_api

    notify_api.install(app)                        # /api/clients/<id>/messages, /console, /hooks/fineract

    @app.errorhandler(BadRequest)
    def _bad(e: BadRequest):
        return plain(f"bad request: {e}", 400)

    @app.errorhandler(404)
    def _nf(e):
        return plain("not found", 404)

    @app.errorhandler(405)
    def _na(e):
        return plain("method not allowed", 405)

    @app.errorhandler(413)
    def _big(e):
        return plain("request too large", 413)

    @app.errorhandler(Exception)
    def _crash(e):
        from werkzeug.exceptions import HTTPException

        if isinstance(e, HTTPException):
            return plain(f"{e.code} {e.name}: {e.description}", e.code or 500)
        log.exception("unhandled error on %s", request.path)
        return plain("internal error", 500)

    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    return app
