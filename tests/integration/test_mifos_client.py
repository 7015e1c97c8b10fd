"""The Fineract client: contract tests against the shared sample responses, then
the client against the simulator over real HTTP (find, accounts, balances, dues,
failures within the time budget)."""
from __future__ import annotations

import json
import threading
import time
from datetime import date
from decimal import Decimal

import pytest
import responses

from convo.mifos.client import (
    Account,
    ClientRef,
    Currency,
    LoanDue,
    MifosClient,
    MifosError,
    MifosNotFound,
    MifosRejected,
    MifosUnavailable,
    SavingsBalance,
    Transaction,
    error_from_response,
    parse_date,
)
from tests.support.samples import SAMPLES

BASE = "https://mifos.example:8443/fineract-provider/api/v1"
TODAY = date(2024, 4, 20)  # the samples' business date

#: samples the client reads, and the error samples with the exception each must become
CLIENT_SAMPLES = {
    "client_accounts.json", "clients_search_by_mobile.json", "clients_search_by_mobile_empty.json",
    "loan_with_schedule.json", "savings_with_transactions.json", "savings_transactions_search.json",
}
ERROR_SAMPLES = {
    "error_400_missing_tenant_spring.json": (400, MifosUnavailable),
    "error_401_authentication.json": (401, MifosUnavailable),
    "error_401_basic_auth_spring.json": (401, MifosUnavailable),
    "error_403_domain_rule.json": (403, MifosRejected),
    "error_404.json": (404, MifosNotFound),
    "error_404_client.json": (404, MifosNotFound),
    "error_409_loan_locked.json": (409, MifosRejected),
    "error_missing_dateformat.json": (400, MifosRejected),
    "error_validation.json": (400, MifosRejected),
}
#: samples for other parts of the system (writes, v2 search, message gateway)
OTHER_SAMPLES = {
    "authentication_success.json", "clients_list_by_external_id.json", "clients_list_empty.json",
    "clients_search_v2_by_mobile.json", "loan_repayment_result.json",
    "message_gateway_report_response.json", "message_gateway_sms_request.json",
}


def sample(name: str):
    if not SAMPLES.is_dir():
        pytest.fail(f"Fineract samples missing: expected them at {SAMPLES} (tests/fineract_samples, or CONVO_FINERACT_SAMPLES)")
    return json.loads((SAMPLES / name).read_text(), parse_float=Decimal)


def sample_text(name: str) -> str:
    sample(name)  # same clear failure when missing
    return (SAMPLES / name).read_text()


@pytest.fixture(autouse=True)
def closed_breakers():
    """Breakers are per server and process-wide: every test starts with them closed."""
    from convo.mifos.client import reset_breakers

    reset_breakers()
    yield
    reset_breakers()


@pytest.fixture
def client():
    return MifosClient(BASE, "mifos", "password", tenant="default", timeout=1.0)


@pytest.fixture
def mocked():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def serve(mocked, path, name, status=200, **kw):
    mocked.add(responses.GET, BASE + path, body=sample_text(name), status=status,
               content_type="application/json", **kw)


# --------------------------------------------------------------------------- contract


def test_every_sample_is_accounted_for():
    names = {p.name for p in sample_dir_files()}
    known = CLIENT_SAMPLES | set(ERROR_SAMPLES) | OTHER_SAMPLES
    assert names - known == set(), "new sample: decide what the client must do with it"
    assert known - names == set(), "sample missing from tests/fineract_samples"


def sample_dir_files():
    if not SAMPLES.is_dir():
        pytest.fail(f"Fineract samples missing: expected them at {SAMPLES}")
    return sorted(SAMPLES.glob("*.json"))


@pytest.mark.parametrize("name", sorted(OTHER_SAMPLES))
def test_other_samples_parse_with_decimal_amounts_and_dates(name):
    body = sample(name)
    assert body is not None
    floats = [v for v in _walk(body) if isinstance(v, float)]
    assert floats == []


def test_v2_search_iso_dates_parse():
    row = sample("clients_search_v2_by_mobile.json")["content"][0]
    assert parse_date(row["activationDate"]) == date(2023, 11, 1)
    assert parse_date(row["createdDate"]) == date(2023, 11, 1)


#: the seed's offices → the region their clients' numbers are read in (flows/notify.yaml; 8 is under 6)
SEED_REGIONS = {1: "KE", 2: "KE", 3: "KE", 4: "TZ", 5: "TZ", 6: "SN", 7: "CI", 8: "SN"}.get


def kenyan(_office_id) -> str:
    return "KE"


def test_search_by_mobile(client, mocked):
    serve(mocked, "/search", "clients_search_by_mobile.json")
    (ref,) = client.clients_by_phone("+254700000101", kenyan)
    assert ref == ClientRef(id=1, display_name="Grace Wanjiru Kamau", mobile_no="254700000101",
                            office_id=1, status="active")
    sent = mocked.calls[0].request
    assert sent.headers["Fineract-Platform-TenantId"] == "default"
    assert sent.headers["Authorization"].startswith("Basic ")
    assert "exactMatch=true" in sent.url and "resource=clients" in sent.url


def test_search_empty_tries_every_stored_format(client, mocked):
    serve(mocked, "/search", "clients_search_by_mobile_empty.json")
    assert client.clients_by_phone("+254700000999", kenyan) == []
    queries = [c.request.params["query"] for c in mocked.calls]      # searched side by side: any order
    assert sorted(queries) == sorted(["+254700000999", "254700000999", "0700000999", "700000999"])


def test_search_ignores_rows_whose_mobile_differs(client, mocked):
    row = sample("clients_search_by_mobile.json")[0]
    row["entityMobileNo"] = "254711111111"  # matched on account no / external id instead
    mocked.add(responses.GET, BASE + "/search", json=[_jsonable(row)])
    assert client.clients_by_phone("+254700000101", kenyan) == []


def test_search_stored_number_is_read_in_the_clients_region(client, mocked):
    """``700000101`` at an office in Senegal is +221700000101: never the Kenyan caller's number."""
    row = _jsonable(sample("clients_search_by_mobile.json")[0])
    mocked.add(responses.GET, BASE + "/search", json=[dict(row, entityMobileNo="700000101")])
    assert [r.id for r in client.clients_by_phone("+254700000101", kenyan)] == [1]
    assert client.clients_by_phone("+254700000101", lambda _office: "SN") == []


def test_search_lists_live_clients_and_skips_closed(client, mocked):
    row = _jsonable(sample("clients_search_by_mobile.json")[0])
    closed = dict(row, entityId=7, entityStatus={"id": 600, "code": "clientStatusType.closed", "value": "Closed"})
    pending = dict(row, entityId=8, entityStatus={"id": 100, "code": "clientStatusType.pending", "value": "Pending"})
    mocked.add(responses.GET, BASE + "/search", json=[closed, pending, row])
    assert [r.id for r in client.clients_by_phone("+254700000101", kenyan)] == [1, 8]
    mocked.replace(responses.GET, BASE + "/search", json=[closed, pending])
    assert [r.id for r in client.clients_by_phone("+254700000101", kenyan)] == [8]
    mocked.replace(responses.GET, BASE + "/search", json=[closed])
    assert client.clients_by_phone("+254700000101", kenyan) == []


def test_client_accounts_overview(client, mocked):
    serve(mocked, "/clients/1/accounts", "client_accounts.json")
    kes = Currency("KES", 2, None, "KSh", "Kenyan Shilling")
    assert client.client_accounts(1) == [
        Account(42, "000000042", "savings", "Voluntary Savings", kes, Decimal("8637.500000"), "active"),
        Account(29, "000000029", "loan", "Biashara Flat 6M", kes, Decimal("7480.000000"), "active"),
    ]


def test_client_accounts_absent_keys_and_zero_balances(client, mocked):
    body = _jsonable(sample("client_accounts.json"))
    body.pop("loanAccounts")
    del body["savingsAccounts"][1]["accountBalance"]
    mocked.add(responses.GET, BASE + "/clients/1/accounts", json=body)
    [acc] = client.client_accounts(1)
    assert acc.kind == "savings" and acc.balance == 0
    mocked.replace(responses.GET, BASE + "/clients/1/accounts", json={})
    assert client.client_accounts(1) == []


def test_savings_balance(client, mocked):
    serve(mocked, "/savingsaccounts/42", "savings_with_transactions.json")
    bal = client.savings_balance(42)
    assert bal.account_balance == Decimal("8637.5") and bal.available_balance == Decimal("7637.5")
    assert (bal.id, bal.account_no, bal.product_name, bal.currency.code) == (42, "000000042", "Voluntary Savings", "KES")


def test_savings_available_defaults_to_balance(client, mocked):
    body = _jsonable(sample("savings_with_transactions.json"))
    del body["summary"]["availableBalance"]
    mocked.add(responses.GET, BASE + "/savingsaccounts/42", json=body)
    assert client.savings_balance(42).available_balance == Decimal("8637.5")


def test_loan_due_in_arrears(client, mocked):
    serve(mocked, "/loans/29", "loan_with_schedule.json")
    due = client.loan_due(29, TODAY)
    assert due.overdue == Decimal("1120") == sample("loan_with_schedule.json")["summary"]["totalOverdue"]
    assert due.next_due_date == date(2024, 5, 15)
    assert due.next_installment == Decimal("2120")
    assert due.amount_due == Decimal("3240")
    assert due.outstanding == Decimal("7480")
    assert "associations=repaymentSchedule" in mocked.calls[0].request.url


def test_loan_due_dates_move_with_today(client, mocked):
    serve(mocked, "/loans/29", "loan_with_schedule.json")
    before = client.loan_due(29, date(2024, 4, 10))  # period 3 not yet late
    assert (before.overdue, before.next_due_date, before.next_installment) == (0, date(2024, 4, 15), Decimal("1120"))
    on_day = client.loan_due(29, date(2024, 5, 15))  # due today is not overdue
    assert (on_day.overdue, on_day.next_due_date, on_day.amount_due) == (Decimal("1120"), date(2024, 5, 15), Decimal("3240"))
    after_all = client.loan_due(29, date(2024, 8, 1))
    assert (after_all.overdue, after_all.next_due_date, after_all.next_installment) == (Decimal("7480"), None, 0)


def test_loan_due_fully_paid_and_outstanding_computed_when_absent(client, mocked):
    body = _jsonable(sample("loan_with_schedule.json"))
    for p in body["repaymentSchedule"]["periods"][1:]:
        p["complete"] = True
        p["totalPaidForPeriod"] = p["totalDueForPeriod"]
        del p["totalOutstandingForPeriod"]
    del body["summary"]
    mocked.add(responses.GET, BASE + "/loans/29", json=body)
    due = client.loan_due(29, TODAY)
    assert (due.amount_due, due.overdue, due.next_due_date, due.next_installment, due.outstanding) == (0, 0, None, 0, 0)
    assert due.currency.code == "KES"


def test_savings_transactions_search(client, mocked):
    serve(mocked, "/savingsaccounts/42/transactions/search", "savings_transactions_search.json")
    txs = client.savings_transactions(42, limit=5)
    assert [t.id for t in txs] == [318, 316]  # 317 is reversed
    assert txs[0] == Transaction(318, date(2024, 4, 18), "Withdrawal", Decimal("1500.0"), False, Decimal("8637.5"))


#: what Fineract 1.8 answers for .../transactions/search: the path falls on
#: ``{transactionId}`` (a Long), Jersey's 404 has no Fineract body, Spring Boot writes its own
SPRING_404 = {"timestamp": "2024-04-20T08:00:00.000+00:00", "status": 404, "error": "Not Found",
              "path": "/fineract-provider/api/v1/savingsaccounts/42/transactions/search"}


@pytest.mark.parametrize("status,body", [(404, SPRING_404), (404, ""), (405, "")])
def test_savings_transactions_fall_back_on_old_servers(client, mocked, status, body):
    if isinstance(body, dict):
        mocked.add(responses.GET, BASE + "/savingsaccounts/42/transactions/search", json=body, status=status)
    else:
        mocked.add(responses.GET, BASE + "/savingsaccounts/42/transactions/search", body=body, status=status)
    serve(mocked, "/savingsaccounts/42", "savings_with_transactions.json")
    txs = client.savings_transactions(42, limit=5)
    assert [t.id for t in txs] == [318, 316, 301, 298, 275]
    assert [t.credit for t in txs] == [False, True, True, False, False]
    assert client.has_transactions_search is False
    client.savings_transactions(42, limit=5)  # remembered: straight to the fallback
    paths = [c.request.path_url.split("?")[0] for c in mocked.calls]
    assert paths.count("/fineract-provider/api/v1/savingsaccounts/42/transactions/search") == 1


def test_savings_transactions_search_of_a_missing_account_is_an_empty_page(client, mocked):
    """SavingsAccountTransactionsSearchServiceImpl.searchTransactions has no account check: COUNT(*) = 0
    gives ``PageableExecutionUtils.getPage(emptyList)``, 200."""
    mocked.add(responses.GET, BASE + "/savingsaccounts/9999/transactions/search", json={"total": 0, "content": []})
    assert client.savings_transactions(9999) == []
    assert len(mocked.calls) == 1 and client.has_transactions_search is True


def test_savings_transactions_search_pages_past_reversed_rows(client, mocked):
    page = _jsonable(sample("savings_transactions_search.json"))
    rows = page["content"]
    first = [dict(rows[1], id=400 + i, reversed=True) for i in range(10)]
    mocked.add(responses.GET, BASE + "/savingsaccounts/42/transactions/search",
               json={"total": 13, "content": first},
               match=[responses.matchers.query_param_matcher({"offset": "0", "limit": "10"})])
    mocked.add(responses.GET, BASE + "/savingsaccounts/42/transactions/search",
               json={"total": 13, "content": rows},
               match=[responses.matchers.query_param_matcher({"offset": "1", "limit": "10"})])  # page 1
    assert [t.id for t in client.savings_transactions(42, limit=5)] == [318, 316]
    assert len(mocked.calls) == 2


def test_loan_transactions_skip_accruals(client, mocked):
    serve(mocked, "/loans/29", "loan_with_schedule.json")
    txs = client.loan_transactions(29, limit=5)
    assert [t.id for t in txs] == [107, 104, 102, 101]
    assert txs[-1].credit and txs[-1].kind == "Disbursement"


@pytest.mark.parametrize("name", sorted(ERROR_SAMPLES))
def test_error_samples_become_the_right_exception(client, mocked, name):
    status, cls = ERROR_SAMPLES[name]
    serve(mocked, "/loans/29", name, status=status)
    with pytest.raises(cls) as info:
        client.loan_due(29, TODAY)
    err = info.value
    assert err.status == status and err.message
    body = sample(name)
    if "userMessageGlobalisationCode" in body:
        assert err.code == body["userMessageGlobalisationCode"]
    if cls is MifosRejected:
        assert len(err.errors) == len(body["errors"])
        for parsed, raw in zip(err.errors, body["errors"]):
            assert parsed == {"parameterName": raw["parameterName"], "code": raw["userMessageGlobalisationCode"],
                              "message": raw["defaultUserMessage"]}


def test_validation_error_details():
    err = error_from_response(400, sample("error_validation.json"))
    assert isinstance(err, MifosRejected)
    assert err.code == "validation.msg.validation.errors.exist"
    assert [e["parameterName"] for e in err.errors] == ["transactionDate", "transactionAmount"]
    assert "transactionDate" in str(err)


@pytest.mark.parametrize("status,body,cls", [
    (500, {"developerMessage": "boom", "errors": []}, MifosUnavailable),
    (502, "<html>Bad gateway</html>", MifosUnavailable),
    (404, "<html>Not Found</html>", MifosUnavailable),  # wrong base URL, not a missing account
    (403, {"timestamp": "x", "status": 403, "error": "Forbidden", "path": "/x"}, MifosUnavailable),
    (400, {"errors": [{"userMessageGlobalisationCode": "c", "parameterName": "p"}]}, MifosRejected),
])
def test_other_error_shapes(status, body, cls):
    err = error_from_response(status, body)
    assert type(err) is cls and err.status == status
    if isinstance(body, dict) and body.get("errors"):
        assert err.code == "c"


def test_non_json_success_is_unavailable(client, mocked):
    mocked.add(responses.GET, BASE + "/clients/1/accounts", body="<html>login</html>", status=200)
    with pytest.raises(MifosUnavailable):
        client.client_accounts(1)


def test_dates_and_decimals():
    assert parse_date([2024, 4, 5]) == date(2024, 4, 5)
    assert parse_date("2024-04-05") == date(2024, 4, 5)
    assert parse_date(None) is None
    body = sample("loan_with_schedule.json")
    assert isinstance(body["summary"]["totalOutstanding"], Decimal)


@pytest.mark.parametrize("obj", [
    Currency("XOF", 0, 5, "CFA", "CFA Franc BCEAO"),
    ClientRef(3, "Awa Diop", "+221771234567", 4, "active"),
    Account(1, "0001", "loan", "P", Currency("KES", 2), Decimal("10.50"), "active"),
    SavingsBalance(1, "0001", "P", Currency("TZS", 0), Decimal("100"), Decimal("90")),
    LoanDue(1, "0001", "P", Currency("KES", 2), Decimal("1.10"), Decimal("1"), date(2024, 5, 1), Decimal("0.10"), Decimal("5")),
    LoanDue(1, "0001", "P", Currency("KES", 2), Decimal("0"), Decimal("0"), None, Decimal("0"), Decimal("0")),
    Transaction(9, date(2024, 1, 2), "Deposit", Decimal("5.00"), True, None),
])
def test_data_round_trips_through_json(obj):
    plain = json.loads(json.dumps(obj.to_dict()))
    again = type(obj).from_dict(plain)
    assert again == obj and str(again) == str(obj)


def _walk(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)
    else:
        yield value


def _jsonable(value):
    """Decimal-parsed sample → something ``responses``' json= can dump (numbers stay numbers)."""
    return json.loads(json.dumps(value, default=float))


# --------------------------------------------------------------------------- against the simulator


@pytest.fixture(scope="module")
def sim():
    from werkzeug.serving import make_server

    from convo.devkit.fineract_sim import create_sim_app

    app = create_sim_app(today=TODAY)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{server.server_port}/fineract-provider/api/v1"
    server.shutdown()


@pytest.fixture
def live(sim):
    app, url = sim
    app.config["SIM_FAULTS"] = {}
    client = MifosClient(url, "mifos", "password", timeout=1.0)
    yield client
    client.close()
    app.config["SIM_FAULTS"] = {}


def test_live_find_grace_in_every_format(live, sim):
    from convo.devkit import fineract_seed as seed

    (grace,) = live.clients_by_phone("+254700000101", SEED_REGIONS)
    assert grace.id == 1 and grace.display_name == "Grace Wanjiru Kamau"
    # every demo phone is found, whatever format the MFI stored it in
    stored = {c["mobileNo"] for c in seed.build(TODAY)["clients"].values() if c.get("mobileNo")}
    assert any(s.startswith("+") for s in stored) and any(s.startswith("0") for s in stored)
    assert any(s.startswith("254") for s in stored)
    for e164, _ in seed.DEMO_PHONES:
        refs = live.clients_by_phone(e164, SEED_REGIONS)
        assert refs and any(r.active for r in refs), e164


def test_live_unknown_and_closed_phones(live):
    from convo.devkit import fineract_seed as seed

    assert live.clients_by_phone("+254799999999", SEED_REGIONS) == []
    assert live.clients_by_phone(seed.CLOSED_CLIENT_PHONE, SEED_REGIONS) == []
    assert live.clients_by_phone(seed.SPACED_PHONE, SEED_REGIONS) == []  # like real Fineract's exact search


def test_live_accounts_balances_and_dues(live):
    accounts = live.client_accounts(1)
    assert {a.kind for a in accounts} == {"savings", "loan"}
    assert all(a.status == "active" for a in accounts)
    for acc in accounts:
        if acc.kind == "savings":
            assert live.savings_balance(acc.id).account_balance == acc.balance
        else:
            due = live.loan_due(acc.id, TODAY)
            assert due.outstanding == acc.balance


def test_live_arrears_and_on_time_loans(live):
    from convo.devkit import fineract_seed as seed

    arrears = live.loan_due(seed.ARREARS_LOAN_ID, TODAY)
    assert arrears.overdue > 0 and arrears.amount_due == arrears.overdue + arrears.next_installment
    on_time = live.loan_due(seed.ON_TIME_LOAN_ID, TODAY)
    assert on_time.overdue == 0 and on_time.next_due_date >= TODAY and on_time.next_installment > 0


def test_live_client_without_accounts_and_unknown_ids(live):
    from convo.devkit import fineract_seed as seed

    assert live.client_accounts(seed.NO_ACCOUNTS_CLIENT_ID) == []
    with pytest.raises(MifosNotFound):
        live.loan_due(999999, TODAY)
    with pytest.raises(MifosNotFound):
        live.client_accounts(424242)


def test_live_transactions(live):
    txs = live.savings_transactions(42, limit=3)
    assert len(txs) == 3 and txs[0].date >= txs[-1].date
    assert live.savings_balance(42).account_balance == txs[0].running_balance
    loan_txs = live.loan_transactions(29, limit=10)
    assert loan_txs and all(t.kind != "Accrual" for t in loan_txs)


def test_live_wrong_password_is_unavailable(sim):
    _, url = sim
    bad = MifosClient(url, "mifos", "wrong", timeout=1.0)
    with pytest.raises(MifosUnavailable) as info:
        bad.clients_by_phone("+254700000101", kenyan)
    assert info.value.status == 401


def test_live_wrong_tenant_header_missing_is_unavailable(sim):
    _, url = sim
    c = MifosClient(url, "mifos", "password", timeout=1.0)
    del c.session.headers["Fineract-Platform-TenantId"]
    with pytest.raises(MifosUnavailable) as info:
        c.client_accounts(1)
    assert info.value.status == 400


def test_live_slow_server_fails_fast(live, sim):
    app, _ = sim
    app.config["SIM_FAULTS"] = {"delay": 3}
    start = time.monotonic()
    with pytest.raises(MifosUnavailable):
        live.client_accounts(1)
    assert time.monotonic() - start < live.timeout * 1.2 + 0.3


def test_live_down_server_is_unavailable(live, sim):
    app, _ = sim
    app.config["SIM_FAULTS"] = {"down": True}
    with pytest.raises(MifosUnavailable) as info:
        live.client_accounts(1)
    assert info.value.status == 503


def test_live_faults_over_http(live, sim):
    import requests

    _, url = sim
    root = url.split("/fineract-provider")[0]
    assert requests.post(root + "/__sim/faults", json={"down": True}, timeout=2).status_code == 200
    with pytest.raises(MifosUnavailable):
        live.savings_balance(42)
    assert requests.delete(root + "/__sim/faults", timeout=2).status_code == 200
    assert live.client_accounts(1)


def test_refused_connection_is_unavailable_within_budget():
    c = MifosClient("http://127.0.0.1:9/fineract-provider/api/v1", "u", "p", timeout=0.5)
    start = time.monotonic()
    with pytest.raises(MifosUnavailable) as info:
        c.client_accounts(1)
    assert info.value.status is None
    assert time.monotonic() - start < 0.5 * 1.2 + 0.2


def test_from_settings():
    from convo.config import Settings

    s = Settings(fineract_url=BASE + "/", fineract_tenant="t1", fineract_timeout=1.5, fineract_verify_tls=False)
    c = MifosClient.from_settings(s)
    assert (c.base_url, c.timeout, c.session.verify) == (BASE, 1.5, False)
    assert c.session.headers["Fineract-Platform-TenantId"] == "t1"
    assert isinstance(MifosUnavailable("x"), MifosError)
