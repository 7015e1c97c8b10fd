"""The unit layer runs with no server and no network: any TCP/UDP connection or listening socket fails
the test that tries it (Unix sockets and socketpairs stay allowed), so a test that needs Redis,
PostgreSQL, the Fineract simulator or a browser cannot hide here."""
from __future__ import annotations

import socket

import pytest


class NetworkInUnitTest(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    real_connect, real_bind = socket.socket.connect, socket.socket.bind

    def connect(sock, address):
        if sock.family == socket.AF_UNIX:
            return real_connect(sock, address)
        raise NetworkInUnitTest(f"a unit test tried to connect to {address!r}: move it to tests/integration")

    def bind(sock, address):
        if sock.family == socket.AF_UNIX:
            return real_bind(sock, address)
        raise NetworkInUnitTest(f"a unit test tried to listen on {address!r}: move it to tests/integration")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", lambda sock, address: connect(sock, address))
    monkeypatch.setattr(socket.socket, "bind", bind)
