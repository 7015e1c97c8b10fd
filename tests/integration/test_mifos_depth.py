"""Mifos X in depth, over real HTTP against the simulator: mini-statements on Fineract
1.9+ and 1.8, next meetings, repaying a loan from savings (idempotent), and the
circuit breaker."""
from __future__ import annotations

import concurrent.futures as cf
import json
import threading
import time
from contextlib import contextmanager
from datetime import date, timedelta
from decimal import Decimal

import pytest
import requests
import responses
from prometheus_client import REGISTRY

from convo.devkit import fineract_seed as seed
from convo.mifos.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitOpen
from convo.mifos.client import (
    Meeting,
    MifosClient,
    MifosInProgress,
    MifosNotFound,
    MifosRejected,
    MifosUnavailable,
    TransferResult,
    endpoint_template,
    error_from_response,
    fineract_date,
    fineract_idempotency_key,
    is_insufficient_funds,
    is_loan_locked,
    meeting_from_group,
    next_meeting_date,
    reset_breakers,
)
from tests.support.samples import SAMPLES

TODAY = date(2024, 4, 20)  # a Saturday; the samples' business date
MONTH_END = date(2024, 4, 29)  # a Monday, the last meeting days of April are behind or one day ahead
GRACE, FAITH, PETER, MARY, BARAKA, FATOU, SAMUEL, KEVIN = 1, 5, 2, 3, 18, 27, 6, 15


def sample(name):
    return json.loads((SAMPLES / name).read_text(), parse_float=Decimal)


@contextmanager
def serving(**kw):
    """The simulator on a free port in a thread: (app, base url)."""
    from werkzeug.serving import make_server

    from convo.devkit.fineract_sim import create_sim_app

    app = create_sim_app(**kw)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}/fineract-provider/api/v1"
    finally:
        server.shutdown()


@pytest.fixture(autouse=True)
def closed_breakers():
    reset_breakers()
    yield
    reset_breakers()


@pytest.fixture
def sim():
    with serving(today=TODAY) as served:
        yield served


@pytest.fixture
def mifos(sim):
    c = MifosClient(sim[1], "mifos", "password", timeout=1.0, write_timeout=5.0)
    yield c
    c.close()


def transfer(client, key, amount="500", savings=42, loan=29, client_id=GRACE, on=TODAY, **kw):
    return client.transfer_savings_to_loan(client_id=client_id, office_id=1, savings_id=savings, loan_id=loan,
                                           amount=Decimal(amount), on=on, idempotency_key=key, **kw)


# ------------------------------------------------------------------ mini-statement


@pytest.mark.parametrize("version", ["1.8", "1.9", "1.10"])
def test_mini_statement_on_every_version(version):
    data = seed.build(TODAY)
    # a reversed deposit on top: never listed
    acc = data["savings"][42]
    data["savings"][42] = seed.savings_account(today=TODAY, **dict(
        acc["_args"], txs=acc["_args"]["txs"] + [(TODAY, "deposit", Decimal("999"), True)]))
    with serving(dataset=data, fineract_version=version) as (app, url):
        client = MifosClient(url, "mifos", "password", timeout=1.0)
        txs = client.savings_transactions(42, limit=5)
        assert client.has_transactions_search is (version != "1.8")
        assert len(txs) == 5
        assert [t.date for t in txs] == sorted((t.date for t in txs), reverse=True)
        assert all(t.amount != Decimal("999") for t in txs)
        assert txs[0].kind == "Withdrawal" and txs[0].running_balance == Decimal("8637.5")
        reversed_ids = {t["id"] for t in data["savings"][42]["transactions"] if t["reversed"]}
        assert len(reversed_ids) == 2 and not reversed_ids & {t.id for t in txs}
        hits = app.config["SIM_HITS"]
        client.savings_transactions(42, limit=5)
        assert app.config["SIM_HITS"] == hits + 1  # 1.8 remembered: no second try of the search
        loan_txs = client.loan_transactions(29, limit=10)
        assert loan_txs and {t.kind for t in loan_txs} <= {"Repayment", "Disbursement"}
        assert [t.date for t in loan_txs] == sorted((t.date for t in loan_txs), reverse=True)


def test_mini_statement_unknown_account(mifos):
    """SavingsAccountTransactionsSearchServiceImpl.searchTransactions: no account check, an empty page."""
    assert mifos.savings_transactions(9999) == []


def test_loan_statement_skips_reversed_and_accruals():
    body = sample("loan_with_schedule.json")
    body["transactions"][-1]["manuallyReversed"] = True  # the newest repayment (107)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, "https://m.example/api/v1/loans/29",
                 body=json.dumps(body, default=str), content_type="application/json")
        client = MifosClient("https://m.example/api/v1", "u", "p")
        assert [t.id for t in client.loan_transactions(29)] == [104, 102, 101]


# ------------------------------------------------------------------ meetings


def test_next_meeting_for_center_and_group_members_across_a_month_end():
    with serving(today=MONTH_END) as (_, url):
        client = MifosClient(url, "mifos", "password", timeout=1.0)
        grace = client.next_meeting(GRACE, MONTH_END)
        assert grace == Meeting(date=date(2024, 4, 30), group_id=10, group_name="Umoja Women Group",
                                location="Kariobangi Social Hall", kind="center", center_name="Umoja Center")
        assert client.next_meeting(FAITH, MONTH_END) == grace
        # first Thursday of the month: past April's, so May's
        mary = client.next_meeting(MARY, MONTH_END)
        assert (mary.date, mary.kind, mary.group_name, mary.center_name) == \
            (date(2024, 5, 2), "center", "Jamii Traders", "Kilimo Center")
        # a standalone group meeting fortnightly on Wednesday, the phase from its calendar's start
        peter = client.next_meeting(PETER, MONTH_END)
        assert peter.kind == "group" and peter.group_id == 11 and peter.location == "Eastlands Market Shed"
        assert peter.date.weekday() == 2 and MONTH_END < peter.date <= MONTH_END + timedelta(days=14)
        assert peter.date.month == 5
        # monthly on the 28th, no location: the 28th of April is behind
        baraka = client.next_meeting(BARAKA, MONTH_END)
        assert (baraka.date, baraka.kind, baraka.location) == (date(2024, 5, 28), "group", None)
        # on the day itself the meeting is today
        assert client.next_meeting(BARAKA, date(2024, 5, 28)).date == date(2024, 5, 28)


def test_no_meeting_for_individuals_calendarless_and_closed_groups(mifos):
    assert mifos.next_meeting(SAMUEL, TODAY) is None   # in no group
    assert mifos.next_meeting(FATOU, TODAY) is None    # group without a calendar
    assert mifos.next_meeting(KEVIN, TODAY) is None    # closed group
    with pytest.raises(MifosNotFound):
        mifos.next_meeting(424242, TODAY)


def test_fortnightly_phase_matches_the_calendar(mifos):
    group = mifos.get("/groups/11", {"associations": "collectionMeetingCalendar"})
    cal = group["collectionMeetingCalendar"]
    start = date(*cal["startDate"])
    when = mifos.next_meeting(PETER, TODAY).date
    assert (when - start).days % 14 == 0 and TODAY <= when < TODAY + timedelta(days=14)


def test_meeting_from_the_rule_when_the_server_lists_no_dates():
    cal = {"id": 1, "startDate": [2024, 1, 2], "repeating": True, "recurrence": "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU",
           "entityType": {"id": 2, "code": "calendarEntityType.groups", "value": "GROUPS"}, "location": ""}
    assert next_meeting_date(cal, date(2024, 4, 20)) == date(2024, 4, 23)
    assert next_meeting_date(dict(cal, recurrence="FREQ=MONTHLY;BYSETPOS=-1;BYDAY=FR"), date(2024, 4, 27)) == \
        date(2024, 5, 31)
    # listed dates win over the rule (a holiday moved one), stale lists fall back to the rule
    listed = dict(cal, nextTenRecurringDates=[[2024, 4, 24], [2024, 5, 7]])
    assert next_meeting_date(listed, date(2024, 4, 20)) == date(2024, 4, 24)
    assert next_meeting_date(listed, date(2024, 5, 8)) == date(2024, 5, 21)
    assert next_meeting_date(dict(cal, endDate=[2024, 4, 1]), date(2024, 4, 20)) is None
    assert next_meeting_date(dict(cal, repeating=False), date(2023, 12, 1)) == date(2024, 1, 2)
    assert next_meeting_date(dict(cal, recurrence="NOT A RULE"), date(2024, 4, 20)) is None
    group = {"id": 7, "name": "G", "status": {"id": 300, "code": "groupingStatusType.active", "value": "Active"},
             "collectionMeetingCalendar": cal}
    m = meeting_from_group(group, date(2024, 4, 20))
    assert (m.kind, m.location, m.center_name) == ("group", None, None)
    assert Meeting.from_dict(json.loads(json.dumps(m.to_dict()))) == m


def test_group_and_center_shapes(mifos):
    group = mifos.get("/groups/10", {"associations": "all"})
    assert group["centerId"] == 1 and group["status"]["code"] == "groupingStatusType.active"
    assert {c["id"] for c in group["clientMembers"]} == {1, 5, 36}
    cal = group["collectionMeetingCalendar"]
    assert cal["entityType"]["value"] == "CENTERS" and cal["recurrence"] == "FREQ=WEEKLY;BYDAY=TU"
    assert len(cal["nextTenRecurringDates"]) == 10 and isinstance(cal["startDate"], list)
    center = mifos.get("/centers/1", {"associations": "groupMembers,collectionMeetingCalendar"})
    assert [g["id"] for g in center["groupMembers"]] == [10]
    assert center["collectionMeetingCalendar"]["nextTenRecurringDates"] == cal["nextTenRecurringDates"]
    assert "collectionMeetingCalendar" not in mifos.get("/groups/10")
    assert mifos.get("/clients/1")["groups"] == [{"id": 10, "accountNo": "000000010", "name": "Umoja Women Group"}]
    with pytest.raises(MifosNotFound):
        mifos.get("/groups/999")
    with pytest.raises(MifosNotFound):
        mifos.get("/centers/999")


def test_demo_meeting_phones_are_group_members(mifos):
    regions = {1: "KE", 2: "KE", 3: "KE", 4: "TZ", 5: "TZ", 6: "SN", 7: "CI", 8: "SN"}.get  # flows/notify.yaml
    for p in seed.MEETING_PHONES:
        (ref,) = mifos.clients_by_phone(p, regions)
        assert mifos.next_meeting(ref.id, TODAY) is not None, p
    for p in seed.NO_MEETING_PHONES:
        (ref,) = mifos.clients_by_phone(p, regions)
        assert mifos.next_meeting(ref.id, TODAY) is None, p


# ------------------------------------------------------------------ transfers


def test_transfer_moves_money_once_and_the_same_key_is_served_from_cache(mifos, sim):
    app, _ = sim
    before_sav, before_due = mifos.savings_balance(42), mifos.loan_due(29, TODAY)
    assert before_due.overdue == Decimal("1120")
    first = transfer(mifos, "repay-1", amount="1500")
    assert isinstance(first, TransferResult) and not first.served_from_cache and first.savings_id == 42
    after_sav, after_due = mifos.savings_balance(42), mifos.loan_due(29, TODAY)
    assert after_sav.account_balance == before_sav.account_balance - 1500
    assert after_sav.available_balance == before_sav.available_balance - 1500
    # oldest first: the overdue installment is settled, the rest goes to the next one
    assert after_due.overdue == 0 and after_due.outstanding == before_due.outstanding - 1500
    assert after_due.next_installment == before_due.next_installment - (1500 - 1120)
    # both accounts show it
    assert mifos.savings_transactions(42, 1)[0].amount == 1500
    assert mifos.loan_transactions(29, 1)[0].amount == 1500 and mifos.loan_transactions(29, 1)[0].kind == "Repayment"
    overview = {a.id: a for a in mifos.client_accounts(GRACE)}
    assert overview[42].balance == after_sav.account_balance and overview[29].balance == after_due.outstanding

    again = transfer(mifos, "repay-1", amount="1500")
    assert again == TransferResult(first.resource_id, served_from_cache=True, savings_id=42)
    assert mifos.savings_balance(42) == after_sav
    other = transfer(mifos, "repay-2", amount="100")
    assert other.resource_id != first.resource_id and not other.served_from_cache
    assert mifos.savings_balance(42).account_balance == after_sav.account_balance - 100
    # what went over the wire
    sent = app.config["SIM_DATA"]["transfers"][first.resource_id]
    assert sent["amount"] == Decimal("1500") and sent["date"] == TODAY
    assert f"(ref {fineract_idempotency_key('repay-1')})" in sent["description"]


def test_transfer_body_is_fineracts(mifos):
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, mifos.base_url + "/accounttransfers", json={"savingsId": 42, "resourceId": 7},
                 headers={"x-served-from-cache": "true"})
        result = transfer(mifos, "k-1", amount="1000.50", on=date(2024, 4, 5), note="USSD repay")
        assert result == TransferResult(7, True, 42)
        call = rsps.calls[0].request
        assert call.headers["Idempotency-Key"] == fineract_idempotency_key("k-1")
        assert json.loads(call.body) == {
            "fromOfficeId": 1, "fromClientId": 1, "fromAccountType": 2, "fromAccountId": 42,
            "toOfficeId": 1, "toClientId": 1, "toAccountType": 1, "toAccountId": 29,
            "dateFormat": "dd MMMM yyyy", "locale": "en", "transferDate": "05 April 2024",
            "transferAmount": "1000.50",
            "transferDescription": f"USSD repay (ref {fineract_idempotency_key('k-1')})"}
    assert fineract_date(date(2024, 12, 31)) == "31 December 2024"


def test_transfer_posts_are_never_retried():
    c = MifosClient("http://127.0.0.1:9/fineract-provider/api/v1", "u", "p", timeout=0.5, write_timeout=0.5)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.POST, c.base_url + "/accounttransfers", body=requests.exceptions.ConnectionError("reset"))
        with pytest.raises(MifosUnavailable):
            transfer(c, "k")
        assert len(rsps.calls) == 1


def test_insufficient_balance(mifos):
    before = mifos.savings_balance(42)
    with pytest.raises(MifosRejected) as info:
        transfer(mifos, "too-much", amount="7637.51")  # 1,000 of the 8,637.50 is on hold
    err = info.value
    assert err.status == 403 and is_insufficient_funds(err) and not is_loan_locked(err)
    assert err.reason == "insufficient_funds"
    assert mifos.savings_balance(42) == before
    # Fineract stores the error under the key: the same key gets it again, from the cache
    with pytest.raises(MifosRejected) as again:
        transfer(mifos, "too-much", amount="1")
    assert again.value.reason == "insufficient_funds"


def test_insufficient_balance_shape_is_the_samples(sim):
    import requests

    app, url = sim
    body = {"fromOfficeId": 1, "fromClientId": 1, "fromAccountType": 2, "fromAccountId": 42, "toOfficeId": 1,
            "toClientId": 1, "toAccountType": 1, "toAccountId": 29, "dateFormat": "dd MMMM yyyy", "locale": "en",
            "transferDate": "20 April 2024", "transferAmount": "20000", "transferDescription": "x"}
    r = requests.post(url + "/accounttransfers", json=body, auth=("mifos", "password"),
                      headers={"Fineract-Platform-TenantId": "default"}, timeout=5)
    assert r.status_code == 403
    got = json.loads(r.text, parse_float=Decimal)
    assert got == sample("error_403_domain_rule.json")


def test_loan_locked_by_cob_blocks_loan_writes_not_transfers(mifos, sim):
    """LoanCOBFilterHelper.isOnApiList: only POST/PUT/DELETE on ``/v1/loans/{id}...`` (LOAN_PATH_PATTERN)
    meet the COB lock; ``/accounttransfers`` never answers 409."""
    app, _ = sim
    app.config["SIM_FAULTS"] = {"locked_loans": [29]}
    assert not transfer(mifos, "during-cob").served_from_cache
    with pytest.raises(MifosRejected) as info:
        mifos._call("POST", "/loans/29/transactions", params={"command": "repayment"},
                    body={"transactionDate": "20 April 2024", "dateFormat": "dd MMMM yyyy", "locale": "en",
                          "transactionAmount": "10"})
    err = info.value
    assert err.status == 409 and err.reason == "loan_locked" and is_loan_locked(err)
    assert err.code == "error.msg.loan.locked"


@pytest.mark.parametrize("amount,code", [
    ("0", "validation.msg.accounttransfer.transferAmount.not.greater.than.zero"),
    ("-5", "validation.msg.accounttransfer.transferAmount.not.greater.than.zero"),
])
def test_validation_errors(mifos, amount, code):
    with pytest.raises(MifosRejected) as info:
        transfer(mifos, f"bad-{amount}", amount=amount)
    assert info.value.status == 400 and info.value.reason == "invalid" and code in info.value.codes


def test_missing_date_format_and_description(sim):
    import requests

    _, url = sim
    auth = dict(auth=("mifos", "password"), headers={"Fineract-Platform-TenantId": "default"}, timeout=5)
    body = {"fromOfficeId": 1, "fromClientId": 1, "fromAccountType": 2, "fromAccountId": 42, "toOfficeId": 1,
            "toClientId": 1, "toAccountType": 1, "toAccountId": 29, "locale": "en",
            "transferDate": "20 April 2024", "transferAmount": "10", "transferDescription": "x"}
    r = requests.post(url + "/accounttransfers", json=body, **auth)
    err = error_from_response(r.status_code, r.json())
    assert r.status_code == 400 and err.errors[0]["code"] == "validation.msg.missing.dateFormat.parameter"
    model = sample("error_missing_dateformat.json")
    assert set(r.json()) == set(model) and set(r.json()["errors"][0]) == set(model["errors"][0])
    r = requests.post(url + "/accounttransfers", json=dict(body, dateFormat="dd MMMM yyyy", transferDescription=""),
                      **auth)
    assert r.status_code == 400 and "transferDescription" in r.text
    r = requests.post(url + "/accounttransfers", json=dict(body, dateFormat="dd MMMM yyyy", toAccountId=9999),
                      **auth)
    assert r.status_code == 404


def test_concurrent_duplicates_move_money_once(mifos, sim):
    app, _ = sim
    app.config["SIM_FAULTS"] = {"transfer_delay": 0.3}
    before = mifos.savings_balance(42).account_balance

    def attempt(_):
        try:
            return transfer(mifos, "dup-key", amount="250")
        except MifosInProgress as exc:
            return exc

    with cf.ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(8)))
    app.config["SIM_FAULTS"] = {}
    done = [o for o in outcomes if isinstance(o, TransferResult)]
    waiting = [o for o in outcomes if isinstance(o, MifosInProgress)]
    assert len(done) + len(waiting) == 8
    assert len([o for o in done if not o.served_from_cache]) == 1
    assert waiting and all(w.status == 425 and w.reason == "in_progress" for w in waiting)
    assert mifos.savings_balance(42).account_balance == before - 250
    # the worker retries later with the same key and learns the outcome
    final = transfer(mifos, "dup-key", amount="250")
    assert final.served_from_cache and final.resource_id == done[0].resource_id
    assert mifos.savings_balance(42).account_balance == before - 250


def test_fineract_18_ignores_the_key():
    with serving(today=TODAY, fineract_version="1.8") as (_, url):
        client = MifosClient(url, "mifos", "password", timeout=1.0)
        before = client.savings_balance(42).account_balance
        a, b = transfer(client, "same", amount="10"), transfer(client, "same", amount="10")
        assert a.resource_id != b.resource_id and not b.served_from_cache
        assert client.savings_balance(42).account_balance == before - 20


def test_repaying_everything_closes_the_loan(mifos):
    due = mifos.loan_due(29, TODAY)
    before = mifos.savings_balance(42)
    assert before.available_balance >= due.outstanding
    transfer(mifos, "payoff", amount=str(due.outstanding))
    assert all(a.id != 29 for a in mifos.client_accounts(GRACE))  # closed loans leave the overview's active list
    with pytest.raises(MifosRejected):
        transfer(mifos, "after-close", amount="1")


def test_transfer_result_round_trips():
    r = TransferResult(5, True, 42)
    assert TransferResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


# ------------------------------------------------------------------ the circuit breaker


def test_breaker_opens_fails_fast_half_opens_and_closes(sim):
    app, url = sim
    client = MifosClient(url, "mifos", "password", timeout=0.5, breaker_failures=3, breaker_reset=0.5)
    assert client.breaker.state == CLOSED
    app.config["SIM_FAULTS"] = {"down": True}
    for _ in range(3):
        with pytest.raises(MifosUnavailable) as info:
            client.savings_balance(42)
        assert info.value.status == 503
    assert client.breaker.state == OPEN
    hits = app.config["SIM_HITS"]
    start = time.monotonic()
    for _ in range(20):
        with pytest.raises(MifosUnavailable) as info:
            client.client_accounts(1)
        assert info.value.reason == "circuit_open" and "circuit open" in str(info.value)
    assert app.config["SIM_HITS"] == hits  # no network at all
    assert time.monotonic() - start < 0.2
    # still down after the reset timeout: the probe fails and the breaker opens again
    time.sleep(0.55)
    assert client.breaker.state == HALF_OPEN
    with pytest.raises(MifosUnavailable) as info:
        client.savings_balance(42)
    assert info.value.status == 503 and client.breaker.state == OPEN
    assert app.config["SIM_HITS"] == hits + 1
    # the server recovers: after the timeout one probe goes through and closes the breaker
    app.config["SIM_FAULTS"] = {}
    time.sleep(0.55)
    assert client.savings_balance(42).account_balance == Decimal("8637.5")
    assert client.breaker.state == CLOSED
    assert client.client_accounts(1)
    assert REGISTRY.get_sample_value("convo_mifos_breaker_state", {"server": client.breaker.name}) == 0
    assert REGISTRY.get_sample_value("convo_mifos_breaker_opened_total", {"server": client.breaker.name}) >= 2


def test_business_errors_never_count(sim):
    app, url = sim
    client = MifosClient(url, "mifos", "password", timeout=0.5, breaker_failures=2, breaker_reset=30)
    for _ in range(5):
        with pytest.raises(MifosNotFound):
            client.loan_due(999999, TODAY)
        with pytest.raises(MifosRejected):
            transfer(client, "neg", amount="-1")
    assert client.breaker.state == CLOSED
    app.config["SIM_FAULTS"] = {"down": True}
    with pytest.raises(MifosUnavailable):
        client.savings_balance(42)
    app.config["SIM_FAULTS"] = {}
    client.loan_due(29, TODAY)  # an answer resets the count of consecutive failures
    app.config["SIM_FAULTS"] = {"down": True}
    with pytest.raises(MifosUnavailable):
        client.savings_balance(42)
    assert client.breaker.state == CLOSED
    app.config["SIM_FAULTS"] = {}


def test_timeouts_count_and_clients_of_one_server_share_a_breaker(sim):
    app, url = sim
    a = MifosClient(url, "mifos", "password", timeout=0.2, breaker_failures=2, breaker_reset=30)
    b = MifosClient(url, "mifos", "password", timeout=0.2, breaker_failures=2, breaker_reset=30)
    assert a.breaker is b.breaker
    app.config["SIM_FAULTS"] = {"delay": 0.5}
    for client in (a, b):
        with pytest.raises(MifosUnavailable) as info:
            client.client_accounts(1)
        assert info.value.reason == "timeout"
    app.config["SIM_FAULTS"] = {}
    with pytest.raises(MifosUnavailable) as info:
        a.client_accounts(1)
    assert info.value.reason == "circuit_open"
    # writes fail fast too: the worker keeps the key and tries again later
    with pytest.raises(MifosUnavailable):
        transfer(b, "while-open")


def test_breaker_half_open_lets_one_probe_through():
    now = [0.0]
    br = CircuitBreaker("x", failures=1, reset_timeout=10, clock=lambda: now[0])
    br.acquire()
    br.failure()
    assert br.state == OPEN and br.retry_after() == 10
    with pytest.raises(CircuitOpen):
        br.acquire()
    now[0] = 10
    br.acquire()  # the probe
    with pytest.raises(CircuitOpen):
        br.acquire()  # everyone else still fails fast
    br.success()
    assert br.state == CLOSED
    br.acquire()
    br.release()
    with pytest.raises(ValueError):
        CircuitBreaker("y", failures=0)


def test_metrics_use_endpoint_templates(mifos):
    assert endpoint_template("/loans/29") == "/loans/{id}"
    assert endpoint_template("/savingsaccounts/42/transactions/search") == "/savingsaccounts/{id}/transactions/search"
    mifos.clients_by_phone("+254700000101", lambda _office: "KE")
    mifos.loan_due(29, TODAY)
    with pytest.raises(MifosNotFound):
        mifos.loan_due(424242, TODAY)
    count = REGISTRY.get_sample_value("convo_mifos_request_seconds_count", {"method": "GET", "endpoint": "/loans/{id}"})
    assert count and count >= 2
    assert REGISTRY.get_sample_value("convo_mifos_errors_total", {"endpoint": "/loans/{id}", "kind": "not_found"}) >= 1
    from prometheus_client import generate_latest

    text = generate_latest(REGISTRY).decode()
    assert "254700000101" not in text and "/loans/29" not in text and "424242" not in text
