"""The simulator answers in Fineract's shapes (keys, nesting, value types, number
digits) and its seeded data set is internally consistent at any business date."""
from __future__ import annotations

import base64
import json
import re
from datetime import date, timedelta
from decimal import Decimal

import pytest

from convo.devkit import fineract_seed as seed
from convo.devkit.fineract_sim import API, create_sim_app
from convo.mifos.client import loan_due_from_loan
from tests.support.samples import SAMPLES

TODAY = date(2024, 4, 20)
AUTH = {"Authorization": "Basic " + base64.b64encode(b"mifos:password").decode(),
        "Fineract-Platform-TenantId": "default"}
#: Fineract fields the simulator may send that the samples happen not to show
#: (CurrencyData.inMultiplesOf; ClientTimelineData.closedOnDate for closed clients;
#: ClientData.groups, which GET /clients/{id} fills and the list sample lacks)
ALLOWED_EXTRA = {"inMultiplesOf", "closedOnDate", "groups"}


def sample(name):
    if not SAMPLES.is_dir():
        pytest.fail(f"Fineract samples missing: expected them at {SAMPLES} (tests/fineract_samples, or CONVO_FINERACT_SAMPLES)")
    return json.loads((SAMPLES / name).read_text(), parse_float=Decimal)


@pytest.fixture(scope="module")
def app():
    return create_sim_app(today=TODAY)


@pytest.fixture
def http(app):
    app.config["SIM_FAULTS"] = {}
    return app.test_client()


def get(http, path, status=200, headers=AUTH):
    resp = http.get(API + path, headers=headers)
    assert resp.status_code == status, resp.text
    return json.loads(resp.text, parse_float=Decimal)


# ------------------------------------------------------------------ shape comparison


def merged(items):
    """One dict with every key any element of a sample list shows."""
    out = {}
    for item in items:
        for k, v in item.items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = merged([out[k], v])
            else:
                out.setdefault(k, v)
    return out


def assert_shape(expected, actual, path="$", exact=True):
    """Same keys (exact) or a subset of them (loose), and the same JSON types throughout."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {type(actual).__name__} is not an object"
        extra = set(actual) - set(expected) - ALLOWED_EXTRA
        assert not extra, f"{path}: keys not in the sample: {sorted(extra)}"
        if exact:
            missing = set(expected) - set(actual)
            assert not missing, f"{path}: keys missing: {sorted(missing)}"
        for key in set(actual) & set(expected):
            assert_shape(expected[key], actual[key], f"{path}.{key}", exact)
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: {type(actual).__name__} is not an array"
        if expected and actual:
            model = merged(expected) if all(isinstance(e, dict) for e in expected) else expected[0]
            for i, item in enumerate(actual):
                assert_shape(model, item, f"{path}[{i}]", exact=False)
    else:
        assert type(actual) is type(expected), \
            f"{path}: {type(actual).__name__} {actual!r}, sample has {type(expected).__name__} {expected!r}"


def digits_by_key(text):
    """{key: {number of decimals}} for every number written in ``text``."""
    out = {}
    for key, number in re.findall(r'"(\w+)":\s*(-?\d+(?:\.\d+)?)', text):
        out.setdefault(key, set()).add(len(number.split(".")[1]) if "." in number else 0)
    return out


# ------------------------------------------------------------------ Grace mirrors the samples exactly


def test_search_shape(http):
    rows = get(http, "/search?query=254700000101&resource=clients&exactMatch=true")
    assert_shape(sample("clients_search_by_mobile.json"), rows)
    assert_shape(sample("clients_search_by_mobile.json")[0], rows[0])
    assert rows[0]["entityId"] == 1 and rows[0]["entityStatus"]["code"] == "clientStatusType.active"
    assert get(http, "/search?query=254799999999&resource=clients&exactMatch=true") == \
        sample("clients_search_by_mobile_empty.json")


def test_client_accounts_shape(http):
    body = get(http, "/clients/1/accounts")
    expected = sample("client_accounts.json")
    assert set(body) == set(expected)
    for key in ("loanAccounts", "savingsAccounts"):
        by_id = {a["id"]: a for a in expected[key]}
        assert sorted(a["id"] for a in body[key]) == sorted(by_id)
        for acc in body[key]:
            assert_shape(by_id[acc["id"]], acc, f"$.{key}[{acc['id']}]")
    [sav] = [a for a in body["savingsAccounts"] if a["id"] == 42]
    assert sav["accountBalance"] == Decimal("8637.500000")
    [loan] = [a for a in body["loanAccounts"] if a["id"] == 29]
    assert (loan["loanBalance"], loan["originalLoan"], loan["amountPaid"]) == (7480, 12000, 5240)


def test_savings_shape(http):
    body = get(http, "/savingsaccounts/42?associations=transactions")
    assert_shape(sample("savings_with_transactions.json"), body)
    assert "transactions" not in get(http, "/savingsaccounts/42")


def test_savings_transactions_search_shape(http):
    body = get(http, "/savingsaccounts/42/transactions/search?offset=0&limit=3")
    assert_shape(sample("savings_transactions_search.json"), body)
    assert body["total"] == 8 and [t["id"] for t in body["content"]] == \
        [t["id"] for t in get(http, "/savingsaccounts/42?associations=transactions")["transactions"][:3]]


def test_loan_shape_and_figures(http):
    body = get(http, "/loans/29?associations=repaymentSchedule,transactions")
    expected = sample("loan_with_schedule.json")
    assert_shape(expected, body)
    assert_shape(expected["repaymentSchedule"]["periods"][0], body["repaymentSchedule"]["periods"][0])
    for mine, theirs in zip(body["repaymentSchedule"]["periods"][1:], expected["repaymentSchedule"]["periods"][1:]):
        assert_shape(theirs, mine)
    assert body["summary"] == expected["summary"]
    assert body["repaymentSchedule"]["periods"] == expected["repaymentSchedule"]["periods"]
    assert [t["type"]["value"] for t in body["transactions"]] == [t["type"]["value"] for t in expected["transactions"]]


def test_numbers_carry_fineracts_digits(http):
    loan_text = http.get(API + "/loans/29?associations=all", headers=AUTH).text
    assert digits_by_key(loan_text) == digits_by_key((SAMPLES / "loan_with_schedule.json").read_text())
    savings_text = http.get(API + "/savingsaccounts/42?associations=transactions", headers=AUTH).text
    assert digits_by_key(savings_text) == digits_by_key((SAMPLES / "savings_with_transactions.json").read_text())
    overview = http.get(API + "/clients/1/accounts", headers=AUTH).text
    assert digits_by_key(overview) == digits_by_key((SAMPLES / "client_accounts.json").read_text())


def test_loan_associations(http):
    plain = get(http, "/loans/29")
    assert "repaymentSchedule" not in plain and "transactions" not in plain
    only_schedule = get(http, "/loans/29?associations=repaymentSchedule")
    assert "repaymentSchedule" in only_schedule and "transactions" not in only_schedule
    assert "transactions" in get(http, "/loans/29?associations=transactions")


# ------------------------------------------------------------------ every record, loosely


def test_every_record_has_sample_shapes(http):
    data = seed.build(TODAY)
    loan_model, savings_model = sample("loan_with_schedule.json"), sample("savings_with_transactions.json")
    overview_model = sample("client_accounts.json")
    search_model = sample("clients_search_by_mobile.json")
    client_model = sample("clients_list_by_external_id.json")["pageItems"][0]
    for cid in data["clients"]:
        assert_shape(client_model, get(http, f"/clients/{cid}"), f"client {cid}", exact=False)
        overview = get(http, f"/clients/{cid}/accounts")
        assert_shape(overview_model, overview, f"overview {cid}", exact=False)
    for lid in data["loans"]:
        assert_shape(loan_model, get(http, f"/loans/{lid}?associations=all"), f"loan {lid}", exact=False)
    for sid in data["savings"]:
        assert_shape(savings_model, get(http, f"/savingsaccounts/{sid}?associations=transactions"),
                     f"savings {sid}", exact=False)
    rows = get(http, "/search?query=a&resource=clients&exactMatch=false")
    assert len(rows) > 10
    assert_shape(search_model, rows, exact=False)


def test_overview_omits_zero_amounts_and_empty_lists(http):
    zero = get(http, "/clients/6/accounts")  # Samuel: one zero-balance savings account
    assert "accountBalance" not in zero["savingsAccounts"][0] and "loanAccounts" not in zero
    nothing = get(http, "/clients/7/accounts")
    assert "savingsAccounts" not in nothing and "loanAccounts" not in nothing


# ------------------------------------------------------------------ errors and security


def test_not_found_shapes(http):
    assert_shape(sample("error_404.json"), get(http, "/loans/9999", 404))
    assert get(http, "/loans/9999", 404) == sample("error_404.json")
    assert get(http, "/clients/424242", 404) == sample("error_404_client.json")
    assert_shape(sample("error_404_client.json"), get(http, "/clients/424242/accounts", 404))
    get(http, "/savingsaccounts/9999", 404)
    # the search has no account check (SavingsAccountTransactionsSearchServiceImpl): an empty page
    assert get(http, "/savingsaccounts/9999/transactions/search?offset=0&limit=3") == {"total": 0, "content": []}


def test_wrong_basic_auth_is_spring_401(http):
    bad = dict(AUTH, Authorization="Basic " + base64.b64encode(b"mifos:nope").decode())
    body = get(http, "/clients/1/accounts", 401, headers=bad)
    assert_shape(sample("error_401_basic_auth_spring.json"), body)
    assert body["path"] == API + "/clients/1/accounts"
    get(http, "/clients/1", 401, headers={"Fineract-Platform-TenantId": "default"})


def test_missing_tenant_is_spring_400(http):
    body = get(http, "/clients/1", 400, headers={"Authorization": AUTH["Authorization"]})
    assert_shape(sample("error_400_missing_tenant_spring.json"), body)
    get(http, "/clients/1?tenantIdentifier=default", headers={"Authorization": AUTH["Authorization"]})
    get(http, "/clients/1", 400, headers=dict(AUTH, **{"Fineract-Platform-TenantId": "other"}))


def test_authentication(http):
    ok = http.post(API + "/authentication", json={"username": "mifos", "password": "password"},
                   headers={"Fineract-Platform-TenantId": "default"})
    assert ok.status_code == 200 and ok.json == sample("authentication_success.json")
    bad = http.post(API + "/authentication", json={"username": "mifos", "password": "x"},
                    headers={"Fineract-Platform-TenantId": "default"})
    assert bad.status_code == 401 and bad.json == sample("error_401_authentication.json")


def test_custom_credentials_and_dataset():
    data = seed.build(TODAY)
    app = create_sim_app(data, username="admin", password="s3cret")
    http = app.test_client()
    headers = dict(AUTH, Authorization="Basic " + base64.b64encode(b"admin:s3cret").decode())
    assert get(http, "/clients/1", headers=headers)["displayName"] == "Grace Wanjiru Kamau"
    get(http, "/clients/1", 401)
    assert app.config["SIM_DATA"] is data


def test_faults(app, http):
    assert http.post("/__sim/faults", json={"down": True}).status_code == 200
    assert http.get(API + "/clients/1", headers=AUTH).status_code == 503
    assert http.delete("/__sim/faults").status_code == 200
    assert http.get(API + "/clients/1", headers=AUTH).status_code == 200
    app.config["SIM_FAULTS"] = {"delay": 0.05}
    assert http.get(API + "/clients/1", headers=AUTH).status_code == 200


# ------------------------------------------------------------------ the data set


@pytest.mark.parametrize("today", [TODAY, date(2024, 2, 29), date(2024, 3, 31), date(2025, 1, 3), date.today()])
def test_seed_is_consistent_at_any_business_date(today):
    data = seed.build(today)
    assert len(data["clients"]) == 41
    for lid, loan in data["loans"].items():
        periods = loan["repaymentSchedule"]["periods"]
        assert "period" not in periods[0] and [p["period"] for p in periods[1:]] == list(range(1, len(periods)))
        installments = periods[1:]
        assert sum(p["principalDue"] for p in installments) == loan["principal"], lid
        for p in installments:
            owed = p["totalDueForPeriod"] - p["totalPaidForPeriod"]
            assert p["totalOutstandingForPeriod"] == owed and p["complete"] == (owed == 0), (lid, p["period"])
        if "summary" in loan:
            s = loan["summary"]
            assert sum(p["totalOutstandingForPeriod"] for p in installments) == s["totalOutstanding"], lid
            assert sum(p["totalPaidForPeriod"] for p in installments) == s["totalRepayment"], lid
            repaid = sum(t["amount"] for t in loan["transactions"] if t["type"]["repayment"])
            assert repaid == s["totalRepayment"], lid
            due = loan_due_from_loan(loan, today)
            assert due.overdue == s["totalOverdue"], lid
            assert loan["inArrears"] == (due.overdue > 0)
    for sid, acc in data["savings"].items():
        txs = [t for t in acc["transactions"] if not t["reversed"]]
        if "summary" not in acc:
            assert not txs
            continue
        balance = sum(t["amount"] if t["entryType"] == "CREDIT" else -t["amount"] for t in txs)
        assert balance == acc["summary"]["accountBalance"], sid
        if txs:
            assert txs[0]["runningBalance"] == balance, sid
        assert [t["date"] for t in acc["transactions"]] == sorted((t["date"] for t in acc["transactions"]), reverse=True)
        assert acc["summary"]["availableBalance"] == balance - acc["onHoldFunds"]


@pytest.mark.parametrize("today", [TODAY, date(2024, 3, 28), date(2024, 12, 30), date.today()])
def test_seed_scenarios_hold_at_any_business_date(today):
    data = seed.build(today)
    arrears = loan_due_from_loan(data["loans"][seed.ARREARS_LOAN_ID], today)
    assert arrears.overdue == Decimal("1120") and arrears.next_due_date > today
    on_time = loan_due_from_loan(data["loans"][seed.ON_TIME_LOAN_ID], today)
    assert on_time.overdue == 0 and today <= on_time.next_due_date <= today + timedelta(days=3)
    assert not any(a["clientId"] == seed.NO_ACCOUNTS_CLIENT_ID
                   for a in list(data["loans"].values()) + list(data["savings"].values()))
    currencies = {a["currency"]["code"] for a in data["savings"].values()}
    assert currencies == {"KES", "TZS", "XOF"}
    assert seed.DEMO_PHONES[0][0] == "+254700000101"
    assert len({p for p, _ in seed.DEMO_PHONES}) == len(seed.DEMO_PHONES)


def test_main_is_importable():
    from convo.devkit.fineract_sim import main

    assert callable(main)
