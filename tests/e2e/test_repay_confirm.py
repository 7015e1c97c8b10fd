"""Repaying a loan from savings, as a caller and an attacker see it, over HTTP (USSD and SMS).

The PIN comes before any figure; one screen says exactly what will happen and only "1. Confirm"
moves money; amounts are ASCII digits under a cap per repayment; only plain savings accounts pay.
Money is checked where it lives: the simulator's savings balance after the worker's TransferRunner.
"""
from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import example, given
from hypothesis import strategies as st

from convo.flowlang.validators import validate
from convo.jobs.transfers import TransferRequest, TransferRunner
from convo.mifos.client import MifosClient
from convo.store.db import OutboxMessage
from tests.support.e2e import Handset, Phone, give_pin, running_sms_stack

GRACE = "+254700000101"      # savings 42 (7,637.50 available), loan 29 (Biashara Flat 6M) in arrears
KEVIN = "+254700000115"      # savings Voluntary Savings (430.00), a fixed deposit 90, loan Biashara Flat 6M
PIN = "5820"
KEVIN_PIN = "7391"
CONFIRM_500 = "Pay KES 500.00 to Biashara Flat 6M *0029 from Voluntary Savings *0042?\n1. Confirm\n2. Cancel"


@pytest.fixture
def stack(redis_url, pg_url):
    with running_sms_stack(redis_url, pg_url) as (gw, fake, services):
        give_pin(services, GRACE, PIN)
        give_pin(services, KEVIN, KEVIN_PIN)
        yield gw, fake, services


def menu_number(screen: str, label: str) -> str:
    return next(line.split(".")[0].removeprefix("CON ") for line in screen.split("\n") if label in line)


def sim(services) -> MifosClient:
    s = services.settings
    return MifosClient(s.fineract_url, s.fineract_user, s.fineract_password, s.fineract_tenant)


def requests_made(services) -> list:
    with services.db.connect() as c:
        return c.execute(sa.select(TransferRequest.__table__)).all()


def last_text(services) -> str:
    with sa.orm.Session(services.db) as s:
        return s.scalars(sa.select(OutboxMessage.body).order_by(OutboxMessage.id.desc())).first()


def to_amount_screen(gw, number=GRACE, pin=PIN) -> tuple[Phone, str]:
    phone = Phone(gw, number)
    menu = phone.dial()
    assert phone.answer(menu_number(menu, "Repay loan")) == "CON Enter your PIN:"
    return phone, phone.answer(pin)


# ---------------------------------------------------------------- the PIN first


def test_repay_asks_the_pin_before_any_figure(stack):
    gw, _, _ = stack
    phone = Phone(gw, GRACE)
    menu = phone.dial()
    assert "KES" not in menu
    assert phone.answer(menu_number(menu, "Repay loan")) == "CON Enter your PIN:"
    assert phone.answer("0000") == "CON Wrong PIN. 2 tries left. Enter your PIN:"
    amount = phone.answer(PIN)
    assert amount.startswith("CON Biashara Flat 6M: due KES ") and "Available in savings: KES 7,637.50" in amount


def test_a_locked_pin_shows_no_figures_on_either_channel(stack):
    gw, _, services = stack
    phone = Phone(gw, GRACE)
    menu = phone.dial()
    screens = [phone.answer(menu_number(menu, "Repay loan"))]
    screens += [phone.answer(wrong) for wrong in ("1111", "2222", "3333")]
    assert screens[-1].startswith("END Your PIN is blocked")
    again = Phone(gw, GRACE)
    screens.append(again.answer(menu_number(again.dial(), "Repay loan")))
    assert screens[-1].startswith("END Your PIN is blocked")
    Handset(gw, GRACE).text("REPAY")
    screens.append(last_text(services))
    assert screens[-1].startswith("Your PIN is blocked")
    Handset(gw, GRACE).text(PIN)                     # the right PIN, too late: still nothing shown
    screens.append(last_text(services))
    for screen in screens:
        assert "KES" not in screen and "Biashara" not in screen and "savings:" not in screen, screen
    assert requests_made(services) == []


# ---------------------------------------------------------------- the confirmation screen


def test_confirm_screen_says_exactly_what_will_happen_and_only_confirm_pays(stack):
    gw, _, services = stack
    mifos = sim(services)
    before = mifos.savings_balance(42).available_balance
    phone, _ = to_amount_screen(gw)
    assert phone.answer("500") == "CON " + CONFIRM_500
    assert requests_made(services) == []                                # nothing recorded before "1"
    assert phone.answer("3") == "CON Invalid choice. Please try again.\n" + CONFIRM_500
    assert phone.answer("1") == ("END Your payment of KES 500.00 to Biashara Flat 6M is being made. "
                                 "You will receive an SMS.")
    assert phone.repeat().startswith("END Your payment")                # AT retried the callback
    assert len(requests_made(services)) == 1
    assert TransferRunner(services).run_once() == 1
    assert mifos.savings_balance(42).available_balance == before - 500


def test_a_shortcut_dial_with_the_confirmation_in_it_still_shows_the_screen(stack):
    """*384*12*7*<PIN>*500*1#: Africa's Talking sends "7*<PIN>*500*1" in the first callback. The "1"
    answers a screen the client has not seen yet, so it is shown; only the next "1" pays."""
    gw, _, services = stack
    repay = menu_number(Phone(gw, GRACE).dial(), "Repay loan")
    phone = Phone(gw, GRACE)
    phone.session_id, phone.inputs = "ATUid_shortcut_1", [repay, PIN, "500", "1"]
    assert phone.repeat() == "CON " + CONFIRM_500                        # the first callback of the session
    assert requests_made(services) == []
    assert phone.answer("1").startswith("END Your payment of KES 500.00")
    assert len(requests_made(services)) == 1
    assert phone.answer("1").startswith("END Your payment of KES 500.00")   # after the end: the same answer
    assert len(requests_made(services)) == 1


def test_cancel_moves_nothing_and_says_so(stack):
    gw, _, services = stack
    mifos = sim(services)
    before = mifos.savings_balance(42).available_balance
    phone, _ = to_amount_screen(gw)
    assert phone.answer("500") == "CON " + CONFIRM_500
    assert phone.answer("2") == "END Payment cancelled. No money was moved."
    assert requests_made(services) == [] and TransferRunner(services).run_once() == 0
    assert mifos.savings_balance(42).available_balance == before


def test_sms_repay_then_a_pin_looking_number_cannot_pay_without_the_explicit_confirm(stack):
    """Before: REPAY, then `2468` meant as a PIN, paid KES 2,468. Now the PIN is asked first, a number at
    the amount step only leads to the confirmation screen, and any answer there but 1 moves nothing."""
    gw, _, services = stack
    mifos = sim(services)
    before = mifos.savings_balance(42).available_balance
    grace = Handset(gw, GRACE)
    grace.text("REPAY")
    assert last_text(services) == "To pay from your savings, reply with your PIN."
    grace.text(PIN)
    assert last_text(services).startswith("Biashara Flat 6M: due KES ")
    grace.text("2468")                                                  # meant as a PIN, read as an amount
    confirm = "Pay KES 2,468.00 to Biashara Flat 6M *0029 from Voluntary Savings *0042?\n1. Confirm\n2. Cancel"
    assert last_text(services) == confirm + "\nReply with the number of your choice."
    for answer in ("2468", PIN, "yes", "OK", "12", "0", "3", "1.", "1,000", "+1"):
        grace.text(answer)
        assert last_text(services).startswith("Invalid choice. Please try again.\n" + confirm), answer
        assert requests_made(services) == [], answer
    Handset(gw, KEVIN).text("1")                        # another phone's "1" answers Kevin's dialogs, not Grace's
    assert requests_made(services) == []
    assert TransferRunner(services).run_once() == 0
    assert mifos.savings_balance(42).available_balance == before
    grace.text("1")
    assert last_text(services).startswith("Your payment of KES 2,468.00 to Biashara Flat 6M is being made.")
    assert TransferRunner(services).run_once() == 1
    assert mifos.savings_balance(42).available_balance == before - 2468


@pytest.mark.parametrize("answer", ["١", "¹", "１"])
def test_a_digit_one_from_another_script_does_not_confirm(stack, answer):
    gw, _, services = stack
    grace = Handset(gw, GRACE)
    for text in ("REPAY", PIN, "300", answer):
        grace.text(text)
    assert last_text(services).startswith("Invalid choice. Please try again.\nPay KES 300.00")
    assert requests_made(services) == []


def test_sms_cancel_moves_nothing(stack):
    gw, _, services = stack
    mifos = sim(services)
    before = mifos.savings_balance(42).available_balance
    grace = Handset(gw, GRACE)
    for text in ("REPAY", PIN, "700", "4321", "2"):
        grace.text(text)
    assert last_text(services).startswith("Payment cancelled. No money was moved.\nPlease delete the SMS with your PIN")
    grace.text("1")                                         # the dialog is over: "1" confirms nothing now
    assert requests_made(services) == [] and TransferRunner(services).run_once() == 0
    assert mifos.savings_balance(42).available_balance == before


def test_two_confirmed_repayments_of_the_same_amount_are_two_requests(stack):
    """The idempotency key is the confirmation screen's, not the SMS thread's: the same amount on the
    same loan an hour later is a new repayment, while a retried confirmation is not."""
    gw, _, services = stack
    grace = Handset(gw, GRACE)
    for _ in range(2):
        for text in ("REPAY", PIN, "100", "1"):
            grace.text(text)
        assert last_text(services).startswith("Your payment of KES 100.00")
    assert len(requests_made(services)) == 2


# ---------------------------------------------------------------- amounts


@pytest.mark.parametrize("typed", ["٣٠٠", "１００", "३००", "3٠0", "1e3", "-500", "500.555", "1.000", "½"])
def test_amounts_in_other_digits_or_forms_never_reach_the_confirmation(stack, typed):
    gw, _, services = stack
    phone, _ = to_amount_screen(gw)
    screen = phone.answer(typed)
    assert screen.startswith("CON Enter an amount in numbers, e.g. 1500."), screen
    assert "Pay KES" not in screen
    grace = Handset(gw, GRACE)
    for text in ("REPAY", PIN, typed):
        grace.text(text)
    assert last_text(services).startswith("Enter an amount in numbers, e.g. 1500.")
    assert requests_made(services) == []


AMOUNT = {"type": "amount"}
cents = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("999999999999.99"), places=2)
foreign_digit = st.characters(categories=["Nd"]).filter(lambda c: not c.isascii())


@given(cents, st.sampled_from(["{:f}", "{:,.2f}", "{:,f}", "comma"]))
@example(Decimal("1000.5"), "comma")
def test_every_amount_written_the_usual_ways_reads_back_exactly(amount, style):
    typed = f"{amount:f}".replace(".", ",") if style == "comma" else style.format(amount)
    ok, value = validate(AMOUNT, typed)
    assert ok and Decimal(value) == amount, typed


@given(st.integers(min_value=1, max_value=10**12 - 1), st.booleans())
def test_whole_amounts_with_or_without_thousands_commas(n, grouped):
    assert validate(AMOUNT, f"{n:,}" if grouped else str(n)) == (True, str(n))


@given(cents, foreign_digit, st.data())
@example(Decimal(300), "٣", None)
def test_a_digit_from_any_other_script_is_never_an_amount(amount, digit, data):
    """٣٠٠ (Arabic-Indic), １００ (fullwidth), ३०० (Devanagari)...: str.isdigit, int() and Decimal() read
    them all as numbers; the amount validator reads none of them, not even one among ASCII digits."""
    typed = f"{amount:f}"
    places = [i for i, c in enumerate(typed) if c.isdigit()]
    i = places[0] if data is None else data.draw(st.sampled_from(places))
    assert validate(AMOUNT, typed[:i] + digit + typed[i + 1:]) == (False, None)
    assert validate(AMOUNT, digit * 3) == (False, None)


@given(st.text(max_size=20), st.one_of(st.none(), cents))
@example("٣٠٠", None)
@example("１００", None)
@example("1e3", None)
@example("NaN", None)
@example("1_000", None)
def test_whatever_is_accepted_is_a_positive_plain_ascii_amount_within_bounds(typed, cap):
    spec = AMOUNT if cap is None else {**AMOUNT, "max": str(cap)}
    ok, value = validate(spec, typed)
    if not ok:
        assert value is None
        return
    assert set(typed) <= set("0123456789,. \t\r\n"), typed
    assert value.isascii() and value.replace(".", "", 1).isdigit() and len(value.partition(".")[2]) <= 2
    assert Decimal(value) > 0 and (cap is None or Decimal(value) <= cap)


def test_an_amount_over_the_cap_gets_its_own_message(redis_url, pg_url):
    with running_sms_stack(redis_url, pg_url, repay_max_amount="KES:1000,*:5") as (gw, _, services):
        give_pin(services, GRACE, PIN)
        phone, _ = to_amount_screen(gw)
        assert phone.answer("1,000.50") == "CON You can pay at most KES 1,000.00 at a time. Enter a smaller amount:"
        assert phone.answer("1000") == ("CON Pay KES 1,000.00 to Biashara Flat 6M *0029 from Voluntary Savings "
                                        "*0042?\n1. Confirm\n2. Cancel")
    assert services.settings.repay_cap("KES") == Decimal("1000") and services.settings.repay_cap("NGN") == 5


def test_the_cap_setting_is_checked_at_start():
    from convo.config import Settings

    assert Settings.from_env({}).repay_cap("KES") == Decimal("100000")
    assert Settings.from_env({"CONVO_REPAY_MAX_AMOUNT": ""}).repay_cap("KES") is None
    for bad in ("KES=1000", "KES:-5", "KES:lots", "SHILLINGS:5", "KES:١٠٠"):
        with pytest.raises(ValueError, match="CONVO_REPAY_MAX_AMOUNT"):
            Settings.from_env({"CONVO_REPAY_MAX_AMOUNT": bad})


def test_more_decimals_than_the_currency_has_are_refused(stack):
    """XOF has no minor unit (Fineract currency decimalPlaces 0): 500.50 XOF is not an amount."""
    gw, _, services = stack
    mamadou = "+221771000126"
    give_pin(services, mamadou, "4821")
    phone = Phone(gw, mamadou)
    menu = phone.dial()
    assert phone.answer(menu_number(menu, "Rembourser")) == "CON Entrez votre code PIN :"
    assert "Disponible en épargne" in phone.answer("4821")
    assert phone.answer("500.50").startswith("CON Saisissez un montant en chiffres")
    assert phone.answer("500").startswith("CON Payer 500 XOF sur Crédit Commerce *")
    assert requests_made(services) == []


# ---------------------------------------------------------------- sources: savings only


def test_fineract_lists_term_deposits_among_the_savings_of_the_accounts_overview(stack):
    """Contract (apache/fineract @ 4198b0bc):

    * ``fineract-core/.../portfolio/savings/DepositAccountType.java``: SAVINGS_DEPOSIT(100),
      FIXED_DEPOSIT(200), RECURRING_DEPOSIT(300), CURRENT_DEPOSIT(400);
    * ``fineract-provider/.../accountdetails/service/AccountDetailsReadPlatformServiceJpaRepositoryImpl.java``
      ``retrieveClientAccountDetails``: savings rows are selected ``where sa.client_id = ?`` with no deposit
      type filter, and each carries ``sa.deposit_type_enum as depositType`` (line 351), written by
      ``SavingsEnumerations.depositType`` as ``{"id": 200, "code": "depositAccountType.fixedDeposit",
      "value": "Fixed Deposit"}``;
    * ``fineract-provider/.../savings/domain/SavingsAccountDomainServiceJpa.java`` ``handleWithdrawal``
      (line 94): a regular withdrawal (an account transfer is one) from an account whose
      ``allowWithdrawal()`` is false (``FixedDepositAccount`` always; ``RecurringDepositAccount`` unless its
      product allows it) throws ``DepositAccountTransactionNotAllowedException``
      (``error.msg.fixeddepositaccount.account.trasaction.withdraw.notallowed``), which
      ``PlatformServiceUnavailableExceptionMapper`` answers with HTTP 503 (not 403 as the issue says).
    """
    from convo.actions.repay import SAVINGS_DEPOSIT

    assert SAVINGS_DEPOSIT == 100
    body = sim(stack[2]).get("/clients/15/accounts")
    types = {a["id"]: a["depositType"] for a in body["savingsAccounts"]}
    assert types[90] == {"id": 200, "code": "depositAccountType.fixedDeposit", "value": "Fixed Deposit"}
    assert any(t["id"] == 100 for t in types.values())
    assert any(l["status"]["active"] for l in body["loanAccounts"])   # Kevin has a loan to repay


def test_a_fixed_deposit_is_never_offered_to_pay_a_loan(stack):
    gw, _, services = stack
    body = sim(services).get("/clients/15/accounts")
    savings = next(a for a in body["savingsAccounts"] if a["depositType"]["id"] == 100)
    loan = next(a for a in body["loanAccounts"] if a["status"]["active"])
    phone, amount = to_amount_screen(gw, KEVIN, KEVIN_PIN)
    assert "Pay from which" not in amount and "Fixed Deposit" not in amount
    assert "Available in savings: KES 430.00" in amount, amount
    assert phone.answer("100") == (f"CON Pay KES 100.00 to Biashara Flat 6M *{loan['accountNo'][-4:]} from "
                                   f"Voluntary Savings *{savings['accountNo'][-4:]}?\n1. Confirm\n2. Cancel")
    assert phone.answer("1").startswith("END Your payment of KES 100.00")
    TransferRunner(services).run_once()
    assert [r.savings_id for r in requests_made(services)] == [savings["id"]]


@pytest.mark.parametrize("deposit_type", [
    {"id": 200, "code": "depositAccountType.fixedDeposit", "value": "Fixed Deposit"},
    {"id": 300, "code": "depositAccountType.recurringDeposit", "value": "Recurring Deposit"},
    {"id": 400, "code": "depositAccountType.currentDeposit", "value": "Current Deposit"},
    None,                                              # no depositType at all: not known to be savings
])
def test_only_savings_deposits_are_sources(deposit_type):
    """GET /clients/1/accounts as in the shared samples (client_accounts.json), with a second active KES
    account of another deposit type beside savings 42: only 42 pays the loan."""
    import copy
    import json
    from types import SimpleNamespace

    import responses

    from convo.actions import Context
    from convo.actions.repay import repay_sources
    from tests.support.samples import SAMPLES

    body = json.loads((SAMPLES / "client_accounts.json").read_text())
    other = copy.deepcopy(next(a for a in body["savingsAccounts"] if a["id"] == 42))
    other.update(id=77, accountNo="000000077", productName="Term Saver")
    if deposit_type is None:
        other.pop("depositType")
    else:
        other["depositType"] = deposit_type
    body["savingsAccounts"].insert(0, other)
    base = "http://fineract.test/fineract-provider/api/v1"
    mifos = MifosClient(base, "mifos", "password", "default")
    loan = {"id": 29, "kind": "loan", "account_no": "000000029", "product": "Biashara Flat 6M",
            "currency": {"code": "KES", "decimal_places": 2, "in_multiples_of": 0}}
    ctx = Context(vars={"client": {"id": 1}, "account": loan}, phone=GRACE, channel="ussd",
                  services=SimpleNamespace(mifos=mifos))
    with responses.RequestsMock() as mocked:
        mocked.get(f"{base}/clients/1/accounts", json=body)
        assert repay_sources(ctx) == "one"
    assert ctx.vars["source"]["id"] == 42 and [a["id"] for a in ctx.vars["sources"]] == [42]


@pytest.mark.parametrize("sub_status", ["block", "blockDebit"])
def test_a_savings_account_with_debits_blocked_is_not_offered(sub_status):
    """``SavingsAccountDomainServiceJpa.handleWithdrawal`` first calls ``validateForAccountBlock`` and
    ``validateForDebitBlock`` (fineract-savings/.../savings/domain/SavingsAccount.java): a blocked
    account, or one with debits blocked, is refused. The overview carries ``subStatus`` with both flags."""
    import json
    from types import SimpleNamespace

    import responses

    from convo.actions import Context
    from convo.actions.repay import repay_sources
    from tests.support.samples import SAMPLES

    body = json.loads((SAMPLES / "client_accounts.json").read_text())
    row = next(a for a in body["savingsAccounts"] if a["id"] == 42)
    row["subStatus"] = {**(row.get("subStatus") or {}), sub_status: True}
    base = "http://fineract.test/fineract-provider/api/v1"
    loan = {"id": 29, "kind": "loan", "account_no": "000000029", "product": "Biashara Flat 6M",
            "currency": {"code": "KES", "decimal_places": 2, "in_multiples_of": 0}}
    ctx = Context(vars={"client": {"id": 1}, "account": loan}, phone=GRACE, channel="ussd",
                  services=SimpleNamespace(mifos=MifosClient(base, "mifos", "password", "default")))
    with responses.RequestsMock() as mocked:
        mocked.get(f"{base}/clients/1/accounts", json=body)
        assert repay_sources(ctx) == "none"
