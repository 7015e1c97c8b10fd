"""Routing (issue 12): the routes file, cheapest gateway first per country, failover, rate limits, health,
replies through the gateway they came in on, and what sending cost.

The gateways are two Africa's Talking accounts, each a local fake of AT's SMS API over real HTTP
(:mod:`convo.devkit.fake_at`, spoken to by the official SDK); outbox rows on PostgreSQL.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from convo.devkit.fake_at import start_fake_at
from convo.jobs.worker import Worker
from convo.notify.outbox import enqueue
from convo.notify.routing import Router, RoutesError, load_routes, parse_routes
from convo.store.db import OptOut, OutboxMessage, make_engine, upgrade
from gateways.base import SendResult

UG = "+256772123456"   # MTN Uganda
UG2 = "+256772123457"
UG3 = "+256772123458"
KE = "+254700000101"   # Safaricom Kenya (Grace, a client of the Fineract simulator)
ENV = {"AT_KEY": "k"}

ROUTES = """
rates: {USD: 1, KES: 0.0077, UGX: 0.00027}
gateways:
  at-dear: {type: africastalking, username: mfi, api_key: "${AT_KEY}", base_url: "%(dear)s"}
  at-cheap: {type: africastalking, username: mfi, api_key: "${AT_KEY}", base_url: "%(cheap)s"%(cheap_extra)s}
routes:
  - to: [UG]                        # 0.05 USD against 25 UGX = 0.00675 USD: at-cheap first
    via: [{gateway: at-dear, cost: 0.05, currency: USD}, {gateway: at-cheap, cost: 25, currency: UGX}]
  - to: "*"
    via: [{gateway: at-dear, cost: 1.2, currency: KES}]
"""


class Clock:
    """A monotonic clock the test moves by hand (no timed assertions)."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def fakes():
    dear, cheap = start_fake_at(), start_fake_at()
    try:
        yield dear, cheap
    finally:
        dear.stop()
        cheap.stop()


@pytest.fixture
def db(pg_url):
    upgrade(pg_url)
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


def routes_file(tmp_path, fakes, cheap_extra: str = "", text: str = ROUTES) -> str:
    dear, cheap = fakes
    p = tmp_path / "routes.yaml"
    p.write_text(text % {"dear": dear.url, "cheap": cheap.url, "cheap_extra": cheap_extra})
    return str(p)


def router(tmp_path, fakes, cheap_extra: str = "", clock=None, **kw) -> Router:
    return Router(load_routes(routes_file(tmp_path, fakes, cheap_extra), env=ENV, clock=clock or Clock()), **kw)


def send_all(engine, sender) -> None:
    worker = Worker(engine, sender, lease_seconds=60, retry_base_seconds=30)
    while worker.dispatch_once():
        pass


def row(engine, to: str) -> OutboxMessage:
    with sa.orm.Session(engine) as s:
        return s.scalars(sa.select(OutboxMessage).where(OutboxMessage.recipient == to)).one()


def numbers(fake) -> list[str]:
    return [m["number"] for m in fake.fake.messages]


# --------------------------------------------------------------------------- cheapest first, per country


def test_each_country_goes_to_its_cheapest_gateway_and_the_row_says_which_and_what_it_cost(tmp_path, fakes, db):
    dear, cheap = fakes
    enqueue(db, idempotency_key="ug", to=UG, body="Your loan is due on Friday")
    enqueue(db, idempotency_key="ke", to=KE, body="Your loan is due on Friday")
    send_all(db, router(tmp_path, fakes))

    assert numbers(cheap) == [UG] and numbers(dear) == [KE]     # UG: 25 UGX beats 0.05 USD; KE: the "*" route
    ug, ke = row(db, UG), row(db, KE)
    assert (ug.status, ug.gateway, ug.country, ug.cost_amount, ug.cost_currency, ug.last_error) == (
        "sent", "at-cheap", "UG", Decimal(25), "UGX", None)
    assert (ke.status, ke.gateway, ke.country, ke.cost_amount, ke.cost_currency) == (
        "sent", "at-dear", "KE", Decimal("1.2"), "KES")


def test_a_two_segment_message_costs_two_segments(tmp_path, fakes, db):
    enqueue(db, idempotency_key="long", to=UG, body="Your loan is due on Friday. " * 7)   # 196 chars: 2 parts
    send_all(db, router(tmp_path, fakes))
    r = row(db, UG)
    assert (r.parts, r.cost_amount, r.cost_currency) == (2, Decimal(50), "UGX")


# --------------------------------------------------------------------------- failover


def test_when_the_cheapest_gateway_answers_5xx_the_next_one_sends_it_and_the_row_says_so(tmp_path, fakes, db):
    dear, cheap = fakes
    cheap.fake.configure(http_error=503)
    enqueue(db, idempotency_key="ug", to=UG, body="Your loan is due on Friday")
    send_all(db, router(tmp_path, fakes))

    assert len(cheap.fake.requests) == 1 and numbers(dear) == [UG]
    r = row(db, UG)
    assert (r.status, r.gateway, r.attempts, r.cost_amount, r.cost_currency) == ("sent", "at-dear", 1,
                                                                                 Decimal("0.05"), "USD")
    assert r.last_error.startswith("sent via at-dear after: at-cheap: ")


def test_when_every_gateway_of_the_route_fails_the_message_waits_for_a_retry_with_each_error(tmp_path, fakes, db):
    dear, cheap = fakes
    dear.fake.configure(http_error=500)
    cheap.fake.configure(http_error=503)
    enqueue(db, idempotency_key="ug", to=UG, body="Your loan is due on Friday")
    send_all(db, router(tmp_path, fakes))

    r = row(db, UG)
    assert (r.status, r.attempts, r.cost_amount) == ("queued", 1, None)
    assert r.last_error.startswith("at-cheap: ") and "; at-dear: " in r.last_error


def test_a_permanent_refusal_is_not_failed_over(tmp_path, fakes, db):
    """403 InvalidPhoneNumber: another gateway would not make the number right (and would cost again)."""
    dear, cheap = fakes
    cheap.fake.configure(status_codes={UG: 403})
    enqueue(db, idempotency_key="ug", to=UG, body="Your loan is due on Friday")
    send_all(db, router(tmp_path, fakes))

    r = row(db, UG)
    assert (r.status, r.gateway, r.status_code) == ("failed", "at-cheap", 403)
    assert dear.fake.requests == []


def test_a_gateway_that_says_the_recipient_opted_out_marks_the_number_and_nothing_fails_over(db):
    """Twilio 21610 and the like: SendResult(opted_out=True) - the worker records the opt-out."""

    class Says21610:
        name = "twilio"

        def send(self, messages, *, deadline=None):
            return [SendResult.failed("21610 unsubscribed", opted_out=True, gateway="twilio") for _ in messages]

    enqueue(db, idempotency_key="ug", to=UG, body="Your loan is due on Friday")
    send_all(db, Says21610())
    assert row(db, UG).status == "failed"
    with sa.orm.Session(db) as s:
        assert (s.get(OptOut, UG).opted_out, s.get(OptOut, UG).source) == (True, "twilio")


# --------------------------------------------------------------------------- rate limits and health


def test_over_its_rate_limit_a_gateway_passes_the_rest_to_the_next_one(tmp_path, fakes):
    """max_per_second 1, burst 2, no waiting allowed: two go the cheap way, the third the dear way now."""
    dear, cheap = fakes
    r = router(tmp_path, fakes, ", max_per_second: 1, burst: 2", max_wait=0)
    from gateways.base import OutgoingSms

    got = r.send([OutgoingSms(i, to, f"Reminder {i}") for i, to in enumerate((UG, UG2, UG3), 1)])
    assert [x.gateway for x in got] == ["at-cheap", "at-cheap", "at-dear"]
    assert got[2].error == "sent via at-dear after: at-cheap: over its rate limit"
    assert sorted(numbers(cheap)) == [UG, UG2] and numbers(dear) == [UG3]


def test_within_max_wait_a_rate_limited_gateway_is_waited_for_not_paid_around(tmp_path, fakes):
    dear, cheap = fakes
    waits: list[float] = []
    r = router(tmp_path, fakes, ", max_per_second: 1, burst: 2", max_wait=5, sleep=waits.append)
    from gateways.base import OutgoingSms

    got = r.send([OutgoingSms(i, to, f"Reminder {i}") for i, to in enumerate((UG, UG2, UG3), 1)])
    assert [x.gateway for x in got] == ["at-cheap"] * 3 and dear.fake.requests == []
    assert waits == [1.0]                          # the third token, at one per second


def test_a_failing_gateway_is_skipped_for_a_while_then_tried_again(tmp_path, fakes):
    from gateways.base import OutgoingSms

    dear, cheap = fakes
    clock = Clock()
    r = router(tmp_path, fakes, ", failures: 2, pause_seconds: 60", clock=clock)
    cheap.fake.configure(http_error=503)
    for i in (1, 2):                               # two failed sends in a row: paused
        assert r.send([OutgoingSms(i, UG, f"m{i}")])[0].gateway == "at-dear"
    assert len(cheap.fake.requests) == 2 and r.state()["at-cheap"] == "paused"

    third = r.send([OutgoingSms(3, UG, "m3")])[0]
    assert len(cheap.fake.requests) == 2           # not even asked
    assert (third.gateway, third.error) == ("at-dear", "sent via at-dear after: at-cheap: paused after 2 failed sends")

    cheap.fake.configure(http_error=None)
    clock.t += 61                                  # the pause is over: it is tried again, and used
    assert r.send([OutgoingSms(4, UG, "m4")])[0].gateway == "at-cheap"
    assert r.state()["at-cheap"] == "ok" and len(cheap.fake.requests) == 3


def test_after_the_pause_one_more_failure_pauses_it_again(tmp_path, fakes):
    from gateways.base import OutgoingSms

    dear, cheap = fakes
    clock = Clock()
    r = router(tmp_path, fakes, ", failures: 2, pause_seconds: 60", clock=clock)
    cheap.fake.configure(http_error=503)
    for i in (1, 2):
        r.send([OutgoingSms(i, UG, f"m{i}")])
    clock.t += 61
    r.send([OutgoingSms(3, UG, "m3")])             # tried once more, fails
    assert len(cheap.fake.requests) == 3 and r.state()["at-cheap"] == "paused"


# --------------------------------------------------------------------------- the routes file, validated


def _parse(text: str, env=None):
    import yaml

    return parse_routes(yaml.safe_load(text), env=ENV if env is None else env)


GOOD_GW = 'gateways: {at: {type: africastalking, username: u, api_key: "${AT_KEY}"}}\n'


@pytest.mark.parametrize("text, message", [
    ('rates: {USD: 1}\ngateways: {tw: {type: twillio}}\nroutes: [{to: "*", via: [{gateway: tw, cost: 1, currency: USD}]}]',
     "gateways.tw.type: unknown gateway type 'twillio' (known: africastalking, kannel, log, smsgate, twilio)"),
    ('rates: {USD: 1}\n' + GOOD_GW + 'routes: [{to: [UG], via: [{gateway: phone-gulu, cost: 25, currency: USD}]}]',
     "routes[0].via[0].gateway: unknown gateway 'phone-gulu' (configured: at)"),
    ('rates: {USD: 1}\n' + GOOD_GW + 'routes: [{to: [UG], via: [{gateway: at, cost: 25, currency: UGX}]}]',
     "routes[0].via[0].currency: no rate for 'UGX' in rates (rates has: USD)"),
    ('rates: {USD: 1}\n' + GOOD_GW + 'routes: [{to: [KE, UK], via: [{gateway: at, cost: 1, currency: USD}]}]',
     "routes[0].to: 'UK' is not a region code (ISO 3166 alpha-2 in capitals as phonenumbers knows them, "
     "e.g. UG, KE, GB)"),
    ('rates: {USD: 1}\ngateways: {at: {type: africastalking, username: u, api_key: "${AT_SECRET}"}}\n'
     'routes: [{to: "*", via: [{gateway: at, cost: 1, currency: USD}]}]',
     "gateways.at.api_key: environment variable AT_SECRET is not set"),
    ('rates: {USD: 1}\ngateways: {at: {type: africastalking, username: u}}\n'
     'routes: [{to: "*", via: [{gateway: at, cost: 1, currency: USD}]}]',
     "gateways.at: gateway 'at' (type africastalking): missing 'api_key'"),
    ('rates: {USD: 1}\n' + GOOD_GW + 'routes: [{to: "*", via: [{gateway: at, cost: -1, currency: USD}]}]',
     "routes[0].via[0].cost: -1 is not a number"),
    ('rates: {USD: 1}\n' + GOOD_GW + 'routes: [{to: "*", via: [{gateway: at, currency: USD}]}]',
     "routes[0].via[0].cost: missing (price of one SMS segment)"),
    ('rates: {USD: 1}\n' + GOOD_GW + 'routes: []', "routes: list at least one route"),
])
def test_the_routes_file_is_refused_with_the_place_and_the_reason(text, message):
    with pytest.raises(RoutesError) as e:
        _parse(text)
    assert str(e.value).startswith(message)


def test_values_written_as_env_names_come_from_the_environment(tmp_path, fakes):
    """The fake refuses any other API key (401), as AT does."""
    from gateways.base import OutgoingSms

    dear, cheap = fakes
    cheap.fake.configure(api_key="s3cret")
    r = Router(load_routes(routes_file(tmp_path, fakes), env={"AT_KEY": "s3cret"}, clock=Clock()))
    assert r.send([OutgoingSms(1, UG, "m1")])[0].gateway == "at-cheap"
    assert cheap.fake.requests[0]["http_status"] == 201


def test_the_app_does_not_start_with_a_wrong_routes_file_and_says_where(tmp_path, redis_url, monkeypatch):
    from convo.config import Settings
    from convo.web import create_app

    monkeypatch.setenv("AT_KEY", "k")

    p = tmp_path / "routes.yaml"
    p.write_text('rates: {USD: 1}\n' + GOOD_GW + 'routes: [{to: [UG], via: [{gateway: at, cost: 25, currency: UGX}]}]')
    settings = Settings(redis_url=redis_url, database_url=f"sqlite:///{tmp_path}/c.db", routes_file=str(p))
    with pytest.raises(RoutesError, match=rf"^{p}: routes\[0\]\.via\[0\]\.currency: no rate for 'UGX'"):
        create_app(settings)


# --------------------------------------------------------------------------- replies through the inbound gateway


def test_a_reply_leaves_through_the_gateway_the_client_texted_even_when_another_is_cheaper(
        tmp_path, fakes, redis_url, pg_url, monkeypatch):
    """Grace texts at-dear's number; the "*" route would send from at-cheap (cheaper), the reply must not."""
    from convo.jobs.worker import run_worker
    from tests.support.e2e import Handset, running_gateway

    dear, cheap = fakes
    text = ROUTES.replace('via: [{gateway: at-dear, cost: 1.2, currency: KES}]',
                          'via: [{gateway: at-cheap, cost: 0.5, currency: KES}, {gateway: at-dear, cost: 1.2, '
                          'currency: KES}]')
    monkeypatch.setenv("AT_KEY", "k")
    upgrade(pg_url)
    with running_gateway(redis_url, database_url=pg_url, routes_file=routes_file(tmp_path, fakes, text=text),
                         callback_token="cb-token") as (gw, _sim, services):
        Handset(gw, KE, token="cb-token", name="at-dear").text("BAL", message_id="ATXid_dear_1")
        Handset(gw, KE, token="cb-token", name="at-dear").text("BAL", message_id="ATXid_dear_1")   # AT retries
        enqueue(services.db, idempotency_key="notice", to=KE, body="Branch closed on Monday")    # not a reply
        run_worker(services.settings, once=True, handle_signals=False, engine=services.db)
        with sa.orm.Session(services.db) as s:
            got = {r.idempotency_key: (r.via, r.gateway, r.status) for r in s.scalars(sa.select(OutboxMessage))}
    assert got == {"reply:at-dear:ATXid_dear_1": ("at-dear", "at-dear", "sent"),
                   "notice": (None, "at-cheap", "sent")}
    assert numbers(dear) == [KE] and numbers(cheap) == [KE]


def test_gateway_urls_are_the_configured_ones_and_the_callback_token_guards_them(tmp_path, fakes, redis_url,
                                                                                monkeypatch):
    import requests

    from tests.support.e2e import running_gateway

    monkeypatch.setenv("AT_KEY", "k")
    with running_gateway(redis_url, routes_file=routes_file(tmp_path, fakes), callback_token="cb-token") as (gw, _, _s):
        form = {"from": KE, "to": "22384", "text": "BAL", "id": "ATXid_x", "date": "2026-11-27"}
        assert requests.post(f"{gw}/gateways/at-cheap/sms", data=form, timeout=10).status_code == 403
        assert requests.post(f"{gw}/gateways/at-cheap/sms?token=nope", data=form, timeout=10).status_code == 403
        # no gateway named africastalking in this routes file: its old URL is gone
        r = requests.post(f"{gw}/gateways/africastalking/sms?token=cb-token", data=form, timeout=10)
        assert r.status_code == 404
        r = requests.post(f"{gw}/gateways/at-cheap/delivery?token=cb-token", timeout=10,
                          data={"id": "ATXid_unknown", "status": "Success"})
        assert (r.status_code, r.text) == (200, "OK (unknown id, recorded)")


# --------------------------------------------------------------------------- costs


def test_convo_report_costs_prints_messages_segments_and_cost_per_gateway_and_country(tmp_path, fakes, db, pg_url):
    from convo.cli import main

    enqueue(db, idempotency_key="ug1", to=UG, body="Your loan is due on Friday")
    enqueue(db, idempotency_key="ug2", to=UG2, body="Your loan is due on Friday. " * 7)    # 2 segments
    enqueue(db, idempotency_key="ke", to=KE, body="Your loan is due on Friday")
    send_all(db, router(tmp_path, fakes))
    month = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m")

    r = CliRunner().invoke(main, ["report", "costs", "--month", month], env={"CONVO_DATABASE_URL": pg_url})
    assert r.exit_code == 0, r.output
    assert r.output.splitlines() == [
        f"SMS costs {month} (sent; price per segment from the routes file)",
        "gateway   country  messages  segments     cost",
        "at-cheap  UG              2         3   75 UGX",
        "at-dear   KE              1         1  1.2 KES",
        "total     KES             1         1  1.2 KES",
        "total     UGX             2         3   75 UGX",
    ]
    r = CliRunner().invoke(main, ["report", "costs", "--month", "2020-01"], env={"CONVO_DATABASE_URL": pg_url})
    assert r.output.splitlines()[1:] == ["no messages sent"]
    r = CliRunner().invoke(main, ["report", "costs", "--month", "2026-13"], env={"CONVO_DATABASE_URL": pg_url})
    assert r.exit_code == 2 and "month must be YYYY-MM" in r.output

    from convo.web.ops import exposition_for

    text = exposition_for(db).decode()
    assert 'convo_sms_month_messages{country="UG",gateway="at-cheap"} 2.0' in text
    assert 'convo_sms_month_segments{country="UG",gateway="at-cheap"} 3.0' in text
    assert 'convo_sms_month_cost{country="UG",currency="UGX",gateway="at-cheap"} 75.0' in text
    assert 'convo_sms_month_cost{country="KE",currency="KES",gateway="at-dear"} 1.2' in text


def test_gateways_of_a_route_are_ordered_by_converted_price_and_equal_prices_keep_the_files_order():
    r = _parse('rates: {USD: 1, KES: 0.0077}\n'
               'gateways: {a: {type: log}, b: {type: log}, c: {type: log}}\n'
               'routes: [{to: [KE, UG], via: [{gateway: a, cost: 1, currency: KES}, {gateway: b, cost: 0.01, '
               'currency: USD}, {gateway: c, cost: 0.0077, currency: USD}]}]')
    # a: 0.0077 USD, b: 0.01 USD, c: 0.0077 USD -> a and c tie (a first, as written), then b
    assert [v.gateway for v in r.routes[0].via] == ["a", "c", "b"]
    assert r.route_for("UG") is r.routes[0] and r.route_for("TZ") is None


def test_a_country_no_route_lists_waits_in_the_queue_and_says_why():
    from gateways.base import OutgoingSms

    r = Router(_parse('rates: {KES: 1}\ngateways: {a: {type: log}}\n'
                      'routes: [{to: [KE], via: [{gateway: a, cost: 1, currency: KES}]}]'))
    tz, ke = r.send([OutgoingSms(1, "+255754123456", "hi"), OutgoingSms(2, KE, "hi")])
    assert (tz.status, tz.error, tz.failover) == ("retry", "no route to TZ", False)
    assert (ke.status, ke.gateway, ke.cost_amount, ke.cost_currency) == ("sent", "a", Decimal(1), "KES")
