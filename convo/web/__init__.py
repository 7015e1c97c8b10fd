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
    app = Flask(__name__)
    app.extensions["convo"] = svc or build_services(settings)

    from convo.web.gateways import bp as gateways_bp
    from convo.web.ops import bp as ops_bp

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
