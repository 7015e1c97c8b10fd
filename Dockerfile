# mifos-convo: the gateway (default command) and, with another command, the worker.
#
#   docker build -t mifos-convo .
#   docker run -p 8000:8000 -e CONVO_REDIS_URL=redis://... mifos-convo            # gateway (convo serve: granian)
#   docker run mifos-convo convo worker                                            # outbox worker
#   docker run mifos-convo convo db upgrade                                        # migrations
#
# Settings come from CONVO_* variables (see convo/config.py); docker-compose.yml wires them.

# ---- build: install the project and its dependencies into a virtualenv
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# dependencies first (cached while only the code changes); README* may not exist yet
COPY pyproject.toml README* ./
COPY convo ./convo
COPY gateways ./gateways
RUN /opt/venv/bin/pip install . \
 && /opt/venv/bin/convo --help >/dev/null

# ---- runtime: the virtualenv, the flows, a non-root user
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONVO_FLOWS_DIR=/app/flows \
    CONVO_DATABASE_URL=sqlite:////var/lib/convo/convo.db \
    GRANIAN_WORKERS=2 \
    GRANIAN_BLOCKING_THREADS=64
RUN groupadd --system --gid 10001 convo \
 && useradd --system --uid 10001 --gid convo --home-dir /app --shell /usr/sbin/nologin convo \
 && mkdir -p /app /var/lib/convo \
 && chown convo:convo /var/lib/convo
COPY --from=build /opt/venv /opt/venv
COPY --chown=root:root flows /app/flows
WORKDIR /app
USER convo
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# `convo serve`: granian serving the Flask app factory, GRANIAN_WORKERS processes of GRANIAN_BLOCKING_THREADS
# threads (most of them wait on Mifos X; bench/README.md). --migrate applies the migrations first (under a
# lock: replicas starting together take turns); without it, it refuses a database behind the code.
CMD ["convo", "serve", "--migrate", "--host", "0.0.0.0", "--port", "8000"]
