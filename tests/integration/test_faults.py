"""The fault suite: what callers, Africa's Talking and the operator see when a dependency fails.

* Redis refuses connections, or accepts them and never answers (a socket server in this test
  that never writes back): a USSD caller gets ``END`` "service unavailable" in their country's
  language before the gateway's hop budget runs out; an inbound SMS is answered 503 with
  ``Retry-After`` so Africa's Talking delivers it again later; ``/healthz`` is 503 and names Redis.
* The database schema behind the code (``convo db upgrade`` not run): ``convo serve`` and
  ``convo worker`` refuse to start and say what to run; ``/healthz`` is 503 and shows the
  revision next to the head the code needs; several ``convo db upgrade`` at once take turns
  under a lock. On SQLite and on PostgreSQL.
* The database refusing connections: the same "service unavailable" / 503, ``/healthz`` names it.
* Mifos X answering every call in 2 s while 24 callers dial at once, against ``convo serve``
  (granian, the shipped settings): every caller gets a CON/END answer, none a 5xx or a timeout.
  How long they waited is the benchmark's figure (``bench/ussd_bench.py --slow-mifos``).
"""
from __future__ import annotations

import socket
import threading
from contextlib import contextmanager

import pytest
import requests

from tests.support.e2e import running_gateway

HOP_BUDGET = 3.0          # the service's default; Africa's Talking gives up on a hop after a few seconds


class SilentServer:
    """A TCP server that accepts every connection and never sends a byte (a hung Redis)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="silent-redis")

    def _accept(self):
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.conns.append(conn)              # read nothing, answer nothing

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


def refused_port() -> int:
    """A local port nobody listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["refused", "silent"])
def dead_redis(request):
    if request.param == "refused":
        yield f"redis://127.0.0.1:{refused_port()}/0"
    else:
        with SilentServer() as srv:
            yield f"redis://127.0.0.1:{srv.port}/0"


def dial(gw: str, phone: str, session: str = "ATUid_fault_1") -> requests.Response:
    """A first hop as Africa's Talking sends it; it waits no longer than the hop budget."""
    return requests.post(f"{gw}/gateways/africastalking/ussd", timeout=HOP_BUDGET, data={
        "sessionId": session, "serviceCode": "*384*12#", "phoneNumber": phone, "networkCode": "63902",
        "text": ""})


# ------------------------------------------------------------------ Redis unreachable

def test_redis_down_a_caller_hears_service_unavailable_in_their_language(dead_redis):
    with running_gateway(dead_redis) as (gw, _sim, _services):
        for phone, screen in [
            ("+254700000101", "END Service unavailable. Please try again later."),             # Kenya
            ("+255750000118", "END Huduma haipatikani kwa sasa. Tafadhali jaribu tena baadaye."),  # Tanzania
            ("+221770000001", "END Service indisponible. Veuillez réessayer plus tard."),     # Senegal
        ]:
            r = dial(gw, phone)
            assert (r.status_code, r.text) == (200, screen)


class RedisProxy:
    """Forwards TCP to the real Redis until ``hang()``: from then on it swallows every byte both ways
    and answers nothing (Redis blocked, or the network to it cut), until ``resume()``.
    ``hang_after(b"...")``: the first command holding those bytes reaches Redis, its answer does not."""

    def __init__(self, redis_url: str):
        from urllib.parse import urlsplit

        u = urlsplit(redis_url)
        self.upstream, self.db = (u.hostname, u.port or 6379), u.path
        self.silent = threading.Event()
        self.trigger: bytes | None = None
        self.server = SilentServer()                      # its listening socket; the accept loop is ours
        self.socks: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True, name="redis-proxy")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.server.port}{self.db}"

    def hang(self):
        self.silent.set()

    def hang_after(self, marker: bytes):
        self.trigger = marker

    def resume(self):
        self.trigger = None
        self.silent.clear()

    def _accept(self):
        self.server.sock.settimeout(0.1)
        while not self.server._stop.is_set():
            try:
                client, _ = self.server.sock.accept()
            except OSError:
                continue
            up = socket.create_connection(self.upstream)
            self.socks += [client, up]
            for a, b, to_redis in ((client, up, True), (up, client, False)):
                threading.Thread(target=self._pump, args=(a, b, to_redis), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, to_redis: bool):
        try:
            while data := src.recv(65536):
                if not self.silent.is_set():
                    dst.sendall(data)
                    if to_redis and self.trigger and self.trigger in data:
                        self.silent.set()
        except OSError:
            pass

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server._stop.set()
        self._thread.join(2)
        self.server.sock.close()
        for c in self.socks:
            c.close()


def test_redis_hangs_in_the_middle_of_a_dialog_then_comes_back(redis_url):
    from tests.support.e2e import Phone

    with RedisProxy(redis_url) as proxy, running_gateway(proxy.url) as (gw, _sim, _services):
        grace = Phone(gw, "+254700000101")
        assert grace.dial().startswith("CON Welcome Grace.")
        proxy.hang()
        r = requests.post(f"{gw}/gateways/africastalking/ussd", timeout=HOP_BUDGET, data={
            "sessionId": grace.session_id, "serviceCode": "*384*12#", "phoneNumber": grace.number,
            "networkCode": "63902", "text": "4"})
        assert (r.status_code, r.text) == (200, "END Service unavailable. Please try again later.")
        proxy.resume()
        assert grace.dial().startswith("CON Welcome Grace.")         # a new dial works again at once


def test_an_sms_whose_claim_reached_redis_but_not_its_answer_is_answered_on_a_later_retry(redis_url, pg_url):
    """The worst moment: Redis stores the message's "seen" mark and then stops answering. Africa's
    Talking gets 503; a retry while the mark is fresh gets 503 again (never a 200 for a message nobody
    answered); once the mark has run out (60 s) the retry is answered, once, and later ones are
    duplicates."""
    import redis as redis_lib
    import sqlalchemy as sa

    from convo.store.db import OutboxMessage, upgrade
    from convo.web.gateways import SMS_CLAIM_SECONDS

    upgrade(pg_url)
    form = {"from": "+254700000101", "to": "22384", "text": "HELP", "date": "2026-11-27 10:00:00",
            "id": "ATXid_fault_claim", "networkCode": "63902"}
    with RedisProxy(redis_url) as proxy, running_gateway(proxy.url, database_url=pg_url) as (gw, _sim, svc):
        def deliver() -> requests.Response:
            return requests.post(f"{gw}/gateways/africastalking/sms", data=form, timeout=HOP_BUDGET)

        proxy.hang_after(b"convo:sms-in:")
        assert deliver().status_code == 503
        proxy.resume()
        r = deliver()
        assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
        direct = redis_lib.Redis.from_url(redis_url)
        key = "convo:sms-in:{ATXid_fault_claim}"
        assert 0 < direct.ttl(key) <= SMS_CLAIM_SECONDS
        direct.delete(key)                                  # as SMS_CLAIM_SECONDS later
        assert deliver().text == "OK"
        assert deliver().text == "OK (duplicate)"
        with svc.db.connect() as c:
            keys = c.execute(sa.select(OutboxMessage.idempotency_key)).scalars().all()
        assert keys == ["reply:at-sms:ATXid_fault_claim"]


def test_redis_down_an_inbound_sms_is_refused_with_503_so_it_comes_again(dead_redis):
    with running_gateway(dead_redis) as (gw, _sim, _services):
        r = requests.post(f"{gw}/gateways/africastalking/sms", timeout=HOP_BUDGET, data={
            "from": "+254700000101", "to": "22384", "text": "BAL", "date": "2026-11-27 10:00:00",
            "id": "ATXid_fault_1", "networkCode": "63902"})
        assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
        assert "Traceback" not in r.text


def test_redis_down_healthz_is_503_and_names_redis(dead_redis):
    with running_gateway(dead_redis) as (gw, _sim, _services):
        r = requests.get(f"{gw}/healthz", timeout=HOP_BUDGET)
        body = r.json()
        assert r.status_code == 503 and body["ok"] is False
        assert body["failing"] == ["redis"] and body["redis"].startswith("unavailable")
        assert body["database"] == "ok"


def test_a_sms_refused_while_redis_was_down_is_answered_when_it_comes_again(redis_url, pg_url):
    """Africa's Talking delivers the 503'd message again: this time it is answered (one reply queued)."""
    import sqlalchemy as sa

    from convo.store.db import OutboxMessage, upgrade

    upgrade(pg_url)
    form = {"from": "+254700000101", "to": "22384", "text": "HELP", "date": "2026-11-27 10:00:00",
            "id": "ATXid_fault_again", "networkCode": "63902"}
    with running_gateway(f"redis://127.0.0.1:{refused_port()}/0", database_url=pg_url) as (gw, _s, _svc):
        assert requests.post(f"{gw}/gateways/africastalking/sms", data=form, timeout=5).status_code == 503
    with running_gateway(redis_url, database_url=pg_url) as (gw, _s, services):
        assert requests.post(f"{gw}/gateways/africastalking/sms", data=form, timeout=5).status_code == 200
        with services.db.connect() as c:
            rows = c.execute(sa.select(OutboxMessage.recipient, OutboxMessage.idempotency_key)).all()
        assert [tuple(r) for r in rows] == [("+254700000101", "reply:at-sms:ATXid_fault_again")]


# ------------------------------------------------------------------ database unreachable

def test_database_down_a_caller_at_the_pin_hears_service_unavailable_and_an_sms_gets_503(redis_url):
    """PostgreSQL refuses connections: the menu still opens (nothing there needs the database), the
    choice of Balance (it looks the PIN up in the database) ends with "service unavailable"; an SMS is 503."""
    from tests.support.e2e import Phone

    url = f"postgresql+psycopg://postgres@127.0.0.1:{refused_port()}/test"
    with running_gateway(redis_url, database_url=url) as (gw, _sim, _services):
        phone = Phone(gw, "+254700000101")
        assert phone.dial().startswith("CON Welcome Grace.")
        assert phone.answer("1") == "END Service unavailable. Please try again later."
        r = requests.post(f"{gw}/gateways/africastalking/sms", timeout=HOP_BUDGET, data={
            "from": "+254700000101", "to": "22384", "text": "BAL", "date": "2026-11-27 10:00:00",
            "id": "ATXid_fault_db", "networkCode": "63902"})
        assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0
        health = requests.get(f"{gw}/healthz", timeout=5)
        assert health.status_code == 503 and health.json()["failing"] == ["database"]
        assert "Connection refused" in health.json()["database"]


# ------------------------------------------------------------------ database schema behind the code

def _previous_revision() -> str:
    """The revision just below the head of the migration scripts (computed, never written down)."""
    from alembic.script import ScriptDirectory

    from convo.store.db import alembic_config, expected_heads

    (head,) = expected_heads()
    down = ScriptDirectory.from_config(alembic_config()).get_revision(head).down_revision
    assert isinstance(down, str)
    return down


@pytest.fixture(params=["sqlite", "postgresql"])
def behind_db(request, tmp_path):
    """A database migrated to one revision below the code's head (a deploy that skipped `convo db upgrade`)."""
    from convo.store.db import upgrade

    url = f"sqlite:///{tmp_path}/behind.db" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    upgrade(url, _previous_revision())
    return url


def test_serve_and_worker_refuse_to_start_on_a_database_behind_the_code(behind_db):
    from click.testing import CliRunner

    from convo.cli import main
    from convo.store.db import expected_heads

    runner = CliRunner()
    env = {"CONVO_DATABASE_URL": behind_db, "CONVO_REDIS_URL": "memory://"}
    for args in (["serve", "--port", "0"], ["worker", "--once"]):
        res = runner.invoke(main, args, env=env)
        assert res.exit_code == 1, res.output
        assert "not starting" in res.output and "run `convo db upgrade`" in res.output
        assert f"is at schema revision {_previous_revision()}, this code needs {expected_heads()[0]}" in res.output
    res = runner.invoke(main, ["db", "upgrade"], env=env)
    assert res.exit_code == 0 and "up to date" in res.output
    res = runner.invoke(main, ["worker", "--once"], env=env)      # migrated: it starts (and has nothing to send)
    assert res.exit_code == 0, res.output


def test_healthz_shows_the_schema_revision_and_is_503_until_the_database_is_upgraded(behind_db, redis_url):
    from convo.store.db import expected_heads, upgrade

    head = list(expected_heads())
    with running_gateway(redis_url, database_url=behind_db) as (gw, _sim, _services):
        r = requests.get(f"{gw}/healthz", timeout=5)
        body = r.json()
        assert r.status_code == 503 and body["failing"] == ["database"]
        assert body["database"] == "schema behind: run convo db upgrade"
        assert body["schema"] == {"revision": [_previous_revision()], "head": head}
        upgrade(behind_db)
        r = requests.get(f"{gw}/healthz", timeout=5)
        assert r.status_code == 200 and r.json()["schema"] == {"revision": head, "head": head}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_four_processes_upgrading_one_database_at_once_take_turns(backend, request, tmp_path):
    """Replicas started together each run `convo db upgrade`: all succeed, the schema ends at the head.
    (Without the lock one of them fails on a table another has just created.)"""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from convo.store.db import expected_heads, make_engine, schema_revision

    url = f"sqlite:///{tmp_path}/race.db" if backend == "sqlite" else request.getfixturevalue("pg_url")
    env = {**os.environ, "CONVO_DATABASE_URL": url}
    procs = [subprocess.Popen([str(Path(sys.executable).parent / "convo"), "db", "upgrade"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(4)]
    results = [(p.wait(120), p.stdout.read().decode(errors="replace")[-500:]) for p in procs]
    assert [code for code, _ in results] == [0, 0, 0, 0], results
    engine = make_engine(url)
    try:
        assert schema_revision(engine) == expected_heads()
    finally:
        engine.dispose()


def test_healthz_on_a_database_never_migrated(redis_url, tmp_path):
    with running_gateway(redis_url, database_url=f"sqlite:///{tmp_path}/empty.db") as (gw, _sim, _services):
        r = requests.get(f"{gw}/healthz", timeout=5)
        assert r.status_code == 503 and r.json()["schema"]["revision"] == []


# ------------------------------------------------------------------ Mifos X slow, callers dialling at once

CALLERS = 24
TRANSPORT_TIMEOUT = 10.0   # Africa's Talking gives up on a hop long before this


@contextmanager
def convo_serve(env: dict, *args: str):
    """``convo serve`` (granian, the shipped workers and threads) in its own process group; yields its URL."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    port = refused_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CONVO_", "GRANIAN_"))}
    log = open(Path(env["CONVO_DATABASE_URL"].split("///", 1)[1]).with_suffix(".log"), "wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "convo"), "serve", "--host", "127.0.0.1",
                             "--port", str(port), *args], env={**clean, **env}, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            assert proc.poll() is None, open(log.name).read()[-3000:]
            try:
                if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail("convo serve did not come up:\n" + open(log.name).read()[-3000:])
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()


def dial_all_at_once(gw: str, phones: list[str]) -> list[tuple[int, str]]:
    """Every phone dials at the same instant; (status, answer) each, or (0, why) on a transport error."""
    barrier = threading.Barrier(len(phones))
    out: list[tuple[int, str]] = [(0, "no answer")] * len(phones)

    def one(i: int, phone: str) -> None:
        barrier.wait()
        try:
            r = requests.post(f"{gw}/gateways/africastalking/ussd", timeout=TRANSPORT_TIMEOUT, data={
                "sessionId": f"ATUid_crowd_{i}", "serviceCode": "*384*12#", "phoneNumber": phone,
                "networkCode": "63902", "text": ""})
            out[i] = (r.status_code, r.text)
        except requests.RequestException as e:
            out[i] = (0, f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(phones)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TRANSPORT_TIMEOUT + 5)
    return out


def test_24_callers_dial_at_once_while_mifos_takes_2_s_per_call_and_all_get_their_menu(redis_url, tmp_path):
    """Against `convo serve --migrate` on a new database (as the Docker image starts)."""
    from convo.devkit.devserver import BackgroundServer
    from convo.devkit.fineract_seed import DEMO_PHONES
    from convo.devkit.fineract_sim import create_sim_app

    known = [p for p, _ in DEMO_PHONES][:CALLERS]
    phones = known + [f"+2547990{i:05d}" for i in range(CALLERS - len(known))]   # not in Mifos X
    db = f"sqlite:///{tmp_path}/convo.db"
    with BackgroundServer(create_sim_app()) as sim:
        # budgets with room over the 2 s calls, so a CI machine busy with 24 hops and the simulator on 2 CPUs
        # still gets the menus; queueing behind 2 threads (the old setting) would still take 12 s and more
        env = {"CONVO_REDIS_URL": redis_url, "CONVO_DATABASE_URL": db, "CONVO_FLOWS_RELOAD_SECONDS": "0",
               "CONVO_FINERACT_TIMEOUT": "4", "CONVO_HOP_BUDGET_SECONDS": "5",
               "CONVO_FINERACT_URL": f"{sim.url}/fineract-provider/api/v1", "CONVO_FINERACT_USER": "mifos",
               "CONVO_FINERACT_PASSWORD": "password", "CONVO_FINERACT_TENANT": "default"}
        with convo_serve(env, "--migrate") as gw:
            requests.post(f"{sim.url}/__sim/faults", json={"delay": 2}, timeout=5)
            answers = dict(zip(phones, dial_all_at_once(gw, phones)))
    for phone, (status, text) in answers.items():
        assert status == 200, (phone, status, text)
        if phone in known:
            assert text.startswith("CON "), (phone, text)          # their menu, not "try again later"
        else:
            assert text.startswith("END Sorry, this phone number is not registered"), (phone, text)
