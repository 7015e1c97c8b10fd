"""Fineract as it really behaves, and the client and the simulator following it.

Each test's docstring names the Apache Fineract source (github.com/apache/fineract,
read at 4198b0bc, 2024-10-24) or the Retrofit/OkHttp source it relies on. Where
the source leaves something open, the docstring says so.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from urllib.parse import urljoin
from zoneinfo import ZoneInfo

import pytest
import requests
import sqlalchemy as sa

from convo.cli import sim_settings
from convo.devkit import fineract_seed as seed
from convo.devkit.devserver import BackgroundServer
from convo.devkit.fineract_sim import API, create_sim_app
from convo.devkit.fineract_sim_notify import retrofit_target, wait_for_hooks
from convo.jobs.transfers import TransferRequest, TransferRunner, request_transfer
from convo.mifos.client import (
    MifosClient,
    MifosRejected,
    error_from_response,
    fineract_idempotency_key,
    is_future_date,
    is_insufficient_funds,
    is_loan_locked,
)
from convo.store.db import OutboxMessage, upgrade

ROOT = Path(__file__).resolve().parents[2]
TODAY = dt.date(2024, 4, 20)
AUTH = ("mifos", "password")
TENANT = {"Fineract-Platform-TenantId": "default"}
TOKEN = "Hk3_contract-token-9"
GRACE = "+254700000101"          # client 1: savings 42, loan 29
#: a real Africa's Talking USSD session id: "ATUid_" and 32 hex digits
AT_SESSION = "ATUid_" + "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
KES = {"code": "KES", "decimal_places": 2}


@pytest.fixture
def sim():
    app = create_sim_app(today=TODAY)
    srv = BackgroundServer(app).start()
    yield app, srv.url + API
    srv.stop()


@pytest.fixture
def mifos(sim):
    _, url = sim
    client = MifosClient(url, *AUTH, timeout=5)
    yield client
    client.close()


def post(url: str, path: str, body: dict, **headers) -> requests.Response:
    return requests.post(url + path, json=body, auth=AUTH, headers={**TENANT, **headers}, timeout=10)


def transfer_body(day: str, amount: str = "100", loan: int = 29) -> dict:
    return {"fromOfficeId": 1, "fromClientId": 1, "fromAccountType": 2, "fromAccountId": 42, "toOfficeId": 1,
            "toClientId": 1, "toAccountType": 1, "toAccountId": loan, "dateFormat": "dd MMMM yyyy",
            "locale": "en", "transferDate": day, "transferAmount": amount, "transferDescription": "x"}


def balance(app) -> Decimal:
    return app.config["SIM_DATA"]["savings"][42]["summary"]["availableBalance"]


# --------------------------------------------------------------------------- 8. Idempotency-Key length


def test_idempotency_key_sent_fits_fineracts_50_character_column(mifos, sim):
    """``m_portfolio_command_source.idempotency_key`` is VARCHAR(50):
    fineract-provider/src/main/resources/db/changelog/tenant/parts/0061_add_idempotency_key_to_command_source.xml
    (line 33) and ``CommandSource.java`` (``@Column(name = "idempotency_key", length = 50)``, line 121).
    Our key with a real AT session id is longer; what is sent is its digest, the same every time."""
    app, _ = sim
    long_key = f"repay:ussd:{AT_SESSION}:29:500.00@2024-04-20"
    assert len(long_key) > 50
    sent = fineract_idempotency_key(long_key)
    assert len(sent) <= 50 and sent == fineract_idempotency_key(long_key)
    assert sent != fineract_idempotency_key(long_key.replace("500.00", "500.01"))
    before = balance(app)
    first = mifos.transfer_savings_to_loan(client_id=1, office_id=1, savings_id=42, loan_id=29,
                                           amount=Decimal("500"), on=TODAY, idempotency_key=long_key)
    again = mifos.transfer_savings_to_loan(client_id=1, office_id=1, savings_id=42, loan_id=29,
                                           amount=Decimal("500"), on=TODAY, idempotency_key=long_key)
    assert not first.served_from_cache and again.served_from_cache and again.resource_id == first.resource_id
    assert balance(app) == before - 500                                   # moved once
    assert ("accounttransfer", sent) in app.config["SIM_IDEMPOTENCY"]


def test_simulator_refuses_a_key_longer_than_the_column_like_fineract(sim):
    """A key over 50 characters fails the INSERT in ``CommandSourceService.saveInitial`` (fineract-core,
    commands/service/CommandSourceService.java), before the command runs: nothing moves, nothing is stored
    under the key. What the caller sees is not spelled out in one place; following the code:
    ``SynchronousCommandProcessingService.executeCommand`` (saveInitialNewTransaction, outside its try) →
    resilience4j ``fallbackExecuteCommand`` → ``ErrorHandler.getMappable``: EclipseLink's failure arrives as
    a JpaSystemException, a ``NonTransientDataAccessException`` → ``PlatformDataIntegrityException``
    ("error.msg.data.integrity.issue") → ``PlatformDataIntegrityExceptionMapper``: **403**. The message is
    the database's (PostgreSQL shown; MySQL says "Data too long for column"); on a MySQL/MariaDB without
    strict mode the key would be cut to 50 characters instead (unclear, not modelled)."""
    app, url = sim
    before = balance(app)
    key = f"repay:ussd:{AT_SESSION}:29:100"
    assert len(key) == 56
    r = post(url, "/accounttransfers", transfer_body("20 April 2024"), **{"Idempotency-Key": key})
    assert r.status_code == 403
    body = r.json()
    assert body["userMessageGlobalisationCode"] == "error.msg.data.integrity.issue"
    assert body["developerMessage"] == "The request caused a data integrity issue to be fired by the database."
    assert "character varying(50)" in body["errors"][0]["defaultUserMessage"]
    assert balance(app) == before and app.config["SIM_IDEMPOTENCY"] == {}
    ok = post(url, "/accounttransfers", transfer_body("20 April 2024"), **{"Idempotency-Key": key[:50]})
    assert ok.status_code == 200 and balance(app) == before - 100


# --------------------------------------------------------------------------- 10. transactions search paging


def test_transactions_search_offset_is_a_page_number_and_unknown_accounts_are_empty(sim):
    """``TransactionSearchRequest.pageable`` (fineract-core portfolio/search/data/TransactionSearchRequest.java,
    lines 99-105): ``PageRequest.of(offset, limit)``: ``offset`` is the page. ``SavingsAccountTransactionsSearchServiceImpl
    .searchTransactions`` (fineract-provider, lines 75-131): no account check (COUNT(*) = 0 → an empty page,
    200), ``is_reversal = false`` rows only, newest first (transaction_date, created_date, id DESC)."""
    _, url = sim

    def page(sid, offset, limit):
        r = requests.get(f"{url}/savingsaccounts/{sid}/transactions/search", auth=AUTH, headers=TENANT,
                         params={"offset": offset, "limit": limit}, timeout=10)
        assert r.status_code == 200, r.text
        return r.json()

    everything = [t["id"] for t in page(42, 0, 100)["content"]]
    assert page(42, 0, 3)["total"] == len(everything) == 8
    assert [t["id"] for t in page(42, 1, 3)["content"]] == everything[3:6]          # page 1, not row 1
    assert [t["id"] for t in page(42, 2, 3)["content"]] == everything[6:8]
    assert page(9999, 0, 10) == {"total": 0, "content": []}


def test_mini_statement_with_reversed_newest_rows_loses_no_lines(sim, mifos):
    """The mini-statement asks for page 0, then page 1 (not "offset 10") while reversed rows leave it short.
    Source as above (TransactionSearchRequest.pageable); reversed originals are in the search's answer
    (``reversed: true``), only reversal entries (``is_reversal``) are filtered by Fineract."""
    app, _ = sim
    acc = app.config["SIM_DATA"]["savings"][42]
    args = dict(acc["_args"])
    args["txs"] = list(args["txs"]) + [(TODAY, "deposit", Decimal(10 + i), True) for i in range(12)]
    app.config["SIM_DATA"]["savings"][42] = seed.savings_account(today=TODAY, **args)
    full = mifos.get("/savingsaccounts/42", {"associations": "transactions"})["transactions"]
    expected = [t["id"] for t in full if not t["reversed"]][:5]
    got = mifos.savings_transactions(42, limit=5)
    assert [t.id for t in got] == expected and len(got) == 5
    assert mifos.has_transactions_search is True


# --------------------------------------------------------------------------- 11. business date


def test_a_transfer_after_the_business_date_is_400_in_the_future(sim):
    """``SavingsAccount.withdraw`` (fineract-savings portfolio/savings/domain/SavingsAccount.java, lines
    1242-1251): ``DateUtils.isDateInTheFuture`` (= after ``getBusinessLocalDate``) → ``PlatformApiDataValidationException``
    with ``error.msg.savingsaccount.transaction.in.the.future``, parameter ``transactionDate``, the date in the
    request's format as argument: a 400 in the shape of tests/fineract_samples/error_validation.json."""
    app, url = sim
    app.config["SIM_BUSINESS_DATE"] = TODAY - dt.timedelta(days=2)
    before = balance(app)
    r = post(url, "/accounttransfers", transfer_body("19 April 2024"), **{"Idempotency-Key": "future-1"})
    assert r.status_code == 400
    sample = json.loads((ROOT / "tests/fineract_samples/error_validation.json").read_text())
    body = r.json()
    assert {k: body[k] for k in ("developerMessage", "httpStatusCode", "defaultUserMessage",
                                 "userMessageGlobalisationCode")} == \
        {k: sample[k] for k in ("developerMessage", "httpStatusCode", "defaultUserMessage",
                                "userMessageGlobalisationCode")}
    assert body["errors"] == [{"developerMessage": "Transaction date cannot be in the future.",
                               "defaultUserMessage": "Transaction date cannot be in the future.",
                               "userMessageGlobalisationCode": "error.msg.savingsaccount.transaction.in.the.future",
                               "parameterName": "transactionDate", "args": [{"value": "19 April 2024"}]}]
    err = error_from_response(400, body)
    assert is_future_date(err) and err.reason == "future_date" and not is_insufficient_funds(err)
    assert balance(app) == before
    # Fineract keeps the 400 under the key: the same key answers it again, even for a good date
    again = post(url, "/accounttransfers", transfer_body("18 April 2024"), **{"Idempotency-Key": "future-1"})
    assert again.status_code == 400 and again.headers["x-served-from-cache"] == "true"
    assert post(url, "/accounttransfers", transfer_body("18 April 2024"),
                **{"Idempotency-Key": "future-2"}).status_code == 200


def test_business_date_read_where_the_feature_is_on_else_the_tenants_today(sim, mifos):
    """``BusinessDateReadPlatformServiceImpl.getBusinessDates`` (fineract-core infrastructure/businessdate/service,
    line 70): the tenant's today (``DateUtils.getLocalDateOfTenant``) unless ``isBusinessDateEnabled``,
    then the stored BUSINESS_DATE (``GET /businessdate/BUSINESS_DATE``, BusinessDateApiResource). The setting is
    ``enable_business_date`` (0015_add_business_date.xml), renamed ``enable-business-date`` by
    0149_update_global_configuration_names.xml."""
    app, _ = sim
    app.config["SIM_BUSINESS_DATE"] = dt.date(2024, 4, 17)
    assert mifos.business_date("Africa/Nairobi") == dt.date(2024, 4, 17)
    app.config["SIM_BUSINESS_DATE_ENABLED"] = False
    assert mifos.business_date("Africa/Nairobi", refresh=True) == dt.datetime.now(ZoneInfo("Africa/Nairobi")).date()
    for tz in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):        # 25 hours apart: the zone decides the day
        assert mifos.business_date(tz) == dt.datetime.now(ZoneInfo(tz)).date()


def test_a_user_without_business_date_permission_gets_the_tenants_today(mifos):
    """``BusinessDateApiResource.getBusinessDate`` checks ``READ_BUSINESS_DATE``; the refusal is
    ``NoAuthorizationExceptionMapper`` → ``ApiGlobalErrorResponse.unAuthorized`` (fineract-core, line 124), a
    Fineract 403. A repayment must not fail for it: the tenant's today is used, and a wrong guess is
    corrected by the 400 "in the future" path."""
    import responses

    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, mifos.base_url + "/configurations",
                 json={"globalConfiguration": [{"name": "enable-business-date", "enabled": True}]})
        msg = "User has no authority to view business_dates"
        rsps.add(responses.GET, mifos.base_url + "/businessdate/BUSINESS_DATE", status=403, json={
            "developerMessage": "The user associated with credentials passed on this request does not have "
                                "sufficient privileges to perform this action.",
            "httpStatusCode": "403", "defaultUserMessage": "Insufficient privileges to perform this action.",
            "userMessageGlobalisationCode": "error.msg.not.authorized",
            "errors": [{"developerMessage": msg, "defaultUserMessage": msg,
                        "userMessageGlobalisationCode": "error.msg.not.authorized", "args": []}]})
        assert mifos.business_date("Africa/Nairobi", refresh=True) == \
            dt.datetime.now(ZoneInfo("Africa/Nairobi")).date()


@contextmanager
def gateway_and_sim(redis_url: str, database_url: str, **sim_kw):
    """The gateway app over HTTP in front of a simulator whose Flask app the test can reach."""
    from convo.web import create_app

    upgrade(database_url)
    app = create_sim_app(today=TODAY, **sim_kw)
    sim = BackgroundServer(app).start()
    try:
        settings = sim_settings(sim.url, redis_url=redis_url, database_url=database_url, flows_reload_seconds=0,
                                callback_token=TOKEN)
        web = create_app(settings)
        with BackgroundServer(web) as gw:
            yield gw.url, app, web.extensions["convo"]
    finally:
        sim.stop()


def transfer_rows(services) -> list:
    with services.db.connect() as c:
        return c.execute(sa.select(TransferRequest.__table__).order_by(TransferRequest.id)).all()


@pytest.mark.postgres
def test_the_runner_books_on_fineracts_business_date_and_redates_a_refused_transfer(redis_url, pg_url):
    """Transfers are dated by ``GET /businessdate/BUSINESS_DATE`` (feature on) and, after a 400
    ``...transaction.in.the.future`` (SavingsAccount.java lines 1242-1251), re-dated and sent under a new key,
    because ``SynchronousCommandProcessingService.exceptionWhenTheRequestAlreadyProcessed`` answers a key whose
    command ended in ERROR with that stored error (IdempotentCommandExceptionMapper)."""
    with gateway_and_sim(redis_url, pg_url, business_date=TODAY - dt.timedelta(days=1)) as (gw, app, services):
        base = dict(phone=GRACE, lang="en", client_id=1, office_id=1, savings_id=42, loan_id=29, currency=KES,
                    loan_label="Biashara Flat 6M *0029")
        before = balance(app)
        request_transfer(services.db, idempotency_key=f"repay:ussd:{AT_SESSION}:29:100.00", amount=Decimal("100"),
                         **base)
        TransferRunner(services).run_once()
        (row,) = transfer_rows(services)
        assert row.status == "done" and row.transfer_date == TODAY - dt.timedelta(days=1)
        sent = app.config["SIM_DATA"]["transfers"][row.resource_id]
        assert sent["date"] == TODAY - dt.timedelta(days=1)
        # a request whose stored date is now after the business date (e.g. the business date was set back)
        key2 = f"repay:ussd:{AT_SESSION}:29:200.00"
        request_transfer(services.db, idempotency_key=key2, amount=Decimal("200"), **base)
        with services.db.begin() as c:
            c.execute(sa.update(TransferRequest.__table__).where(TransferRequest.idempotency_key == key2)
                      .values(transfer_date=TODAY))
        TransferRunner(services).run_once()
        row2 = transfer_rows(services)[1]
        assert row2.status == "done", row2.error
        assert row2.transfer_date == TODAY - dt.timedelta(days=1)
        store = app.config["SIM_IDEMPOTENCY"]
        refused = store[("accounttransfer", fineract_idempotency_key(f"{key2}@{TODAY.isoformat()}"))]
        assert refused[0] == 400 and "in.the.future" in refused[1]
        assert store[("accounttransfer", fineract_idempotency_key(f"{key2}@{row2.transfer_date}"))][0] == 200
        assert balance(app) == before - 300                              # each moved once
        # the worker ran twice more (as after a crash): nothing moves again
        with services.db.begin() as c:
            c.execute(sa.update(TransferRequest.__table__).values(status="pending"))
        TransferRunner(services).run_once()
        assert balance(app) == before - 300


# --------------------------------------------------------------------------- 13. refusals of a transfer


@pytest.mark.parametrize("code", ["error.msg.savingsaccount.transaction.insufficient.account.balance",
                                  "error.msg.savingsaccount.transaction.insufficient.account.balance.withdraw"])
def test_both_insufficient_balance_codes_are_insufficient_funds(code):
    """``InsufficientAccountBalanceException`` (fineract-savings portfolio/savings/exception/
    InsufficientAccountBalanceException.java, lines 29-34): ``...insufficient.account.balance.withdraw`` when a
    withdrawal fee applies, else ``...insufficient.account.balance``; a domain rule (403)."""
    sample = json.loads((ROOT / "tests/fineract_samples/error_403_domain_rule.json").read_text(),
                        parse_float=Decimal)
    sample["errors"][0]["userMessageGlobalisationCode"] = code
    err = error_from_response(403, sample)
    assert isinstance(err, MifosRejected) and is_insufficient_funds(err) and err.reason == "insufficient_funds"


def test_no_409_on_account_transfers_the_cob_lock_guards_loans_only(sim, mifos):
    """``LoanCOBApiFilter.doFilterInternal`` answers 409 only when ``LoanCOBFilterHelper.isOnApiList``:
    POST/PUT/DELETE (``HTTP_METHODS``, line 79) on ``/v1/(reschedule)loans/(external-id/){id}...``
    (``LOAN_PATH_PATTERN``, line 82). ``/v1/accounttransfers`` is not on it, so a transfer to a loan the COB
    job holds is not refused with 409."""
    app, url = sim
    app.config["SIM_FAULTS"] = {"locked_loans": [29]}
    r = post(url, "/accounttransfers", transfer_body("20 April 2024"), **{"Idempotency-Key": "cob-1"})
    assert r.status_code == 200
    locked = post(url, "/loans/29/transactions?command=repayment",
                  {"transactionDate": "20 April 2024", "dateFormat": "dd MMMM yyyy", "locale": "en",
                   "transactionAmount": "10"})
    assert locked.status_code == 409
    assert is_loan_locked(error_from_response(409, locked.json()))


# --------------------------------------------------------------------------- 9. hooks, the Retrofit way


def readme_payload_url() -> str:
    found = re.findall(r'"Payload URL": "([^"]+)"', (ROOT / "README.md").read_text())
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("base,expected", [
    ("https://h.example/hooks/fineract/tok/", "https://h.example/hooks/fineract/tok/"),
    ("https://h.example/hooks/fineract/?token=tok", "https://h.example/hooks/fineract/"),
    ("https://h.example/hooks/fineract/tok/?a=1#frag", "https://h.example/hooks/fineract/tok/"),
    ("https://h.example", "https://h.example/"),
])
def test_retrofit_posts_to_dot_resolved_against_the_payload_url(base, expected):
    """``WebHookService`` (fineract-provider infrastructure/hooks/processor/WebHookService.java, line 45):
    ``@POST(".")`` on a Retrofit built with ``baseUrl(url)`` (ProcessorHelper.createWebHookService, line 118).
    Retrofit's RequestBuilder.get() does ``baseUrl.resolve(".")`` (retrofit2/RequestBuilder.java, line 241); OkHttp's ``HttpUrl.Builder.parse``
    (okhttp3/HttpUrl.kt) copies the query only for an empty or ``#``-only link and ``resolvePath``/``push``
    skip a ``.`` segment: RFC 3986 relative resolution, which ``urljoin`` computes."""
    assert retrofit_target(base) == urljoin(base, ".") == expected


def test_retrofit_refuses_a_payload_url_not_ending_in_slash(sim):
    """``Retrofit.Builder.baseUrl`` (retrofit2/Retrofit.java, lines 607-613): "baseUrl must end in /".
    Saving such a hook runs ``validateHookRules`` → ``createWebHookService`` (HookWritePlatformServiceJpaRepositoryImpl,
    lines 270-277), whose IllegalArgumentException is no IOException: ``DefaultExceptionMapper`` answers 500."""
    _, url = sim
    with pytest.raises(ValueError, match="baseUrl must end in /"):
        retrofit_target("https://h.example/hooks/fineract?token=tok")
    r = post(url, "/hooks", {"name": "Web", "isActive": True, "config": {
        "Content Type": "json", "Payload URL": "http://127.0.0.1:9/hooks/fineract?token=tok"},
        "events": [{"actionName": "DEPOSIT", "entityName": "SAVINGSACCOUNT"}]})
    assert r.status_code == 500 and r.json() == {"Exception": "baseUrl must end in /: "
                                                               "http://127.0.0.1:9/hooks/fineract?token=tok"}


def receipts(services) -> list[OutboxMessage]:
    with sa.orm.Session(services.db) as s:
        return list(s.scalars(sa.select(OutboxMessage).where(OutboxMessage.kind == "receipt")
                              .order_by(OutboxMessage.id)))


def add_hook(sim_api: str, payload_url: str) -> requests.Response:
    return post(sim_api, "/hooks", {
        "name": "Web", "displayName": "SMS receipts", "isActive": True,
        "config": {"Content Type": "json", "Payload URL": payload_url},
        "events": [{"actionName": "REPAYMENT", "entityName": "LOAN"},
                   {"actionName": "DEPOSIT", "entityName": "SAVINGSACCOUNT"}]})


def deposit(sim_api: str, amount: str = "750") -> dict:
    r = post(sim_api, "/savingsaccounts/42/transactions?command=deposit",
             {"transactionDate": "20 April 2024", "dateFormat": "dd MMMM yyyy", "locale": "en",
              "transactionAmount": amount})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.postgres
def test_the_readmes_hook_url_delivers_a_receipt_when_fineract_posts_it(redis_url, pg_url):
    """End to end: the Payload URL exactly as the README gives it, saved as a hook in the simulator (which pings
    it like ``validateHookRules``), a deposit (SAVINGSACCOUNT DEPOSIT), the hook posted the Retrofit way
    (WebHookProcessor.sendRequest → ``sendJsonRequest``) to ``urljoin(url, ".")``, one receipt."""
    with gateway_and_sim(redis_url, pg_url) as (gw, app, services):
        sim_api = services.settings.fineract_url
        url = readme_payload_url().replace("https://<host>", gw).replace("<token>", TOKEN)
        assert url == f"{gw}/hooks/fineract/{TOKEN}/" and retrofit_target(url) == url
        assert add_hook(sim_api, url).status_code == 200
        done = deposit(sim_api)
        (delivery,) = wait_for_hooks(app)
        assert delivery["url"] == url and delivery["status"] == 200, delivery
        (msg,) = receipts(services)
        assert msg.recipient == GRACE and "Deposit of KES 750.00 to account *0042" in msg.body
        assert msg.idempotency_key == f"receipt:default:SAVINGSACCOUNT:{done['resourceId']}"


@pytest.mark.postgres
def test_a_query_string_token_never_arrives(redis_url, pg_url):
    """The old README's ``…/hooks/fineract?token=…``: with a trailing slash Fineract accepts the hook but
    Retrofit drops the query (WebHookService ``@POST(".")``), so the post arrives without the token and is
    refused; no receipt. Without the slash the hook cannot even be saved (see above)."""
    with gateway_and_sim(redis_url, pg_url) as (gw, app, services):
        sim_api = services.settings.fineract_url
        assert add_hook(sim_api, f"{gw}/hooks/fineract/?token={TOKEN}").status_code == 200
        deposit(sim_api)
        (delivery,) = wait_for_hooks(app)
        assert delivery["url"] == f"{gw}/hooks/fineract/" and delivery["status"] in (403, 404)
        assert receipts(services) == []


# --------------------------------------------------------------------------- 14. receipts under attack


def hook(gw: str, body: dict, *, entity="SAVINGSACCOUNT", action="DEPOSIT", tenant="default",
         token=TOKEN) -> requests.Response:
    headers = {"X-Fineract-Entity": entity, "X-Fineract-Action": action, "Content-Type": "application/json"}
    if tenant is not None:
        headers["Fineract-Platform-TenantId"] = tenant
    return requests.post(f"{gw}/hooks/fineract/{token}/", data=json.dumps(body), headers=headers, timeout=10)


def deposit_hook_body(client_id: int, savings_id: int = 42, tx: int = 4202) -> dict:
    return {"entityName": "SAVINGSACCOUNT", "actionName": "DEPOSIT", "createdBy": 1, "officeId": 1,
            "clientId": client_id, "request": {"transactionAmount": "2500"},
            "response": {"clientId": client_id, "savingsId": savings_id, "resourceId": tx, "changes": {}},
            "timestamp": "2024-04-20T09:30:00Z"}


@pytest.mark.postgres
def test_forged_client_wrong_tenant_and_replays_send_one_receipt_to_the_owner(redis_url, pg_url):
    """Attacks on the hook (its body is the caller's word; only Mifos X is the truth). The owner comes from
    ``GET /savingsaccounts/{id}`` (``clientId``), the tenant from ``Fineract-Platform-TenantId`` (WebHookService
    ``TENANT_HEADER``, set by WebHookProcessor from the tenant context)."""
    with gateway_and_sim(redis_url, pg_url) as (gw, app, services):
        other_phone = app.config["SIM_DATA"]["clients"][2]["mobileNo"]
        assert requests.get(f"{gw}/hooks/fineract/{TOKEN}/", timeout=5).status_code == 200    # Fineract's ping
        assert hook(gw, deposit_hook_body(2), token="wrong").status_code == 403
        wrong_tenant = hook(gw, deposit_hook_body(1), tenant="othermfi")
        assert wrong_tenant.status_code == 403 and "othermfi" in wrong_tenant.text
        assert hook(gw, deposit_hook_body(1), tenant=None).status_code == 400
        assert receipts(services) == []

        withdrawal = hook(gw, deposit_hook_body(1), action="WITHDRAWAL")     # 4202 is a deposit
        assert withdrawal.json()["status"] == "ignored" and "not a withdrawal" in withdrawal.json()["detail"]
        forged = hook(gw, deposit_hook_body(2))                         # says client 2; account 42 is client 1's
        assert forged.status_code == 200 and forged.json()["status"] == "done", forged.text
        for body in (deposit_hook_body(2), deposit_hook_body(1), deposit_hook_body(1)):   # replays
            assert hook(gw, body).json()["status"] == "duplicate"
        # the same transaction under another account: Mifos X has no such transaction there
        assert hook(gw, deposit_hook_body(1, savings_id=43)).json()["status"] in ("ignored", "duplicate")
        (msg,) = receipts(services)
        assert msg.recipient == GRACE and msg.recipient != other_phone

        loan_forged = hook(gw, {"officeId": 1, "clientId": 2, "loanId": 29, "resourceId": 2907},
                           entity="LOAN", action="REPAYMENT")
        assert loan_forged.json()["status"] == "done", loan_forged.text
        assert [m.recipient for m in receipts(services)] == [GRACE, GRACE]


def test_the_path_token_passes_the_ip_allow_list_and_is_redacted(tmp_path):
    """The path form is guarded like every callback (allow-list, constant-time token) and access logs hide it."""
    from convo.config import Settings
    from convo.security import redact_query_secrets
    from convo.web import create_app

    db = f"sqlite:///{tmp_path}/convo.db"
    upgrade(db)
    web = create_app(Settings(redis_url="memory://", database_url=db, callback_token=TOKEN,
                              flows_reload_seconds=0, callback_allow_ips="10.9.0.0/16"))
    c = web.test_client()
    inside, outside = {"REMOTE_ADDR": "10.9.1.2"}, {"REMOTE_ADDR": "8.8.8.8"}
    assert c.get(f"/hooks/fineract/{TOKEN}/", environ_base=inside).status_code == 200
    assert c.get(f"/hooks/fineract/{TOKEN}/", environ_base=outside).status_code == 403
    assert c.get("/hooks/fineract/nope/", environ_base=inside).status_code == 403
    line = f'127.0.0.1 - - "POST /hooks/fineract/{TOKEN}/ HTTP/1.1" 200 -'
    assert TOKEN not in redact_query_secrets(line) and "/hooks/fineract/***/" in redact_query_secrets(line)


def test_simulator_offices_have_fineracts_hierarchy_and_parent(sim):
    """GET /offices rows as Fineract's OfficeReadPlatformServiceImpl.OfficeMapper (lines 65-82) selects
    them: id, name, nameDecorated, hierarchy, parentId, parentName; the hierarchy as Office.java
    (lines 191-198) writes it: "." for the head office, else the parent's hierarchy + id + ".".
    Who-is-calling walks parentId up to the nearest office with a region."""
    _, url = sim
    rows = requests.get(url + "/offices", auth=AUTH, headers=TENANT, timeout=10).json()
    by_id = {o["id"]: o for o in rows}
    heads = [o for o in rows if o.get("parentId") is None]
    assert len(heads) == 1 and heads[0]["hierarchy"] == "."
    for o in rows:
        assert {"id", "name", "nameDecorated", "hierarchy"} <= o.keys()
        if o.get("parentId") is not None:
            parent = by_id[o["parentId"]]
            assert o["parentName"] == parent["name"]
            assert o["hierarchy"] == parent["hierarchy"] + f"{o['id']}."
