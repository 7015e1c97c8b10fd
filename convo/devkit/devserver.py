"""Serve a WSGI app from a background thread (demo, simulator, tests)."""
from __future__ import annotations

import threading

from werkzeug.serving import make_server


class BackgroundServer:
    """``with BackgroundServer(app) as srv: requests.get(srv.url + "/healthz")``"""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self._server = make_server(host, port, app, threaded=True)
        self.host, self.port = host, self._server.server_port
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"wsgi:{self.port}")

    def start(self) -> "BackgroundServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class FakeServer:
    """A fake provider's Flask app (its state in ``app.fake``) served on a free local port in a
    thread: ``url``, ``fake``, ``stop()``; a context manager too."""

    def __init__(self, app):
        self.fake = app.fake
        self._srv = BackgroundServer(app).start()
        self.url = self._srv.url

    def stop(self) -> None:
        self._srv.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
