"""Who a message to a client goes to (issue 9 item 1, the outbound side): a number stored without a
country code is read in the *client's* country, in one place (:func:`convo.notify.recipients.client_phone`)
for receipts, reminders and staff messages, with the same rule that identifies callers.

Ndeye (client 41) belongs to Dakar Médina (office 8), a branch flows/notify.yaml does not list, under
Dakar Plateau (6, region SN); her number is stored as ``771000141``. She is +221771000141; the
Kenyan +254771000141 is a stranger and must never get her receipt, reminder or a staff message.
Awa (42, added here, same branch) has a Kenyan-style ``0712345678``, which is no Senegalese number:
she gets nothing, and the reason shows (the hook's detail, a skipped line of ``convo remind``, a 422),
rather than a guess in another country.
"""
from __future__ import annotations

import datetime as dt
from contextlib import contextmanager
from decimal import Decimal

import pytest
import requests
import sqlalchemy as sa

from convo.cli import sim_settings
from convo.devkit import fineract_seed as seed
from convo.devkit.devserver import BackgroundServer
from convo.devkit.fineract_sim import create_sim_app
from convo.devkit.fineract_sim_notify import wait_for_hooks
from convo.store.db import OutboxMessage, upgrade
from convo.store.notify_models import ClientMessage, FineractHook

TODAY = dt.date(2024, 4, 20)
TOKEN = "recipients-hook-token"
STAFF = {"Authorization": "Bearer staff-token-41", "X-Staff-User": "alice"}
SIM_AUTH = ("mifos", "password")
NDEYE, NDEYE_PHONE, STRANGER = 41, "+221771000141", "+254771000141"
AWA, AWA_STORED = 42, "0712345678"
AWA_SAVINGS, NDEYE_LOAN, AWA_LOAN = 990, 990, 991


def dataset() -> dict:
    """The seed, plus a loan for Ndeye due in 3 days, and Awa at the same branch with savings and a loan."""
    data = seed.build(TODAY)
    assert seed.OFFICE_PARENTS[8] == 6 and data["clients"][NDEYE]["mobileNo"] == "771000141"
    assert AWA not in data["clients"] and AWA_SAVINGS not in data["savings"]
    assert not {NDEYE_LOAN, AWA_LOAN} & set(data["loans"])
    awa = seed.client_record(id=AWA, first="Awa", middle="", last="Diop", office=8, mobile=AWA_STORED,
                             status="active", today=TODAY)
    awa["savingsAccountId"] = AWA_SAVINGS
    data["clients"][AWA] = awa
    data["savings"][AWA_SAVINGS] = seed.savings_account(
        id=AWA_SAVINGS, client=awa, product="EP", currency="XOF", status="active", today=TODAY,
        txs=[(TODAY - dt.timedelta(days=30), "deposit", Decimal("5000"), False)])
    for loan_id, client in ((NDEYE_LOAN, data["clients"][NDEYE]), (AWA_LOAN, awa)):
        data["loans"][loan_id] = seed.loan_account(
            id=loan_id, client=client, product="CRD", currency="XOF", principal="60000", months=6, rate="2",
            first_due=TODAY + dt.timedelta(days=3), payments=[], status="active", today=TODAY)
    return data


@contextmanager
def gateway_and_sim(redis_url: str, database_url: str):
    """The gateway over HTTP in front of a simulator serving :func:`dataset`."""
    from convo.web import create_app

    upgrade(database_url)
    app = create_sim_app(dataset(), today=TODAY)
    sim = BackgroundServer(app).start()
    try:
        settings = sim_settings(sim.url, redis_url=redis_url, database_url=database_url, flows_reload_seconds=0,
                                callback_token=TOKEN, staff_token="staff-token-41")
        web = create_app(settings)
        with BackgroundServer(web) as gw:
            yield gw.url, app, web.extensions["convo"]
    finally:
        sim.stop()


def sim_post(sim_api: str, path: str, body: dict) -> dict:
    r = requests.post(sim_api + path, json=body, auth=SIM_AUTH, timeout=10,
                      headers={"Fineract-Platform-TenantId": "default"})
    assert r.status_code == 200, r.text
    return r.json()


def messages_of(services, client_id: int) -> list[OutboxMessage]:
    with sa.orm.Session(services.db) as s:
        return list(s.scalars(sa.select(OutboxMessage).join(ClientMessage, ClientMessage.outbox_id == OutboxMessage.id)
                              .where(ClientMessage.client_id == client_id).order_by(OutboxMessage.id)))


def to_stranger(services) -> list[OutboxMessage]:
    with sa.orm.Session(services.db) as s:
        return list(s.scalars(sa.select(OutboxMessage).where(OutboxMessage.recipient == STRANGER)))


@pytest.mark.postgres
def test_receipt_goes_to_the_clients_number_read_in_her_parent_offices_country(redis_url, pg_url):
    """A deposit in Mifos X, its hook posted the Retrofit way to the README's URL: the receipt goes to
    +221771000141. Awa's deposit sends nothing, and the hook row says why."""
    with gateway_and_sim(redis_url, pg_url) as (gw, app, services):
        sim_api = services.settings.fineract_url
        sim_post(sim_api, "/hooks", {
            "name": "Web", "isActive": True, "events": [{"actionName": "DEPOSIT", "entityName": "SAVINGSACCOUNT"}],
            "config": {"Content Type": "json", "Payload URL": f"{gw}/hooks/fineract/{TOKEN}/"}})
        deposit = {"transactionDate": "20 April 2024", "dateFormat": "dd MMMM yyyy", "locale": "en",
                   "transactionAmount": "1500"}
        ndeye_savings = app.config["SIM_DATA"]["clients"][NDEYE]["savingsAccountId"]
        sim_post(sim_api, f"/savingsaccounts/{ndeye_savings}/transactions?command=deposit", deposit)
        sim_post(sim_api, f"/savingsaccounts/{AWA_SAVINGS}/transactions?command=deposit", deposit)
        deliveries = wait_for_hooks(app)
        assert [d["status"] for d in deliveries] == [200, 200], deliveries

        (receipt,) = messages_of(services, NDEYE)
        assert receipt.recipient == NDEYE_PHONE and receipt.kind == "receipt"
        assert receipt.body.startswith(f"Deposit of XOF 1,500 to account *{ndeye_savings % 10000:04d} "), receipt.body
        assert messages_of(services, AWA) == [] and to_stranger(services) == []
        with sa.orm.Session(services.db) as s:
            awa_hook = s.scalars(sa.select(FineractHook).where(FineractHook.key.like(f"%:{AWA_SAVINGS}:%"))).one()
        assert awa_hook.status == "ignored"
        assert awa_hook.detail == f"client {AWA}: mobile number '{AWA_STORED}' is not a phone number in SN (office 8)"


@pytest.mark.postgres
def test_convo_remind_texts_the_clients_number_and_skips_one_it_cannot_read(redis_url, pg_url):
    """``convo remind``: Ndeye's installment due in 3 days is reminded at +221771000141; Awa's is skipped,
    and the command says why."""
    from click.testing import CliRunner

    from convo.cli import main

    with gateway_and_sim(redis_url, pg_url) as (_gw, _app, services):
        env = {"CONVO_FINERACT_URL": services.settings.fineract_url, "CONVO_DATABASE_URL": pg_url,
               "CONVO_REDIS_URL": redis_url, "CONVO_FLOWS_RELOAD_SECONDS": "0"}
        res = CliRunner().invoke(main, ["remind", "--date", TODAY.isoformat(), "--no-meetings"], env=env)
        assert res.exit_code == 0, res.output
        assert f"client {NDEYE} " in res.stdout and f"client {AWA} " in res.stdout    # both are due
        (reminder,) = messages_of(services, NDEYE)
        assert reminder.recipient == NDEYE_PHONE and reminder.kind == "reminder"
        assert messages_of(services, AWA) == [] and to_stranger(services) == []
        assert (f"skipped: remind:{AWA_LOAN}:1:{TODAY + dt.timedelta(days=3)}:due3: client {AWA}: mobile number "
                f"'{AWA_STORED}' is not a phone number in SN (office 8)") in res.stderr, res.stderr


@pytest.mark.postgres
def test_staff_message_goes_to_the_clients_number_or_says_why_not(redis_url, pg_url):
    """``POST /api/clients/<id>/messages``: to +221771000141 for Ndeye; a 422 naming the reason for Awa."""
    with gateway_and_sim(redis_url, pg_url) as (gw, _app, services):
        r = requests.post(f"{gw}/api/clients/{NDEYE}/messages", json={"text": "Votre carte est prête."},
                          headers=STAFF, timeout=10)
        assert r.status_code == 202, r.text
        assert r.json()["to"] == NDEYE_PHONE
        refused = requests.post(f"{gw}/api/clients/{AWA}/messages", json={"text": "Votre carte est prête."},
                                headers=STAFF, timeout=10)
        assert refused.status_code == 422
        assert refused.json()["error"] == (f"client {AWA}: mobile number '{AWA_STORED}' is not a phone number "
                                           "in SN (office 8)")
        assert [m.recipient for m in messages_of(services, NDEYE)] == [NDEYE_PHONE]
        assert messages_of(services, AWA) == [] and to_stranger(services) == []


def test_one_rule_for_callers_and_recipients():
    """The reading that identifies a caller is the one that addresses a message: same office regions, same
    :func:`convo.text.phone.read_stored`. A stored number with its country code is read as written anywhere."""
    from types import SimpleNamespace

    from convo.notify.recipients import NoRecipient, client_phone

    services = SimpleNamespace()
    regions = {8: "SN", 2: "KE"}.get
    assert client_phone(services, NDEYE, "771000141", 8, regions) == (NDEYE_PHONE, "SN")
    assert client_phone(services, 1, "771000141", 2, regions) == (STRANGER, "KE")
    assert client_phone(services, 1, "+254771000141", 8, regions) == (STRANGER, "SN")
    for stored in (None, "", "0712345678", "12345", "not a number"):
        with pytest.raises(NoRecipient):
            client_phone(services, AWA, stored, 8, regions)


@pytest.mark.postgres
def test_a_staff_alert_reads_a_national_staff_number_in_the_clients_office_country(redis_url, pg_url):
    """Alerts (flows/alerts.yaml ``overdue_to_officer``): Ndeye's loan officer at the Dakar branch has
    ``770000004`` in Mifos X; the alert goes to +221770000004, never to the Kenyan +254770000004."""
    from convo.devkit.fineract_sim_notify import extend_seed
    from convo.notify import messages as notify

    with gateway_and_sim(redis_url, pg_url) as (_gw, app, services):
        extend_seed(app.config["SIM_DATA"])["staff"][4]["mobileNo"] = "770000004"
        facts = dict(client_id=NDEYE, client_name="Ndeye Faye", office_id=8, loan_officer_id=4, loan_id=NDEYE_LOAN,
                     account_no=f"{NDEYE_LOAN:09d}", product="Crédit Commerce", amount_overdue=Decimal("10000"),
                     currency={"code": "XOF", "decimal_places": 0}, oldest_due_date=TODAY)
        sent = notify.alert(services, "loan_overdue", key=f"loan:{NDEYE_LOAN}:{TODAY}", days_overdue=8, **facts)
        assert [m.recipient for m in sent] == ["+221770000004"]
