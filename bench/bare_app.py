"""The benchmark's baseline: a bare Flask endpoint doing one Redis GET and one SET.

Served by the same WSGI server with the same worker count as the gateway (see
``bench/ussd_bench.py``), it receives the same Africa's Talking form bodies on
``POST /gateways/africastalking/ussd`` and answers ``text/plain`` like the
gateway, so the ratio hop/baseline prices exactly what the engine adds.

    granian --interface wsgi --workers 2 bench.bare_app:app
    gunicorn -w 2 'bench.bare_app:create_app()'
"""
from __future__ import annotations

import os

import redis
from flask import Flask, Response, request

TTL = 200


def create_app() -> Flask:
    url = os.environ.get("CONVO_REDIS_URL", "redis://127.0.0.1:6379/14")
    r = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=30)
    app = Flask(__name__)

    @app.post("/gateways/africastalking/ussd")
    def hop():
        key = "bench:bare:" + request.form.get("sessionId", "-")
        seen = r.get(key)
        r.set(key, b"1" if seen is None else b"2", ex=TTL)
        return Response("CON ok", mimetype="text/plain")

    @app.get("/healthz")
    def healthz():
        r.ping()
        return Response("ok", mimetype="text/plain")

    return app


app = create_app()
