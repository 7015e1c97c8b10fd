"""Who is calling (issue 9, items 1-2): a caller is a client only when the number stored in Mifos X,
read in the client's own country, is the caller's E.164 number; a phone shared by several clients
makes the caller choose, by first name, before anything else.

Contracts come from Apache Fineract's source (github:apache/fineract, 2024-10):
``m_client.mobile_no`` is UNIQUE, and ``GET /search`` answers clients newest first, 50 at most.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import date

import pytest
import redis
import responses
import sqlalchemy as sa

from convo.devkit import fineract_seed as seed
from convo.devkit.devserver import BackgroundServer
from convo.devkit.fineract_sim import create_sim_app
from convo.mifos.client import MifosClient, MifosUnavailable
from convo.store.db import OutboxMessage
from tests.support.e2e import Handset, Phone, running_gateway, running_sms_stack

TODAY = date(2026, 11, 27)
SHARED = seed.SHARED_PHONE                   # Achieng (37, "+254700000150") and Baraka (38, "0700000150")
ACHIENG, BARAKA = seed.SHARED_PHONE_CLIENTS
KENYAN_WAIRIMU = "+254771000127"             # client 40 "0771000127"; Fatou (27, Dakar) is "771000127"
KENYAN_NOBODY = "+254710000119"              # Rehema (19, Dar es Salaam) is "0710000119"
KENYAN_NDEYE = "+254771000141"               # Ndeye (41, Dakar Médina, an office notify.yaml omits) is "771000141"
FATOU, REHEMA = "+221771000127", "+255710000119"
PIN = "5820"
#: the offices of flows/notify.yaml
REGIONS = {1: "KE", 2: "KE", 3: "KE", 4: "TZ", 5: "TZ", 6: "SN", 7: "CI"}


def give_pin(services, phone: str, client_id: int, pin: str) -> None:
    from convo.security import PinHasher
    from convo.store.subscribers import set_pin

    set_pin(services.db, PinHasher.from_settings(services.settings), phone, client_id, pin)


def options(screen: str) -> list[str]:
    """The numbered lines of a menu screen, without their numbers."""
    return [m.group(2) for m in re.finditer(r"^(\d+)\. (.*)$", screen, re.M)]


def assert_names_only(screen: str) -> None:
    """The choice shows first names and option numbers, never a figure, an id or an account."""
    body = re.sub(r"^\d+\. ", "", screen, flags=re.M)
    assert not re.search(r"\d", body), screen
    assert "KES" not in screen and "Otieno" not in screen


# ------------------------------------------------------------------ contracts and the client


def test_fineract_keeps_mobile_numbers_unique_so_a_shared_phone_has_several_spellings():
    """``m_client.mobile_no`` is ``VARCHAR(50)`` with ``unique="true"``
    (fineract-provider/src/main/resources/db/changelog/tenant/parts/0001_initial_schema.xml, table
    m_client; ``@UniqueConstraint(columnNames = {"mobile_no"}, name = "mobile_no_UNIQUE")`` in
    fineract-core/.../portfolio/client/domain/Client.java). Two clients can share a phone only by
    being typed in in different spellings, so every spelling must be searched."""
    clients = seed.build(TODAY)["clients"].values()
    stored = [c["mobileNo"] for c in clients if c.get("mobileNo")]
    assert len(stored) == len(set(stored))
    shared = {c["id"]: c["mobileNo"] for c in clients if c["id"] in (ACHIENG, BARAKA, 39)}
    assert shared == {ACHIENG: "+254700000150", BARAKA: "0700000150", 39: "254700000150"}


def test_simulator_search_answers_newest_client_first_and_at_most_50():
    """SearchReadPlatformServiceImpl.searchSchema: the client part ends ``order by c.id desc`` and the
    whole query ``sqlGenerator.limit(50, 0)``; with ``exactMatch=true`` the query is compared as given
    (``like :search`` without ``%``), else wrapped in ``%...%``."""
    http = create_sim_app(today=TODAY).test_client()
    auth = {"Authorization": "Basic bWlmb3M6cGFzc3dvcmQ=", "Fineract-Platform-TenantId": "default"}
    api = "/fineract-provider/api/v1/search"
    rows = http.get(api, query_string={"query": "700000150", "resource": "clients"}, headers=auth).get_json()
    assert [r["entityId"] for r in rows] == [39, BARAKA, ACHIENG]
    exact = http.get(api, query_string={"query": "0700000150", "resource": "clients", "exactMatch": "true"},
                     headers=auth).get_json()
    assert [r["entityId"] for r in exact] == [BARAKA] and exact[0]["parentId"] == 2
    every = http.get(api, query_string={"query": "0", "resource": "clients"}, headers=auth).get_json()
    assert len(every) == 41 and [r["entityId"] for r in every] == sorted((r["entityId"] for r in every), reverse=True)


@pytest.fixture(scope="module")
def sim():
    with BackgroundServer(create_sim_app(today=TODAY)) as server:
        yield server.url + "/fineract-provider/api/v1"


@pytest.fixture
def mifos(sim):
    return MifosClient(sim, "mifos", "password", breaker_failures=1000)


def ids(refs) -> list[int]:
    return [r.id for r in refs]


def test_numbers_without_country_code_are_read_in_the_clients_country(mifos):
    region = REGIONS.get
    assert ids(mifos.clients_by_phone(KENYAN_WAIRIMU, region)) == [40]      # never Fatou of Dakar
    assert ids(mifos.clients_by_phone(KENYAN_NOBODY, region)) == []         # never Rehema of Dar es Salaam
    assert ids(mifos.clients_by_phone(FATOU, region)) == [27]
    assert ids(mifos.clients_by_phone(REHEMA, region)) == [19]
    # every spelling of the demo phones still finds its client
    for e164, _ in seed.DEMO_PHONES:
        assert mifos.clients_by_phone(e164, region), e164


def test_the_region_is_the_offices_own_and_the_default_only_for_offices_without_one(mifos):
    """With no office regions at all (CONVO_DEFAULT_REGION for every office) a Kenyan-default MFI
    reads Fatou's "771000127" as Kenyan: the office table is what keeps Dakar's numbers Senegalese."""
    asked = set()

    def region(office_id):
        asked.add(office_id)
        return REGIONS.get(office_id)

    mifos.clients_by_phone(KENYAN_WAIRIMU, region)
    assert asked == {3, 6}                                                # Wairimu's office and Fatou's
    assert ids(mifos.clients_by_phone(KENYAN_WAIRIMU, lambda _office: "KE")) == [27, 40]


def test_a_shared_phone_gives_every_live_client_of_every_spelling(mifos):
    refs = mifos.clients_by_phone(SHARED, REGIONS.get)
    assert ids(refs) == [ACHIENG, BARAKA]                                 # 39 is closed
    assert [r.display_name for r in refs] == ["Achieng Akinyi Otieno", "Baraka Ouma Otieno"]


def test_one_failed_search_fails_the_whole_lookup():
    """A partial answer could hide the second client of a shared phone: no silent pick."""
    base = "http://fineract.test/fineract-provider/api/v1"
    client = MifosClient(base, "mifos", "password", breaker_failures=1000)
    row = {"entityId": ACHIENG, "entityName": "Achieng Akinyi Otieno", "entityType": "CLIENT", "parentId": 2,
           "entityMobileNo": "+254700000150",
           "entityStatus": {"id": 300, "code": "clientStatusType.active", "value": "Active"}}

    def answer(request):
        if request.params["query"] == "0700000150":
            return 500, {}, '{"error": "boom"}'
        return 200, {"Content-Type": "application/json"}, ("[" + __import__("json").dumps(row) + "]"
                                                            if request.params["query"] == "+254700000150" else "[]")

    with responses.RequestsMock() as mocked:
        mocked.add_callback(responses.GET, base + "/search", callback=answer)
        with pytest.raises(MifosUnavailable):
            client.clients_by_phone(SHARED, REGIONS.get)
        assert sorted(c.request.params["query"] for c in mocked.calls) == sorted(
            ["+254700000150", "254700000150", "0700000150", "700000150"])


def test_the_choice_shows_first_names_and_the_next_name_only_where_two_are_the_same():
    from convo.actions.mifos import _choice_labels

    family = [{"id": 37, "name": "Achieng Akinyi Otieno", "first_name": "Achieng"},
              {"id": 38, "name": "Baraka Ouma Otieno", "first_name": "Baraka"}]
    _choice_labels(family)
    assert [c["label"] for c in family] == ["Achieng", "Baraka"]
    twins = [{"id": 1, "name": "Grace Akinyi Otieno", "first_name": "Grace"},
             {"id": 2, "name": "Grace Atieno Otieno", "first_name": "Grace"},
             {"id": 3, "name": "Peter Otieno", "first_name": "Peter"}]
    _choice_labels(twins)
    assert [c["label"] for c in twins] == ["Grace Akinyi", "Grace Atieno", "Peter Otieno"]


def _services_with_offices(tmp_path, offices_yaml: str, parents: dict):
    """Just what :func:`office_regions` uses: settings, the cache, and Mifos X's office tree."""
    from types import SimpleNamespace

    import fakeredis

    from convo.config import Settings
    from convo.mifos.cache import Cache

    (tmp_path / "notify.yaml").write_text(offices_yaml, encoding="utf-8")
    asked = []

    class Mifos:
        def office_parents(self):
            asked.append(1)
            return parents

    services = SimpleNamespace(settings=Settings(flows_dir=str(tmp_path), default_region="KE"),
                               cache=Cache(fakeredis.FakeRedis()), mifos=Mifos())
    return services, asked


def test_office_regions_listed_inherited_and_default(tmp_path):
    from convo.notify.recipients import office_regions

    tree = {1: None, 2: 1, 6: 1, 8: 6, 9: 8}
    services, asked = _services_with_offices(tmp_path, "offices:\n  6: {region: SN}\n", tree)
    region = office_regions(services)
    assert [region(o) for o in (6, 8, 9, 2, 1, None, 404)] == ["SN", "SN", "SN", "KE", "KE", "KE", "KE"]
    assert asked == [1]                                          # the tree is read once, then cached
    assert office_regions(services)(9) == "SN" and asked == [1]


def test_office_regions_without_any_region_use_the_default_and_never_ask_mifos(tmp_path):
    from convo.notify.recipients import office_regions

    services, asked = _services_with_offices(tmp_path, "offices:\n  6: {timezone: Africa/Dakar}\n", {})
    assert office_regions(services)(6) == "KE" and office_regions(services)(8) == "KE" and asked == []


# ------------------------------------------------------------------ over USSD, end to end


@contextmanager
def gateway_over(dataset: dict, redis_url: str, tmp_path):
    """The gateway in front of a simulator serving ``dataset`` (both over HTTP)."""
    from convo.cli import sim_settings
    from convo.store.db import upgrade
    from convo.web import create_app

    db = f"sqlite:///{tmp_path}/convo.db"
    upgrade(db)
    with BackgroundServer(create_sim_app(dataset, today=TODAY)) as sim:
        app = create_app(sim_settings(sim.url, redis_url=redis_url, database_url=db, flows_reload_seconds=0))
        try:
            with BackgroundServer(app) as gw:
                yield gw.url
        finally:
            app.extensions["convo"].db.dispose()


def _status(data: dict, client_id: int, word: str) -> None:
    code = {"pending": 100, "active": 300, "closed": 600}[word]
    data["clients"][client_id].update(status={"id": code, "code": f"clientStatusType.{word}", "value": word.title()},
                                      active=word == "active")


def test_pending_clients_are_offered_only_when_no_client_of_the_phone_is_active(redis_url, tmp_path):
    data = seed.build(TODAY)
    _status(data, 39, "pending")                             # Otieno Were, "254700000150"
    with gateway_over(data, redis_url, tmp_path) as gw:
        assert Phone(gw, SHARED).dial() == "CON Choose your name:\n1. Achieng\n2. Baraka"
    for cid in (ACHIENG, BARAKA):
        _status(data, cid, "closed")
    redis.Redis.from_url(redis_url).flushdb()                # forget the cached phone -> clients answer
    (tmp_path / "later").mkdir()
    with gateway_over(data, redis_url, tmp_path / "later") as gw:
        assert Phone(gw, SHARED).dial().startswith("CON Welcome Otieno.")




@pytest.fixture(scope="module")
def stack(_redis_db, tmp_path_factory):
    import redis

    from convo.store.db import upgrade

    url = f"redis://127.0.0.1:6379/{_redis_db}"
    redis.Redis.from_url(url).flushdb()
    db = f"sqlite:///{tmp_path_factory.mktemp('identity')}/convo.db"
    upgrade(db)
    with running_gateway(url, database_url=db) as s:
        services = s[2]
        for phone, cid in ((SHARED, ACHIENG), (SHARED, BARAKA), (KENYAN_WAIRIMU, 40)):
            give_pin(services, phone, cid, PIN)
        yield s


@pytest.fixture
def gateway(stack):
    return stack[0]


def number_of(screen: str, label: str) -> str:
    m = re.search(rf"^(\d+)\. {re.escape(label)}$", screen, re.M)
    assert m, screen
    return m.group(1)


def test_a_kenyan_caller_never_opens_the_dakar_client_with_her_digits(gateway):
    phone = Phone(gateway, KENYAN_WAIRIMU)
    assert phone.dial().startswith("CON Welcome Wairimu. Choose:")
    assert phone.answer("1") == "CON Enter your PIN:"
    screen = phone.answer(PIN)
    assert "KES 640.00" in screen and "CFA" not in screen and "Tontine" not in screen


def test_a_kenyan_caller_with_a_tanzanian_clients_digits_is_unknown(stack):
    gw, _, services = stack
    from convo.mifos.keys import client as client_key

    screen = Phone(gw, KENYAN_NOBODY).dial()
    assert screen == "END Sorry, this phone number is not registered with us. Please visit your branch to register it."
    # an unknown number is remembered for a minute, a known one for CONVO_CLIENT_CACHE_TTL (5 minutes)
    assert 0 < services.redis.ttl(client_key(KENYAN_NOBODY)) <= 60
    Phone(gw, KENYAN_WAIRIMU).dial()
    assert 60 < services.redis.ttl(client_key(KENYAN_WAIRIMU)) <= 300


def test_an_office_without_a_region_reads_numbers_in_its_parent_offices_region(stack):
    """Dakar Médina (8) is not in flows/notify.yaml; it sits under Dakar Plateau (6, SN) in Mifos X
    (``GET /offices``: ``parentId``), so "771000141" there is Senegalese, not the Kenyan default's."""
    gw, _, services = stack
    assert Phone(gw, KENYAN_NDEYE).dial().startswith("END Sorry, this phone number is not registered")
    assert Phone(gw, "+221771000141").dial().startswith("CON Bienvenue Ndeye.")
    assert 0 < services.redis.ttl("convo:office-parents") <= 3600        # the office tree, cached an hour


def test_a_phone_to_client_mapping_cached_by_an_earlier_release_is_not_trusted(stack):
    """Before this change the cache held one client found by reading numbers in the caller's country."""
    gw, _, services = stack
    from convo.mifos.keys import client as client_key

    services.cache.put(client_key(KENYAN_WAIRIMU), {"id": 27, "name": "Fatou Bintou Sow", "first_name": "Fatou",
                                                    "office_id": 6}, 300)
    assert Phone(gw, KENYAN_WAIRIMU).dial().startswith("CON Welcome Wairimu.")


def test_the_tanzanian_and_senegalese_clients_still_reach_their_accounts(gateway):
    assert Phone(gateway, REHEMA).dial().startswith("CON Karibu Rehema.")
    assert Phone(gateway, FATOU).dial().startswith("CON Bienvenue Fatou.")


def test_a_shared_phone_asks_who_is_calling_before_anything_else(gateway):
    phone = Phone(gateway, SHARED)
    screen = phone.dial()
    assert screen == "CON Choose your name:\n1. Achieng\n2. Baraka"
    assert_names_only(screen)
    assert phone.answer("2").startswith("CON Welcome Baraka. Choose:")


@pytest.mark.parametrize("who, savings, product", [(ACHIENG, "KES 3,400.00", "Voluntary Savings"),
                                                   (BARAKA, "KES 12,750.00", "Akiba Bora")])
def test_the_chosen_client_is_whose_balance_due_and_statement_are_shown(gateway, who, savings, product):
    name = {ACHIENG: "Achieng", BARAKA: "Baraka"}[who]
    mine = seed.build(TODAY)
    loans = [l for l in mine["loans"].values() if l["clientId"] == who]
    phone = Phone(gateway, SHARED)
    choice = phone.dial()
    menu = phone.answer(number_of(choice, name))
    assert menu.startswith(f"CON Welcome {name}.")
    assert phone.answer(number_of(menu, "Balance")) == "CON Enter your PIN:"
    balance = phone.answer(PIN)
    assert balance.startswith(f"END {product}") and savings in balance

    phone = Phone(gateway, SHARED)
    menu = phone.answer(number_of(phone.dial(), name))
    assert phone.answer(number_of(menu, "Amount due")) == "CON Enter your PIN:"
    due = phone.answer(PIN)
    assert len(loans) == 1 and f"*{loans[0]['accountNo'][-4:]}" in due and ("Amount due: KES" in due or "Total due: KES" in due)

    phone = Phone(gateway, SHARED)
    menu = phone.answer(number_of(phone.dial(), name))
    assert phone.answer(number_of(menu, "Mini-statement")) == "CON Enter your PIN:"
    accounts = phone.answer(PIN)
    assert accounts.startswith("CON Choose an account:") and len(options(accounts)) == 2   # a savings, a loan
    assert all(o.startswith((product, loans[0]["loanProductName"])) for o in options(accounts)), accounts
    mini = phone.answer(number_of(accounts, next(o for o in options(accounts) if o.startswith(product))))
    assert mini.startswith((f"CON {product}", f"END {product}")), mini


def test_typing_a_client_id_or_anything_off_the_list_is_refused(gateway):
    phone = Phone(gateway, SHARED)
    phone.dial()
    for attempt in (str(BARAKA), str(ACHIENG), "3", "0", "-1", "1 ", "00000001" * 3, "Baraka"):
        screen = phone.answer(attempt)
        if attempt == "1 ":                                   # a stray space is still option 1
            assert screen.startswith("CON Welcome Achieng.")
            break
        assert screen == "CON Invalid choice. Please try again.\nChoose your name:\n1. Achieng\n2. Baraka", attempt
        assert_names_only(screen.split("\n", 1)[1])


def test_the_choice_is_asked_again_on_every_dial(gateway):
    first = Phone(gateway, SHARED)
    first.dial()
    first.answer("2")
    again = Phone(gateway, SHARED).dial()
    assert again == "CON Choose your name:\n1. Achieng\n2. Baraka"


def test_the_pin_of_one_client_of_a_shared_phone_checks_that_client(stack):
    gw, _, services = stack
    give_pin(services, SHARED, BARAKA, "7391")
    try:
        phone = Phone(gw, SHARED)
        menu = phone.answer(number_of(phone.dial(), "Achieng"))
        phone.answer(number_of(menu, "Balance"))
        assert phone.answer("7391").startswith("CON Wrong PIN.")           # Baraka's PIN does not open Achieng
    finally:
        give_pin(services, SHARED, BARAKA, PIN)
        give_pin(services, SHARED, ACHIENG, PIN)


# ------------------------------------------------------------------ over SMS, end to end


def replies(services, phone: str) -> list[str]:
    with sa.orm.Session(services.db) as s:
        return [m.body for m in s.scalars(sa.select(OutboxMessage).where(OutboxMessage.recipient == phone)
                                          .order_by(OutboxMessage.id))]


@pytest.fixture
def sms(redis_url, pg_url):
    with running_sms_stack(redis_url, pg_url) as s:
        for cid in (ACHIENG, BARAKA):
            give_pin(s[2], SHARED, cid, PIN)
        yield s


def test_by_sms_the_caller_answers_with_the_number_of_their_name(sms):
    gw, _, services = sms
    handset = Handset(gw, SHARED)
    handset.text("BAL")
    choice = replies(services, SHARED)[-1]
    assert choice == "Choose your name:\n1. Achieng\n2. Baraka\nReply with the number of your choice."
    assert_names_only(choice.rsplit("\n", 1)[0])
    handset.text(str(BARAKA))                                 # an id, not a number on the list
    assert replies(services, SHARED)[-1].startswith("Invalid choice. Please try again.\nChoose your name:")
    handset.text(PIN)                                         # a PIN typed too early is no choice either
    assert replies(services, SHARED)[-1].startswith("Invalid choice.")
    handset.text("2")
    assert replies(services, SHARED)[-1] == "To see your balance, reply with your PIN."
    handset.text(PIN)
    answer = replies(services, SHARED)[-1]
    assert "Akiba Bora" in answer and "KES 12,750.00" in answer
    assert not any("3,400.00" in r for r in replies(services, SHARED))     # nothing of Achieng's, ever
    handset.text("BAL")                                       # every keyword asks again
    assert replies(services, SHARED)[-1].startswith("Choose your name:\n1. Achieng\n2. Baraka")


def test_by_sms_due_for_achieng(sms):
    gw, _, services = sms
    handset = Handset(gw, SHARED)
    handset.text("DUE")
    assert replies(services, SHARED)[-1].startswith("Choose your name:\n1. Achieng\n2. Baraka")
    handset.text("1")
    assert replies(services, SHARED)[-1] == "To see what you owe, reply with your PIN."
    handset.text(PIN)
    loan = next(l for l in seed.build(TODAY)["loans"].values() if l["clientId"] == ACHIENG)
    assert f"*{loan['accountNo'][-4:]}" in replies(services, SHARED)[-1]
