"""What a client reads (issue 16), where it is not a dialog of flows/tests/client_texts.yaml: the words for
today and tomorrow, arrears measured on the 160-character screen for every seed client in every language,
PIN prompts and advice over SMS (PostgreSQL), reminders naming the keyword of their language, the CLI."""
from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from convo import cli
from convo.cli import phone_screen, sim_settings
from convo.devkit.convtest import UssdPhone, flask_poster, prepare_app
from convo.devkit.devserver import BackgroundServer
from convo.devkit.fineract_sim import create_sim_app
from convo.notify import reminders
from convo.services import build_services
from convo.store.db import OutboxMessage, upgrade
from convo.store.subscribers import set_language
from convo.text.formats import format_day
from convo.text.paging import paginate_menu, paginate_text
from convo.web import create_app
from tests.support.e2e import Handset, give_pin, running_sms_stack

NAIROBI = ZoneInfo("Africa/Nairobi")
DANIEL = "+254700000112"          # Kilimo loan, three installments (73 days) late
PETER = "+254700000102"           # next installment in 3 days, nothing overdue
DAVID = "+254700000110"           # installment due today
GRACE = "+254700000101"
PIN = "2468"
#: every seed client with exactly one loan in arrears (Faith's two loans and the shared phone ask a choice)
IN_ARREARS = [GRACE, DANIEL, "+255710000119", "+255750000120", "+221771000127", "+2250701000131", "+254700000136"]


def nairobi_today() -> dt.date:
    return dt.datetime.now(NAIROBI).date()


# --------------------------------------------------------------------------- today, tomorrow


def test_a_due_date_reads_today_tomorrow_or_on_a_date_in_each_language():
    day = dt.date(2026, 11, 30)
    assert [format_day(day, day, lang) for lang in ("en", "sw", "fr")] == ["today", "leo", "aujourd'hui"]
    tomorrow = day + dt.timedelta(days=1)
    assert [format_day(tomorrow, day, lang) for lang in ("en", "sw", "fr")] == ["tomorrow", "kesho", "demain"]
    later = dt.date(2026, 12, 18)
    assert [format_day(later, day, lang) for lang in ("en", "sw", "fr")] == \
        ["on 18 Dec 2026", "tarehe 18 Des 2026", "le 18 déc. 2026"]
    assert format_day("2026-11-29", "2026-11-30", "sw") == "tarehe 29 Nov 2026"     # yesterday is a date


@pytest.fixture
def gateway_at(tmp_path):
    """A gateway in front of a simulator whose business date is ``today``: gateway_at(today) -> dial(phone, lang)."""
    started = []

    def start(today: dt.date | None = None):
        sim = BackgroundServer(create_sim_app(today=today)).start()
        started.append(sim)
        db = tmp_path / f"gateway{len(started)}.db"
        app = create_app(sim_settings(sim.url, redis_url="memory://", database_url=f"sqlite:///{db}",
                                      flows_reload_seconds=0))
        setup = prepare_app(app)
        post = flask_poster(app.test_client())

        def phone(number: str, lang: str = "") -> UssdPhone:
            setup({"phone": number, "pin": PIN, "language": lang})
            return UssdPhone(post, number, "/gateways/africastalking/ussd")
        return phone

    yield start
    for s in started:
        s.stop()


def amount_due(phone: UssdPhone) -> str:
    phone.dial("*384*12#")
    phone.send("2")
    status, body = phone.send(PIN)
    assert status == 200 and body.startswith("END "), body
    return body


def test_the_day_before_the_due_date_the_text_says_tomorrow(gateway_at):
    """The simulator's business date is one day ahead, so David's installment (due on its today) is due
    tomorrow for the gateway, whose today is the MFI's (Africa/Nairobi)."""
    dial = gateway_at(nairobi_today() + dt.timedelta(days=1))
    assert amount_due(dial(DAVID)).endswith("Amount due: KES 2,090.00 tomorrow")
    assert amount_due(dial(DAVID, "sw")).endswith("Kiasi cha kulipa: KES 2,090.00 kesho")
    assert amount_due(dial(DAVID, "fr")).endswith("Montant à payer : 2 090,00 KES demain")


# --------------------------------------------------------------------------- arrears on one screen


@pytest.mark.parametrize("lang", ["en", "sw", "fr"])
def test_arrears_fit_one_screen_overdue_first_then_next_then_total(gateway_at, lang):
    """Measured: every seed client in arrears, in every language, is one USSD screen (<= 160 with END)."""
    dial = gateway_at()
    words = {"en": ("Overdue, pay now:", "Next installment:", "Total due:"),
             "sw": ("Malimbikizo, lipa sasa:", "Rejesho lijalo:", "Jumla:"),
             "fr": ("Impayés à régler :", "Prochaine échéance :", "Total :")}[lang]
    longest = 0
    for number in IN_ARREARS:
        body = amount_due(dial(number, lang))
        longest = max(longest, len(body))
        assert len(body) <= 160 and "98." not in body, (number, len(body), body)
        lines = body[4:].split("\n")
        assert lines[1].startswith(words[0]), body                 # what is overdue, first and alone
        assert lines[-1].startswith(words[2]), body                 # the total last
        if len(lines) == 4:
            assert lines[2].startswith(words[1]), body
    assert longest > 100                                            # the figures were really there


def test_daniel_is_overdue_since_his_oldest_unpaid_installment_73_days_ago(gateway_at):
    body = amount_due(gateway_at()(DANIEL))
    since = re.search(r"\(since (\d+ \w+ \d{4})\)", body).group(1)
    days = (nairobi_today() - dt.datetime.strptime(since, "%d %b %Y").date()).days
    assert 70 <= days <= 75, (since, body)                          # three monthly installments back
    assert "KES 11,799.99" in body and "KES 15,733.32" in body


# --------------------------------------------------------------------------- errors keep the question


def test_an_error_keeps_the_first_options_and_the_question_on_the_first_screen():
    options = [f"{i}. Option {i}" for i in range(1, 8)]
    title = "Welcome Christabel Wanjiku. Please choose one of these:"
    assert len(paginate_menu(title, options)) == 1                  # fits without the error line
    (page,) = paginate_menu(title, options, error="Invalid choice. Please try again.")
    assert page == "Invalid choice. Please try again.\n" + "\n".join(options)     # the title gave way
    short = paginate_menu("Choose:", options, error="Invalid choice. Please try again.")
    assert short == ["Invalid choice. Please try again.\nChoose:\n" + "\n".join(options)]
    ask = "Biashara Women Savings Plus: due KES 1,234,567.89.\nAvailable in savings: KES 1,234,567.89.\n" \
          "Enter the amount to pay:"
    error = "Enter an amount in numbers, e.g. 1500. Amounts are in Kenyan shillings."
    (page,) = paginate_text(ask, error=error)
    assert page.startswith(error) and page.endswith("\nEnter the amount to pay:") and len(page) <= 156
    assert paginate_text("Short question:", error="No.") == ["No.\nShort question:"]


def test_a_heading_on_every_page_of_a_long_text():
    rows = "\n".join(f"{d:02d}/11/2026 Deposit +KES 1{d},000.00" for d in range(1, 9))
    pages = paginate_text("Akiba *0901\n" + rows, heading=True)
    assert [p.split("\n")[0] for p in pages] == [f"Akiba *0901 ({i}/{len(pages)})" for i in range(1, len(pages) + 1)]
    assert len(pages) > 1 and all(len(p) <= 156 for p in pages)
    body = [line for p in pages for line in p.split("\n")[1:] if not line.startswith(("98.", "0."))]
    assert body == rows.split("\n")                                 # no row lost or repeated
    assert paginate_text("One line that is long " * 10, heading=True)[0].startswith("One line")   # no heading


# --------------------------------------------------------------------------- SMS: PIN prompts say why


def replies(services, phone: str) -> list[str]:
    with sa.orm.Session(services.db) as s:
        return [m.body for m in s.scalars(sa.select(OutboxMessage).where(OutboxMessage.recipient == phone)
                                          .order_by(OutboxMessage.id))]


@pytest.fixture
def sms(redis_url, pg_url):
    with running_sms_stack(redis_url, pg_url, sms_session_timeout=30) as s:
        give_pin(s[2], GRACE, PIN)
        yield s


PROMPTS = [("BAL", "To see your balance, reply with your PIN.", "Balance: KES 8,637.50",
            "Please delete the SMS with your PIN: it stays in your phone's Sent folder."),
           ("DENI", "Ili kuona deni lako, jibu kwa PIN yako.", "Jumla: KES 3,240.00",
            "Tafadhali futa SMS yenye PIN yako: inabaki kwenye ujumbe uliotumwa wa simu yako."),
           ("SOLDE", "Pour voir votre solde, répondez avec votre code PIN.", "Solde : 8 637,50 KES",
            "Effacez le SMS contenant votre code PIN : il reste dans les messages envoyés du téléphone.")]


@pytest.mark.parametrize("word,prompt,answer,advice", PROMPTS, ids=["en", "sw", "fr"])
def test_an_sms_pin_prompt_says_why_and_the_reply_advises_deleting_the_pin(sms, word, prompt, answer, advice):
    gw, _, services = sms
    grace = Handset(gw, GRACE)
    grace.text(word)
    grace.text(PIN)
    asked, got = replies(services, GRACE)
    assert asked == prompt
    assert answer in got and got.endswith("\n" + advice)


def test_the_advice_comes_once_with_the_last_answer_of_a_dialog_that_had_a_pin(sms):
    gw, _, services = sms
    grace = Handset(gw, GRACE)
    grace.text("MINI")
    assert replies(services, GRACE)[-1] == "To see your last transactions, reply with your PIN."
    grace.text("1357")
    assert replies(services, GRACE)[-1] == "Wrong PIN. 2 tries left. Enter your PIN:"     # the dialog goes on
    grace.text(PIN)
    assert replies(services, GRACE)[-1].startswith("Choose an account:") and "delete" not in replies(services, GRACE)[-1]
    grace.text("1")
    statement = replies(services, GRACE)[-1]
    assert statement.startswith("Voluntary Savings *0042") and "Balance: KES 8,637.50" in statement
    assert statement.endswith("\nPlease delete the SMS with your PIN: it stays in your phone's Sent folder.")
    grace.text("HELP")                                            # a dialog without a PIN: no advice
    assert "delete" not in replies(services, GRACE)[-1]


def test_over_ussd_the_pin_prompt_and_the_answer_are_unchanged(gateway_at):
    phone = gateway_at()(GRACE)
    phone.dial("*384*12#")
    assert phone.send("1") == (200, "CON Enter your PIN:")
    assert "delete" not in phone.send(PIN)[1]


# --------------------------------------------------------------------------- reminders: the keyword of their language


@pytest.fixture
def services_at(tmp_path):
    sim = BackgroundServer(create_sim_app()).start()
    url = f"sqlite:///{tmp_path / 'remind.db'}"
    upgrade(url)
    settings = sim_settings(sim.url, redis_url="memory://", database_url=url, flows_reload_seconds=0)
    yield build_services(settings), settings
    sim.stop()


def test_reminders_name_the_keyword_of_their_language_from_channels_yaml(services_at):
    """Peter (a Kenyan office: English), Baraka Elia (a Tanzanian office: Swahili) and Mamadou (Dakar: French)
    are due in 3 days; a subscriber who chose a language gets that one (Peter switches to French)."""
    services, _ = services_at
    rep = reminders.run(services, dry_run=True, meetings=False)
    soon = {o.phone: o for o in rep.texts if o.reminder.rule == "due3"}
    assert "Text DUE for details." in soon[PETER].text
    assert "Tuma DENI kwa maelezo." in soon["+255750000118"].text and soon["+255750000118"].lang == "sw"
    assert "Envoyez DU pour le détail." in soon["+221771000126"].text
    set_language(services.db, PETER, "fr")
    again = {o.phone: o for o in reminders.run(services, dry_run=True, meetings=False).texts
             if o.reminder.rule == "due3"}
    assert "Envoyez DU pour le détail." in again[PETER].text
    assert reminders.keyword_for(services.flows.current.keywords, "due", "xx") == "DUE"


def test_reminder_texts_take_the_keyword_from_the_channels_file(tmp_path, services_at):
    """An MFI that renames the Swahili keyword gets it in the reminders without touching a text."""
    import shutil

    from convo.flowlang.compiler import load_flowset

    flows = tmp_path / "flows"
    shutil.copytree(cli.Path(services_at[1].flows_dir), flows)
    channels = flows / "channels.yaml"
    channels.write_text(channels.read_text().replace("sw: [DENI]", "sw: [MADENI]"))
    assert reminders.keyword_for(load_flowset(flows).keywords, "due", "sw") == "MADENI"


def test_remind_dry_run_shows_each_text_it_would_send(services_at, monkeypatch):
    _, settings = services_at
    monkeypatch.setattr(cli, "_settings", lambda **_: settings)
    out = CliRunner().invoke(cli.main, ["remind", "--dry-run", "--no-meetings"])
    assert out.exit_code == 0, out.output
    assert "(sw) Mpendwa Baraka, rejesho la mkopo" in out.output and "Tuma DENI kwa maelezo." in out.output
    assert "(en) Dear Peter, your loan" in out.output
    assert "dry run, nothing written" in out.output


# --------------------------------------------------------------------------- the terminal phone


def test_the_terminal_phone_wraps_text_inside_its_frame():
    screen = phone_screen("Kilimo Loan *0207\nOverdue, pay now: KES 11,799.99 (since 18 Sep 2026)\n"
                          "Total due: KES 15,733.32")
    lines = screen.split("\n")
    assert {len(line) for line in lines} == {32}
    assert lines[0] == lines[-1] == "+" + "-" * 30 + "+"
    assert all(line.startswith("|") and line.endswith("|") for line in lines[1:-1])
    assert " ".join(line[1:-1].strip() for line in lines[1:-1]) == \
        "Kilimo Loan *0207 Overdue, pay now: KES 11,799.99 (since 18 Sep 2026) Total due: KES 15,733.32"
