"""Issue 14 item 10: reminders at scale. The selection asks Fineract's own report of due installments
once per reminder day, then looks up only the loans it found: the number of Mifos X calls does not grow
with the number of active loans. The simulator answers that report in Fineract's shape (contract below)."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from urllib.parse import quote

import pytest
import requests

from bench.remind_bench import add_loans
from convo.devkit import fineract_seed as seed
from convo.devkit.devserver import BackgroundServer
from convo.devkit.fineract_sim import create_sim_app
from convo.devkit.fineract_sim_notify import EXPECTED_PAYMENTS_COLUMNS
from convo.notify import reminders
from tests.integration.test_notify import expected_reminders, found, make_services

TODAY = dt.date(2024, 5, 15)
REPORT = "/fineract-provider/api/v1/runreports/" + quote("Expected Payments By Date - Basic")
AUTH = {"auth": ("mifos", "password"), "headers": {"Fineract-Platform-TenantId": "default"}}


@pytest.fixture
def sim():
    data = seed.build(TODAY)
    app = create_sim_app(data, today=TODAY)
    with BackgroundServer(app) as srv:
        yield srv.url, app


def report(url: str, **params) -> requests.Response:
    return requests.get(url + REPORT, params=params, timeout=10, **AUTH)


def test_the_report_answers_in_fineracts_shape(sim):
    """Fineract's core report 'Expected Payments By Date - Basic' (fineract-provider/src/main/resources/db/
    changelog/tenant/parts/0003_postgresql_specific_initial_data.xml, report_name 'Expected Payments By Date -
    Basic': the columns of its SELECT, active loans only (ml.loan_status_id=300), installments not completed
    (mr.completed_derived=false), mr.duedate BETWEEN '${startDate}' AND '${endDate}', offices under
    ${officeId} by hierarchy). R_<name> fills ${name} (fineract-report/.../AbstractReportingProcessService
    .getReportParams); genericResultSet=false answers one object per row keyed by column name with dates as
    [y, m, d] (GenericDataServiceImpl.generateJsonFromGenericResultsetData); otherwise columnHeaders + data."""
    url, app = sim
    params = dict(R_officeId=1, R_loanOfficerId=-1, R_startDate="2024-01-01", R_endDate="2024-12-31")
    rows = report(url, genericResultSet="false", **params).json()
    assert rows and all(list(r) == list(EXPECTED_PAYMENTS_COLUMNS) for r in rows)      # nulls written too
    assert all(isinstance(r["Due Date"], list) and len(r["Due Date"]) == 3 for r in rows)
    data = app.config["SIM_DATA"]
    by_account = {l["accountNo"]: l for l in data["loans"].values()}
    for r in rows:
        loan = by_account[r["Loan Account Number"]]
        assert loan["status"]["id"] == 300
        period = next(p for p in loan["repaymentSchedule"]["periods"] if p.get("period") == r["Installment"])
        assert period["complete"] is False
        assert Decimal(str(r["Total Due"])) == Decimal(period["totalOutstandingForPeriod"])
    generic = report(url, **params).json()
    assert [h["columnName"] for h in generic["columnHeaders"]] == list(EXPECTED_PAYMENTS_COLUMNS)
    assert len(generic["data"]) == len(rows)
    # an office and the offices under it only: 6 (Dakar) has 8 under it
    names = {data["offices"][6], data["offices"][8]}
    assert {r["Office"] for r in report(url, genericResultSet="false", **{**params, "R_officeId": 6}).json()} <= names
    missing = requests.get(url + "/fineract-provider/api/v1/runreports/" + quote("No Such Report"), timeout=10, **AUTH)
    assert missing.status_code == 404


def test_loans_by_account_number(sim):
    """``GET /loans?accountNo=`` (LoanReadPlatformServiceImpl.retrieveAll: ``l.account_no = ?``, exact)."""
    url, _ = sim
    body = requests.get(url + "/fineract-provider/api/v1/loans", params={"accountNo": "000000029"},
                        timeout=10, **AUTH).json()
    assert [l["id"] for l in body["pageItems"]] == [29] and "repaymentSchedule" not in body["pageItems"][0]
    none = requests.get(url + "/fineract-provider/api/v1/loans", params={"accountNo": "00000002"},
                        timeout=10, **AUTH).json()
    assert none["pageItems"] == []


def hits(url: str) -> int:
    return requests.get(f"{url}/__sim/stats", timeout=10).json()["hits"]


def run_selection(url: str, db: str):
    svc = make_services(url, db)
    before = hits(url)
    stats: dict = {}
    events: list = []
    rems = reminders.find_payment_reminders(svc, on=TODAY, overdue_events=events, stats=stats)
    return rems, events, hits(url) - before, stats["mifos_calls"]


def test_more_loans_cost_a_page_per_2000_not_a_call_per_loan(tmp_path):
    """The same selection over the seed alone and over the seed + 3,000 active loans: the same reports,
    then the loan list in pages of 2,000 instead of a look-up per loan found. The reminders found are
    the ones the schedules say (the oracle of tests/integration/test_notify.py)."""
    small, big = seed.build(TODAY), seed.build(TODAY)
    add_loans(big, 3000, TODAY)
    days = 4 + 1                                          # due3, due0, overdue1, overdue7 + the arrears report
    for i, (data, pages) in enumerate(((small, 1), (big, 2))):
        with BackgroundServer(create_sim_app(data, today=TODAY)) as srv:
            rems, events, calls, counted = run_selection(srv.url, f"sqlite:///{tmp_path}/r{i}.db")
        assert found(rems) == expected_reminders(data, lambda _office: TODAY)
        assert calls == counted == 1 + days + pages, (calls, counted)    # /offices, the reports, the pages
    assert len(rems) > 100 and len(events) > 100                         # and yet: 8 calls


def test_few_loans_found_are_looked_up_one_by_one(sim):
    """``loans_by_account_no``: a look-up per account (``GET /loans?accountNo=``) while that is fewer calls
    than the pages of the active loan list, the pages otherwise."""
    from convo.mifos.notify_reads import loans_by_account_no

    url, app = sim
    data = app.config["SIM_DATA"]
    add_loans(data, 1000, TODAY)
    svc = make_services(url, "sqlite://")
    accounts = [f"L{1_000_000 + i:09d}" for i in (500, 700, 999)] + ["000000029"]
    before = hits(url)
    rows, calls = loans_by_account_no(svc.mifos, accounts, page_size=100)
    assert calls == hits(url) - before == 1 + 3          # the first page had loan 29; 3 look-ups
    assert {a: r["id"] for a, r in rows.items()} == {"L001000700": 1_000_700, "L001000500": 1_000_500,
                                                     "L001000999": 1_000_999, "000000029": 29}
    many = [f"L{1_000_000 + i:09d}" for i in range(0, 1000, 7)]
    before = hits(url)
    rows, calls = loans_by_account_no(svc.mifos, many, page_size=100)
    active = sum(1 for l in data["loans"].values() if l["status"]["id"] == 300)
    assert calls == hits(url) - before == -(-active // 100) and set(rows) == set(many)


def test_an_overdue_loan_is_alerted_with_its_oldest_unpaid_installment(sim, tmp_path):
    url, app = sim
    rems, events, _calls, _ = run_selection(url, f"sqlite:///{tmp_path}/a.db")
    data = app.config["SIM_DATA"]
    late = {l["id"]: l for l in data["loans"].values()
            if l["status"]["id"] == 300 and any(not p["complete"] and p["dueDate"] < TODAY
                                                for p in l["repaymentSchedule"]["periods"] if p.get("period"))}
    assert {f["loan_id"] for _k, f in events} == set(late)
    for key, facts in events:
        loan = late[facts["loan_id"]]
        oldest = min(p["dueDate"] for p in loan["repaymentSchedule"]["periods"]
                     if p.get("period") and not p["complete"] and p["dueDate"] < TODAY)
        assert key == f"loan:{loan['id']}:{oldest.isoformat()}" and facts["days_overdue"] == (TODAY - oldest).days


def test_a_reminder_run_is_counted_with_its_mifos_calls(sim, tmp_path):
    from convo import metrics

    url, _ = sim
    svc = make_services(url, f"sqlite:///{tmp_path}/m.db")
    runs, calls = metrics.REMINDER_RUNS.labels("ok")._value.get(), metrics.REMINDER_MIFOS_CALLS._value.get()
    written = metrics.REMINDERS.labels("written")._value.get()
    before = hits(url)
    rep = reminders.run(svc, on=TODAY, meetings=False)
    assert metrics.REMINDER_RUNS.labels("ok")._value.get() == runs + 1
    assert metrics.REMINDERS.labels("written")._value.get() == written + rep.written > written
    selection = metrics.REMINDER_MIFOS_CALLS._value.get() - calls
    assert 0 < selection < hits(url) - before                   # the selection's calls, then the deliveries'
    assert metrics.REMINDER_LAST_RUN._value.get() > 0


def test_client_contacts_one_by_one_or_from_the_active_client_list(sim):
    """``GET /clients?status=active&offset=&limit=`` (ClientReadPlatformServiceImpl.retrieveAll:
    ``c.status_enum = 300`` for ``status=active``; rows carry ``mobileNo``) when that takes fewer calls
    than ``GET /clients/{id}`` each."""
    from convo.mifos.notify_reads import client_contact, client_contacts

    url, app = sim
    data = app.config["SIM_DATA"]
    add_loans(data, 1000, TODAY)
    svc = make_services(url, "sqlite://")
    body = requests.get(url + "/fineract-provider/api/v1/clients", params={"status": "active", "limit": 5},
                        timeout=10, **AUTH).json()
    active = [c for c in data["clients"].values() if c["status"]["id"] == 300]
    assert body["totalFilteredRecords"] == len(active) and len(body["pageItems"]) == 5
    assert all("mobileNo" in c and "officeId" in c for c in body["pageItems"])
    few = [1, 2, 1_000_500, 1_000_900]
    before = hits(url)
    got, calls = client_contacts(svc.mifos, few, page_size=100)
    assert calls == hits(url) - before == 1 + 2                  # a first page (1 and 2 in it), 2 look-ups
    assert got == {c: client_contact(svc.mifos, c) for c in few}
    many = list(range(1_000_000, 1_001_000, 3))
    before = hits(url)
    got, calls = client_contacts(svc.mifos, many, page_size=100)
    assert calls == hits(url) - before == -(-len(active) // 100) and set(got) == set(many)
