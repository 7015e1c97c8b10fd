"""Mifos X in depth, end to end over HTTP: mini-statement, meetings, repay a loan from savings.

The repayment runs after the USSD session (TransferRunner, as in `convo worker`) against the
simulator's POST /accounttransfers, which honours Idempotency-Key like Fineract 1.9+.
"""
from __future__ import annotations

from decimal import Decimal

import pytest
import requests
import sqlalchemy as sa

from convo.jobs.transfers import TransferRequest, TransferRunner
from convo.jobs.worker import run_worker
from convo.mifos.client import MifosClient
from convo.store.db import OutboxMessage
from convo.text.sms import sms_info
from tests.support.e2e import Handset, Phone, give_pin, running_sms_stack

GRACE = "+254700000101"          # savings 42 (7,637.50 available), loan 29 in arrears, Umoja Women Group
SAMUEL = "+254700000106"         # in no group
PIN = "5820"


@pytest.fixture
def stack(redis_url, pg_url):
    with running_sms_stack(redis_url, pg_url) as (gw, fake, services):
        give_pin(services, GRACE, PIN)
        yield gw, fake, services


def menu_number(screen: str, label: str) -> str:
    return next(line.split(".")[0] for line in screen.split("\n") if label in line)


def sim_client(services) -> MifosClient:
    s = services.settings
    return MifosClient(s.fineract_url, s.fineract_user, s.fineract_password, s.fineract_tenant)


def texts(services) -> list[str]:
    with sa.orm.Session(services.db) as s:
        return [m.body for m in s.scalars(sa.select(OutboxMessage).order_by(OutboxMessage.id))]


def test_mini_statement_needs_the_pin_and_pages_over_ussd(stack):
    gw, _, _ = stack
    phone = Phone(gw, GRACE)
    menu = phone.dial()
    assert phone.answer(menu_number(menu, "Mini-statement")) == "CON Enter your PIN:"
    accounts = phone.answer(PIN)
    assert accounts.startswith("CON Choose an account:")
    screen = phone.answer(menu_number(accounts, "Voluntary Savings"))
    assert screen.startswith("CON Voluntary Savings *0042 (1/") and len(screen) <= 160   # a heading on every page
    lines = screen.split("\n")[1:]
    while screen.endswith("98. More"):
        screen = phone.answer("98")
        assert screen.startswith("CON Voluntary Savings *0042 (") and len(screen) <= 160
        lines += screen[4:].split("\n")[1:]
    assert screen.endswith("\n0. Back") and "Balance: KES 8,637.50" in lines   # the balance after the rows
    rows = [l for l in lines if l[:2].isdigit() and l[2] == "/"]
    assert len(rows) == 5 and all(("+KES" in r) != ("-KES" in r) for r in rows)


def test_mini_statement_by_sms_fits_two_segments(stack):
    gw, _, services = stack
    grace = Handset(gw, GRACE)
    grace.text("MINI")
    grace.text(PIN)
    grace.text("1")
    statement = texts(services)[-1]
    assert statement.startswith("Voluntary Savings *0042\n") and statement.count("\n") == 7   # 5 rows, balance, advice
    assert "\nBalance: KES 8,637.50\nPlease delete the SMS with your PIN" in statement
    assert sms_info(statement).segments <= 2


def test_next_meeting_by_ussd_and_sms(stack):
    gw, _, services = stack
    phone = Phone(gw, GRACE)
    menu = phone.dial()
    screen = phone.answer(menu_number(menu, "Next meeting"))
    assert screen.startswith("END Next meeting of Umoja Women Group: ") and "Kariobangi Social Hall" in screen
    Handset(gw, SAMUEL).text("meet")
    assert texts(services)[-1] == "You are not in a group with meetings."


def test_repay_from_savings_moves_money_once_and_texts_a_receipt(stack):
    gw, fake, services = stack
    mifos = sim_client(services)
    before_savings = mifos.savings_balance(42).available_balance
    before_loan = mifos.loan_due(29, __import__("datetime").date.today()).outstanding

    phone = Phone(gw, GRACE)
    menu = phone.dial()
    assert phone.answer(menu_number(menu, "Repay loan")) == "CON Enter your PIN:"     # before any figure
    ask = phone.answer(PIN)
    assert ask.startswith("CON Biashara") and "Available in savings: KES 7,637.50" in ask
    assert phone.answer("999999").startswith("CON You have only KES 7,637.50 available")
    assert phone.answer("1000") == ("CON Pay KES 1,000.00 to Biashara Flat 6M *0029 from Voluntary Savings *0042?"
                                    "\n1. Confirm\n2. Cancel")
    done = phone.answer("1")
    assert done == "END Your payment of KES 1,000.00 to Biashara Flat 6M is being made. You will receive an SMS."
    assert phone.repeat() == done                                   # AT retried the last callback

    runner = TransferRunner(services)
    assert runner.run_once() == 1 and runner.run_once() == 0
    assert mifos.savings_balance(42).available_balance == before_savings - 1000
    assert mifos.loan_due(29, __import__("datetime").date.today()).outstanding == before_loan - 1000
    receipt = texts(services)[-1]
    assert receipt.startswith("Paid KES 1,000.00 to Biashara Flat 6M *0029 from your savings. Ref ")
    run_worker(services.settings, once=True, handle_signals=False, engine=services.db)
    assert receipt in [m["message"] for m in fake.fake.accepted()]


def test_after_a_repayment_the_next_balance_due_and_statement_show_the_new_figures(stack):
    """Balances, amounts due and statements are cached for a minute (CONVO_FIGURES_CACHE_TTL); a repayment drops
    every key it makes stale (convo.mifos.keys.stale_after_repayment), the amount due under the MFI's own day."""
    gw, _, services = stack

    def read(label: str, account: str | None = None) -> str:
        phone = Phone(gw, GRACE)
        screen = phone.answer(menu_number(phone.dial(), label))
        if screen == "CON Enter your PIN:":
            screen = phone.answer(PIN)
        if account and screen.startswith("CON Choose an account:"):
            screen = phone.answer(menu_number(screen, account))
        return screen

    balance, due, statement = read("Balance"), read("Amount due"), read("Mini-statement", "Voluntary Savings")
    assert "7,637.50" in balance and "1,000.00" not in statement
    phone = Phone(gw, GRACE)
    phone.answer(menu_number(phone.dial(), "Repay loan"))
    phone.answer(PIN)
    phone.answer("1000")
    assert phone.answer("1").startswith("END Your payment of KES 1,000.00")
    assert TransferRunner(services).run_once() == 1

    assert "6,637.50" in read("Balance")                                    # not the cached 7,637.50
    assert read("Amount due") != due
    assert "1,000.00" in read("Mini-statement", "Voluntary Savings")        # the transfer is the newest row


def test_a_duplicated_repay_request_moves_money_once(stack):
    gw, _, services = stack
    mifos = sim_client(services)
    before = mifos.savings_balance(42).available_balance
    from convo.jobs.transfers import request_transfer

    kw = dict(idempotency_key="repay:ussd:ATUid_dup:29:500", phone=GRACE, lang="en", client_id=1, office_id=1,
              savings_id=42, loan_id=29, amount=Decimal("500"), currency={"code": "KES", "decimal_places": 2},
              loan_label="Biashara Flat 6M *0029")
    assert request_transfer(services.db, **kw) == request_transfer(services.db, **kw)
    TransferRunner(services).run_once()
    # the row is retried as if the first answer had been lost: Fineract answers from its idempotency cache
    with services.db.begin() as c:
        c.execute(sa.update(TransferRequest.__table__).values(status="pending"))
    TransferRunner(services).run_once()
    assert mifos.savings_balance(42).available_balance == before - 500
    assert len([t for t in texts(services) if t.startswith("Paid KES 500.00")]) == 1


def test_a_locked_loan_does_not_stop_a_transfer_and_insufficient_funds_is_explained(stack):
    """The COB lock (LoanCOBFilterHelper.LOAN_PATH_PATTERN) guards ``/loans/...``, not ``/accounttransfers``."""
    gw, _, services = stack
    sim = services.settings.fineract_url.split("/fineract-provider")[0]
    from convo.jobs.transfers import request_transfer

    requests.post(f"{sim}/__sim/faults", json={"locked_loans": [29]}, timeout=5)
    base = dict(phone=GRACE, lang="sw", client_id=1, office_id=1, savings_id=42, loan_id=29,
                currency={"code": "KES", "decimal_places": 2}, loan_label="Biashara Flat 6M *0029")
    request_transfer(services.db, idempotency_key="repay:t:locked", amount=Decimal("100"), **base)
    TransferRunner(services, retry_base_seconds=0).run_once()
    with services.db.connect() as c:
        row = c.execute(sa.select(TransferRequest.__table__)).one()
    assert row.status == "done"
    requests.delete(f"{sim}/__sim/faults", timeout=5)
    request_transfer(services.db, idempotency_key="repay:t:toomuch", amount=Decimal("99999"), **base)
    TransferRunner(services).run_once()
    sent = texts(services)
    assert sent[0].startswith("Umelipa KES 100.00 kwa Biashara Flat 6M *0029")
    assert sent[1] == "Malipo yako ya KES 99,999.00 kwa Biashara Flat 6M *0029 hayakufanyika: akiba haitoshi."


def test_a_flow_turned_off_disappears_from_the_menu_and_answers_politely(tmp_path, redis_url):
    import shutil
    from pathlib import Path

    from tests.support.e2e import running_gateway

    flows = tmp_path / "flows"
    shutil.copytree(Path(__file__).resolve().parents[2] / "flows", flows)
    repay = flows / "repay.yaml"
    repay.write_text(repay.read_text().replace("enabled: true", "enabled: false"))
    with running_gateway(redis_url, flows_dir=str(flows)) as (gw, _, services):
        menu = Phone(gw, GRACE).dial()
        assert "Repay" not in menu
        Handset(gw, GRACE).text("REPAY")
        with services.db.connect() as c:
            body = c.execute(sa.select(OutboxMessage.body)).scalar()
        assert body == "This service is not available."
