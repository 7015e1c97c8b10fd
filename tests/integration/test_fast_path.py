"""The lean USSD entry (convo/web/fast.py) answers exactly as Flask does (issue 13).

Two apps on the same settings, simulator and Redis database: one with the lean entry, one without
(``create_app(..., lean=False)``). Each example is a short dialog of USSD callbacks, valid or hostile
(NUL bytes, oversize bodies and query strings, wrong or missing tokens, callers outside the allow-list,
other content types and methods, broken fields); it is played on one app, Redis emptied, then on the
other. Status, content type, body, the hop and refusal counters and the service's log lines must match
callback for callback.
"""
from __future__ import annotations

import logging
import threading
from urllib.parse import parse_qsl, quote, urlencode

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from convo import metrics

CB = "cb-token-fast-0123456789"
URL = "/gateways/africastalking/ussd"
PHONES = ["+254700000101", "+254700000102", "+254700000103", "+255750000118", "+254799999999"]


@pytest.fixture(scope="module")
def apps(_redis_db, sim, tmp_path_factory):
    import redis

    from convo.cli import sim_settings
    from convo.store.db import upgrade
    from convo.web import create_app

    url = f"redis://127.0.0.1:6379/{_redis_db}"
    db = f"sqlite:///{tmp_path_factory.mktemp('fast')}/convo.store.db"
    upgrade(db)
    settings = sim_settings(sim.url, redis_url=url, database_url=db, flows_reload_seconds=0, callback_token=CB,
                            callback_allow_ips="127.0.0.0/8, 196.201.214.0/24", trusted_proxies=1,
                            pin_argon2_memory_kib=1024, pin_argon2_time_cost=1)
    lean, plain = create_app(settings), create_app(settings, lean=False)
    assert type(lean.wsgi_app).__name__ == "LeanUssd" and type(plain.wsgi_app).__name__ != "LeanUssd"
    yield lean, plain, redis.Redis.from_url(url)
    for a in (lean, plain):
        a.extensions["convo"].db.dispose()


class Lines(logging.Handler):
    """The service's own log lines (convo.*, gateways.*) logged by the requests' thread, as text: background
    threads (an earlier test's audit writer flushing late) are not what a request answered."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.thread = threading.get_ident()

    def emit(self, record):
        if record.thread == self.thread and record.name.startswith(("convo", "gateways")):
            self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


def counters() -> dict:
    out = {}
    for metric in (metrics.HOPS, metrics.BAD_REQUESTS):
        for family in metric.collect():
            for s in family.samples:
                if s.name.endswith("_total"):
                    out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def play(app, calls: list[dict]) -> list[tuple]:
    """Each call through ``app``'s WSGI entry: (status, content type, body, counter changes, log lines)."""
    c = app.test_client()
    handler = Lines()
    root, gw_log = logging.getLogger(), logging.getLogger("convo.web.gateways")
    level = gw_log.level
    root.addHandler(handler)
    gw_log.setLevel(logging.DEBUG)                       # the hop's DEBUG line, PINs redacted, is compared too
    out = []
    try:
        for call in calls:
            before = counters()
            handler.lines = []
            r = c.open(call["path"], method=call["method"], data=call["body"], headers=call["headers"],
                       content_type=call["content_type"], environ_base={"REMOTE_ADDR": call["remote"]},
                       environ_overrides=call["environ"])
            after = counters()
            changed = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
            out.append((r.status_code, r.headers.get("Content-Type"), r.get_data(), changed, handler.lines))
    finally:
        root.removeHandler(handler)
        gw_log.setLevel(level)
    return out


# --------------------------------------------------------------------------- hostile and valid callbacks
FIELDS = ("sessionId", "serviceCode", "phoneNumber", "networkCode", "text")
field_values = {
    "sessionId": st.sampled_from(["ATUid_1", "ATUid_2", "", " ATUid_1 ", "bad id!", "x" * 129, "ATUid_\x00"]),
    "serviceCode": st.sampled_from(["*384*12#", "*384*12*1#", "", "384", "*384*12#\x00", "*" * 40]),
    "phoneNumber": st.sampled_from(PHONES + ["", "0700000101", "not a phone", "+2547\x00", "+" + "9" * 30]),
    "networkCode": st.sampled_from(["63902", "", "abc", "1" * 11]),
    "text": st.sampled_from(["", "1", "4", "9", "9*4", "1*482617", "5*2", "\x01", "a" * 501, "1\x00", "é*1"]),
}
MUTATIONS = ["none"] * 6 + [
    "drop_field", "duplicate_field", "plus_and_percent", "raw_non_utf8", "oversize_body", "empty_body",
    "text_plain", "json", "multipart", "charset", "get", "put", "wrong_token", "no_token", "token_twice",
    "token_nul", "long_query", "foreign_ip", "forwarded_ok", "forwarded_foreign", "header_nul", "trailing_slash",
    "no_content_length", "bad_content_length", "short_body", "query_form_field"]


@st.composite
def dialogs(draw):
    """1-3 callbacks of one session (cumulative text), each valid or bent by one mutation."""
    phone = draw(st.sampled_from(PHONES))
    sid = f"ATUid_fast_{draw(st.integers(0, 10**9))}"
    inputs = draw(st.lists(st.sampled_from(["1", "4", "9", "2", "0", "00", "482617", "12345"]), max_size=2))
    texts = ["*".join(inputs[:i]) for i in range(len(inputs) + 1)]
    calls = []
    for text in texts:
        form = {"sessionId": sid, "serviceCode": "*384*12#", "phoneNumber": phone, "networkCode": "63902",
                "text": text}
        if draw(st.booleans()):
            name = draw(st.sampled_from(FIELDS))
            form[name] = draw(field_values[name])
        calls.append(bend(form, draw(st.sampled_from(MUTATIONS)), draw))
    return calls


def bend(form: dict, how: str, draw) -> dict:
    call = {"path": URL, "method": "POST", "query": [("token", CB)], "headers": {},
            "content_type": "application/x-www-form-urlencoded", "remote": "127.0.0.1", "environ": {}}
    pairs = list(form.items())
    body: bytes | None = None
    if how == "drop_field":
        pairs.pop(draw(st.integers(0, len(pairs) - 1)))
    elif how == "duplicate_field":
        k, v = draw(st.sampled_from(pairs))
        pairs.insert(0 if draw(st.booleans()) else len(pairs), (k, v + "9"))
    elif how == "plus_and_percent":
        body = "&".join(f"{quote(k)}={quote(v, safe='').replace('%20', '+')}%2B" for k, v in pairs).encode()
    elif how == "raw_non_utf8":
        body = urlencode(pairs).encode() + b"&text=\xff\xfe"
    elif how == "oversize_body":
        pairs.append(("pad", "x" * draw(st.sampled_from([8 * 1024 - 200, 8 * 1024, 9000]))))
    elif how == "empty_body":
        body = b""
    elif how in ("text_plain", "json", "multipart", "charset"):
        call["content_type"] = {"text_plain": "text/plain", "json": "application/json",
                                "multipart": "multipart/form-data; boundary=x",
                                "charset": draw(st.sampled_from(["application/x-www-form-urlencoded; charset=utf-8",
                                                                 "Application/X-WWW-Form-Urlencoded",
                                                                 "application/x-www-form-urlencoded; charset=latin-1"]))}[how]
    elif how in ("get", "put"):
        call["method"] = how.upper()
    elif how == "wrong_token":
        call["query"] = [("token", draw(st.sampled_from([CB[:-1], CB + "x", "", "é" + CB])))]
    elif how == "no_token":
        call["query"] = []
    elif how == "token_twice":
        call["query"] = [("token", CB), ("token", "wrong")] if draw(st.booleans()) else [("token", "x"), ("token", CB)]
    elif how == "token_nul":
        call["query"] = [("token", CB), ("x", "\x00")]
    elif how == "long_query":
        call["query"].append(("pad", "q" * draw(st.sampled_from([2000, 2100]))))
    elif how == "foreign_ip":
        call["remote"] = draw(st.sampled_from(["10.0.0.1", "::1", "196.201.214.7", "not-an-ip"]))
    elif how == "forwarded_ok":
        call["headers"]["X-Forwarded-For"] = draw(st.sampled_from(["196.201.214.9", "1.2.3.4, 196.201.214.9"]))
    elif how == "forwarded_foreign":
        call["headers"]["X-Forwarded-For"] = draw(st.sampled_from(["8.8.8.8", "196.201.214.9, 8.8.8.8", ""]))
    elif how == "header_nul":
        call["headers"]["X-Note"] = "a\x00b"
    elif how == "trailing_slash":
        call["path"] = draw(st.sampled_from([URL + "/", "/gateways//africastalking/ussd", "/gateways/nope/ussd"]))
    elif how == "no_content_length":
        call["environ"]["CONTENT_LENGTH"] = ""
    elif how == "bad_content_length":
        call["environ"]["CONTENT_LENGTH"] = draw(st.sampled_from(["-1", "abc", "99999", "1e3"]))
    elif how == "short_body":
        body = urlencode(pairs).encode()
        call["environ"]["CONTENT_LENGTH"] = str(len(body) + 10)
    elif how == "query_form_field":
        call["query"].append(("text", "1"))
    call["body"] = body if body is not None else urlencode(pairs).encode()
    call["path"] += "?" + urlencode(call["query"]) if call["query"] else ""
    return call


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(dialogs())
def test_the_lean_entry_answers_every_callback_as_flask_does(apps, calls):
    lean, plain, r = apps
    r.flushdb()
    got = play(lean, calls)
    r.flushdb()
    want = play(plain, calls)
    r.flushdb()
    for call, g, w in zip(calls, got, want):
        assert g == w, (call, g, w)


def test_a_whole_dialog_through_the_lean_entry_counts_and_answers_as_flask(apps):
    lean, plain, r = apps
    calls = [bend({"sessionId": "ATUid_walk", "serviceCode": "*384*12#", "phoneNumber": "+254700000101",
                   "networkCode": "63902", "text": t}, "none", None) for t in ("", "4", "4*1")]
    r.flushdb()
    got = play(lean, calls)
    r.flushdb()
    assert got == play(plain, calls)
    assert got[0][0] == 200 and got[0][2].startswith(b"CON Welcome Grace")
    assert got[1][2].startswith(b"END Next meeting")
    assert got[0][3] == {("convo_hops_total", (("channel", "ussd"), ("gateway", "africastalking"),
                                               ("result", "continue"))): 1.0}
    assert any("ussd hop ATUid_walk" in line for line in got[0][4])


def test_hostile_callbacks_reach_flask_and_are_refused_with_the_reason(apps):
    lean, _, _ = apps
    c = lean.test_client()
    form = {"sessionId": "ATUid_h", "serviceCode": "*384*12#", "phoneNumber": "+254700000101", "text": ""}
    r = c.post(URL, data=form)
    assert (r.status_code, r.get_data(as_text=True)) == (403, "forbidden: missing or wrong token")
    r = c.post(URL + "?token=" + CB, data={**form, "text": "1\x00"})
    assert r.status_code == 400 and "NUL" in r.get_data(as_text=True)
    r = c.post(URL + "?token=" + CB, data={**form, "pad": "x" * 9000})
    assert r.status_code == 413 and "8192" in r.get_data(as_text=True)
    r = c.post(URL + "?token=" + CB, data=form, environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert (r.status_code, r.get_data(as_text=True)) == (403, "forbidden: caller address not allowed")
    r = c.post(URL + "?token=" + CB, data={**form, "sessionId": "bad id!"})
    assert r.status_code == 400 and "sessionId" in r.get_data(as_text=True)


def test_a_hop_that_raises_is_answered_by_flasks_error_handler(apps, monkeypatch, caplog):
    lean, _, r = apps
    r.flushdb()

    def broken(msg):
        raise RuntimeError("engine broke")

    monkeypatch.setattr(lean.extensions["convo"].engine, "handle", broken)
    form = {"sessionId": "ATUid_x", "serviceCode": "*384*12#", "phoneNumber": "+254700000101", "text": ""}
    with caplog.at_level(logging.ERROR, logger="convo.web"):
        resp = lean.test_client().post(URL + "?token=" + CB, data=form)
    assert (resp.status_code, resp.get_data(as_text=True)) == (500, "internal error")
    assert any(rec.getMessage() == f"unhandled error on {URL}" and rec.exc_info for rec in caplog.records)


def test_an_app_with_a_request_hook_the_lean_entry_does_not_know_sends_hops_through_flask(apps, sim, tmp_path):
    from convo.cli import sim_settings
    from convo.store.db import upgrade
    from convo.web import create_app

    lean, _, r = apps
    db = f"sqlite:///{tmp_path}/convo.store.db"
    upgrade(db)
    app = create_app(sim_settings(sim.url, redis_url=lean.extensions["convo"].settings.redis_url, database_url=db,
                                  flows_reload_seconds=0))
    seen = []
    app.before_request(lambda: seen.append(1))
    r.flushdb()
    form = {"sessionId": "ATUid_hook", "serviceCode": "*384*12#", "phoneNumber": "+254700000101", "text": ""}
    resp = app.test_client().post(URL, data=form)
    assert resp.status_code == 200 and resp.get_data(as_text=True).startswith("CON ")
    assert seen == [1]                                  # Flask ran the hop, with the new hook
    app.extensions["convo"].db.dispose()


# --------------------------------------------------------------------------- the form reader
@given(st.text(alphabet=st.sampled_from("ab=&+%2F4GzZé\x00 ;"), max_size=40))
def test_form_items_read_a_body_as_werkzeug_does(text):
    from convo.web.fast import form_items

    assert form_items(text) == parse_qsl(text, keep_blank_values=True, errors="werkzeug.url_quote")


# --------------------------------------------------------------------------- the session codec
json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=20)
                           | st.floats(allow_nan=False),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=12)


@given(st.dictionaries(st.sampled_from(["v", "f", "s", "vars", "lang", "pg", "np", "stk", "n", "r", "e", "t", "sp"])
                       | st.text(max_size=6), json_values, max_size=16))
def test_a_session_reads_back_as_it_was_written(data):
    from convo.dialog.sessions import decode_session, encode_session

    raw = encode_session(data)
    assert decode_session(raw.encode()) == data
    assert raw.startswith("[1,")


def test_sessions_written_before_the_codec_are_read_and_carry_on(apps):
    import json

    from convo.dialog.sessions import encode_session

    lean, _, r = apps
    r.flushdb()
    c = lean.test_client()
    form = {"sessionId": "ATUid_old", "serviceCode": "*384*12#", "phoneNumber": "+254700000101",
            "networkCode": "63902", "text": ""}
    assert c.post(f"{URL}?token={CB}", data=form).get_data(as_text=True).startswith("CON Welcome Grace")
    key = next(iter(r.scan_iter("convo:{ussd:*}:s")))
    new = r.get(key)
    data = lean.extensions["convo"].sessions.peek(key.decode()[len("convo:{"):-len("}:s")])
    assert new == encode_session(data).encode() and len(new) < len(json.dumps(data, separators=(",", ":")))
    # the same conversation as the code before the codec wrote it: a JSON object, keys and all
    r.set(key, json.dumps(data, separators=(",", ":"), ensure_ascii=False), ex=200)
    assert c.post(f"{URL}?token={CB}", data={**form, "text": "4"}).get_data(as_text=True).startswith(
        "END Next meeting")


def test_a_session_from_a_newer_codec_is_a_new_dialog_not_an_error(apps, caplog):
    lean, _, r = apps
    r.flushdb()
    form = {"sessionId": "ATUid_v9", "serviceCode": "*384*12#", "phoneNumber": "+254700000101",
            "networkCode": "63902", "text": ""}
    r.set("convo:{ussd:africastalking:ATUid_v9:+254700000101}:s", b'[9,1,"x"]', ex=200)
    with caplog.at_level(logging.WARNING, logger="convo.dialog.sessions"):
        resp = lean.test_client().post(f"{URL}?token={CB}", data=form)
    assert resp.get_data(as_text=True).startswith("CON Welcome Grace")
    assert any("unknown format" in rec.getMessage() for rec in caplog.records)


# --------------------------------------------------------------------------- static texts
@given(st.text(alphabet=st.sampled_from("ab {}%#\n é"), max_size=30))
def test_a_text_without_jinja_syntax_is_kept_as_jinja_would_render_it(source):
    from convo.text import templates as render

    if render.is_static(source):
        tpl = render.compile_template(render.make_env(), source, name="t")
        assert tpl.render({}).strip() == source.strip()



# --------------------------------------------------------------------------- drop-off counts off the hop path
def test_drop_off_counts_reach_redis_within_a_second_without_a_command_on_the_hop(redis_url):
    import time
    from collections import Counter

    import redis as redis_lib

    from convo.dialog import stats

    r = redis_lib.Redis.from_url(redis_url)
    stats.PENDING.flush()                                     # what earlier tests' hops counted, then a clean slate
    r.flushdb()
    stats.PENDING.add(r, "v1", Counter({("main", "menu", "in"): 1, ("main", "menu", ">balance"): 2}), 90)
    stats.PENDING.add(r, "v1", Counter({("main", "menu", "in"): 1}), 90)
    assert r.keys("convo:{stats}:*") == []                    # nothing written by the hops themselves
    deadline = time.monotonic() + 3
    while not r.exists(stats.TOTAL_KEY) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert r.hgetall(stats.TOTAL_KEY) == {b"main|menu|entered": b"2", b"main|menu|next": b"2"}
    day = [k for k in r.keys("convo:{stats}:d:v1:*")]
    assert len(day) == 1 and r.hgetall(day[0]) == {b"main|menu|in": b"2", b"main|menu|>balance": b"2"}
    assert 89 * 86400 < r.ttl(day[0]) <= 90 * 86400 and stats.versions(r)[0][0] == "v1"


def test_drop_off_counts_a_failed_write_could_not_store_are_written_later(redis_url):
    from collections import Counter

    import redis as redis_lib

    from convo.dialog import stats

    good = redis_lib.Redis.from_url(redis_url)
    stats.PENDING.flush()
    good.flushdb()
    client = redis_lib.Redis(host="127.0.0.1", port=1, db=good.connection_pool.connection_kwargs["db"],
                             socket_connect_timeout=0.2)                 # nothing listens on port 1
    pending = stats.Pending()
    pending.add(client, "v2", Counter({("f", "s", "end"): 3}), 90)
    pending.flush()                                                      # refused: kept
    assert good.keys("convo:{stats}:*") == []
    client.connection_pool.connection_kwargs["port"] = 6379              # Redis is back
    client.connection_pool.reset()
    pending.flush()
    assert good.hgetall(stats.TOTAL_KEY) == {b"f|s|ended": b"3"}
