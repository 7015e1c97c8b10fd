"""The unit layer runs with no server and no network: a TCP/UDP connection or listening socket opened by a
unit test fails that test (Unix sockets and socketpairs stay allowed), so a test that needs Redis,
PostgreSQL, the Fineract simulator or a browser cannot hide here. The socket is refused like a network that
is down (``ConnectionRefusedError``), so a background thread left by an earlier integration test (a writer
retrying its Redis) meets an outage it handles, and the test whose own thread tried fails at teardown.
"""
from __future__ import annotations

import socket
import threading

import pytest


class NetworkInUnitTest(ConnectionRefusedError):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    real_connect, real_bind = socket.socket.connect, socket.socket.bind
    mine = threading.get_ident()
    tried: list[str] = []

    def refuse(what: str, address) -> NetworkInUnitTest:
        if threading.get_ident() == mine:
            tried.append(f"{what} {address!r}")
        return NetworkInUnitTest(f"a unit test tried to {what} {address!r}: move it to tests/integration")

    def connect(sock, address):
        if sock.family == socket.AF_UNIX:
            return real_connect(sock, address)
        raise refuse("connect to", address)

    def bind(sock, address):
        if sock.family == socket.AF_UNIX:
            return real_bind(sock, address)
        raise refuse("listen on", address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", lambda sock, address: connect(sock, address))
    monkeypatch.setattr(socket.socket, "bind", bind)
    yield
    if tried:
        pytest.fail("a unit test used the network (move it to tests/integration): " + "; ".join(tried))
