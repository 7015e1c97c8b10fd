"""Notifications: reminder selection against the simulator's schedules (month ends, time zones),
idempotency of reminders, receipts and hooks, quiet hours, alert rules, lint of the notify texts."""
from __future__ import annotations

import datetime as dt
import shutil
import threading
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import requests
import sqlalchemy as sa

from convo.cli import sim_settings
from convo.devkit.devserver import BackgroundServer
from convo.devkit.fineract_sim import create_sim_app
from convo.flowlang.compiler import load_flowset
from convo.flowlang.spec import FlowValidationError
from convo.jobs.schedule import ReminderSchedule
from convo.jobs.worker import JobLoop, run_worker
from convo.mifos.client import parse_date, period_outstanding
from convo.notify import messages as notify
from convo.notify import reminders
from convo.notify.outbox import set_opt_out
from convo.services import build_services
from convo.store.db import OutboxMessage, upgrade
from tests.support.e2e import running_sms_stack

FLOWS = Path(__file__).resolve().parents[2] / "flows"
UTC = dt.timezone.utc
TOKEN = "hook-secret-1"


def outbox_rows(services, kind: str | None = None) -> list[OutboxMessage]:
    with sa.orm.Session(services.db) as s:
        q = sa.select(OutboxMessage).order_by(OutboxMessage.id)
        if kind:
            q = q.where(OutboxMessage.kind == kind)
        return list(s.scalars(q))


@pytest.fixture
def sim_at():
    """Start a simulator at a given business date: sim_at(date) -> (url, app)."""
    servers = []

    def start(today: dt.date):
        app = create_sim_app(today=today)
        srv = BackgroundServer(app).start()
        servers.append(srv)
        return srv.url, app

    yield start
    for s in servers:
        s.stop()


def make_services(sim_url: str, database_url: str, **overrides):
    upgrade(database_url)
    settings = sim_settings(sim_url, redis_url="memory://", database_url=database_url, flows_reload_seconds=0,
                            **overrides)
    return build_services(settings)


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'notify.db'}"


# --------------------------------------------------------------------------- reminder selection


def expected_reminders(data: dict, today_of) -> set[tuple[int, int, str]]:
    """Oracle straight from the simulator's data set: (loan, installment, rule)."""
    cfg = notify.load_config(FLOWS)
    out = set()
    for loan in data["loans"].values():
        if not (loan.get("status") or {}).get("active"):
            continue
        today = today_of(loan["clientOfficeId"])
        for p in loan["repaymentSchedule"]["periods"]:
            if p.get("period") is None or p.get("complete") or period_outstanding(p) <= 0:
                continue
            days = (parse_date(p["dueDate"]) - today).days
            if days >= 0 and days in cfg.due_in_days:
                out.add((loan["id"], p["period"], f"due{days}"))
            elif days < 0 and -days in cfg.overdue_days:
                out.add((loan["id"], p["period"], f"overdue{-days}"))
    return out


def found(rems) -> set[tuple[int, int, str]]:
    return {(int(r.key.split(":")[1]), int(r.key.split(":")[2]), r.rule) for r in rems if r.kind == "reminder"}


@pytest.mark.parametrize("business_date", [
    dt.date(2024, 1, 29), dt.date(2024, 1, 31), dt.date(2024, 2, 27), dt.date(2024, 2, 29),
    dt.date(2023, 2, 28), dt.date(2024, 4, 30), dt.date(2024, 12, 30), dt.date(2024, 12, 31)])
def test_reminders_match_the_schedules_around_month_ends(sim_at, sqlite_url, business_date):
    url, app = sim_at(business_date)
    svc = make_services(url, sqlite_url)
    rems = reminders.find_payment_reminders(svc, on=business_date)
    assert found(rems) == expected_reminders(app.config["SIM_DATA"], lambda _office: business_date)
    by_client: dict[int, set] = {}
    for r in rems:
        by_client.setdefault(r.client_id, set()).add(r.rule)
    # Peter's next installment is due in 3 days at any date; Grace's loan 29 is 5 days late (no rule
    # for 5); Daniel's is far behind (no rule). David's monthly due date is "today" - except at a
    # month end, where the schedule's day was clamped a month earlier (31 Dec: due 30 Dec, 1 day late).
    assert by_client[2] == {"due3"}
    if business_date.day <= 28:
        assert by_client[10] == {"due0"}
    assert 1 not in by_client and 12 not in by_client
    for r in rems:
        due = r.variables["due_date"]
        assert (due - business_date).days == (r.variables["days"] if r.rule.startswith("due") else -r.variables["days"])


def test_today_is_each_offices_own_date(sim_at, sqlite_url):
    """22:30 UTC on 31 January: already 1 February in Nairobi and Dar es Salaam (UTC+3), still 31 January
    in Dakar and Abidjan (UTC+0)."""
    sim_day = dt.date(2024, 1, 31)
    url, app = sim_at(sim_day)
    svc = make_services(url, sqlite_url)
    now = dt.datetime(2024, 1, 31, 22, 30, tzinfo=UTC)
    rems = reminders.find_payment_reminders(svc, now=now)
    local = {o: now.astimezone(ZoneInfo(tz)).date() for o, tz in
             {1: "Africa/Nairobi", 2: "Africa/Nairobi", 3: "Africa/Nairobi", 4: "Africa/Dar_es_Salaam",
              5: "Africa/Dar_es_Salaam", 6: "Africa/Dakar", 7: "Africa/Abidjan"}.items()}
    assert local[2] == dt.date(2024, 2, 1) and local[6] == dt.date(2024, 1, 31)
    assert found(rems) == expected_reminders(app.config["SIM_DATA"], lambda office: local[office])
    rules = {r.client_id: r.rule for r in rems}
    assert rules[10] == "overdue1"      # David (Nairobi): due 31 Jan, it is 1 Feb there
    assert rules[23] == "overdue1"      # Emmanuel (Arusha)
    assert rules[34] == "due0"          # Seydou (Abidjan): still 31 Jan
    assert rules[26] == "due3"          # Mamadou (Dakar): due 3 Feb
    assert 2 not in rules               # Peter (Nairobi): due 3 Feb is 2 days away there


# --------------------------------------------------------------------------- quiet hours


NAIROBI = ZoneInfo("Africa/Nairobi")


@pytest.mark.parametrize("local, wake", [
    ("2024-03-01 21:00", "2024-03-02 08:00"),
    ("2024-03-01 23:59", "2024-03-02 08:00"),
    ("2024-03-02 00:30", "2024-03-02 08:00"),
    ("2024-03-02 07:59", "2024-03-02 08:00"),
    ("2024-03-02 08:00", None),
    ("2024-03-02 12:00", None),
    ("2024-03-02 19:59", None),
    ("2024-02-29 20:00", "2024-03-01 08:00"),
])
def test_quiet_hours_wait_for_the_morning(local, wake):
    now = dt.datetime.fromisoformat(local).replace(tzinfo=NAIROBI).astimezone(UTC)
    got = notify.not_before(now, NAIROBI, dt.time(20), dt.time(8))
    want = None if wake is None else dt.datetime.fromisoformat(wake).replace(tzinfo=NAIROBI).astimezone(UTC)
    assert got == want


def test_quiet_window_inside_one_day_and_none():
    at = lambda h: dt.datetime(2024, 6, 1, h, tzinfo=NAIROBI).astimezone(UTC)  # noqa: E731
    assert notify.not_before(at(13), NAIROBI, dt.time(13), dt.time(14)) == dt.datetime(2024, 6, 1, 14, tzinfo=NAIROBI)
    assert notify.not_before(at(15), NAIROBI, dt.time(13), dt.time(14)) is None
    assert notify.not_before(at(3), NAIROBI, dt.time(0), dt.time(0)) is None


# --------------------------------------------------------------------------- idempotency, opt-out, quiet (PostgreSQL)


@pytest.mark.postgres
def test_reminders_go_once_however_often_and_wherever_they_run(sim_at, pg_url):
    day = dt.date(2024, 5, 31)
    url, _ = sim_at(day)
    svc = make_services(url, pg_url)
    night = dt.datetime(2024, 5, 31, 19, 0, tzinfo=UTC)     # 22:00 in Nairobi: quiet hours
    set_opt_out(svc.db, "+254700000110", True)               # David said STOP
    first = reminders.run(svc, on=day, now=night, meetings=False)
    n = len(first.reminders)
    assert n >= 4 and first.written == n and first.duplicates == 0
    # two more runs at once, "on two machines"
    other = make_services(url, pg_url)
    results = []
    threads = [threading.Thread(target=lambda s=s: results.append(reminders.run(s, on=day, now=night, meetings=False)))
               for s in (svc, other)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert all(r.written == 0 and r.duplicates == n for r in results)
    rows = outbox_rows(svc, "reminder")
    assert len(rows) == n == len({r.idempotency_key for r in rows})
    david = [r for r in rows if r.recipient == "+254700000110"]
    assert david and all(r.status == "suppressed" for r in david)
    kenya = [r for r in rows if r.recipient.startswith("+254") and r.status == "queued"]
    assert kenya and all(r.next_attempt_at == dt.datetime(2024, 6, 1, 5, 0, tzinfo=UTC) for r in kenya)
    dakar = [r for r in rows if r.recipient.startswith("+221")]
    assert dakar and all(r.next_attempt_at == r.created_at for r in dakar)  # 19:00 in Dakar: not delayed
    peter = next(r for r in rows if r.recipient == "+254700000102")
    assert "is due on 3 Jun 2024, in 3 days" in peter.body and "*0200" in peter.body
    mamadou = next(r for r in rows if r.recipient == "+221771000126")
    assert mamadou.body.startswith("Cher(e) Mamadou") and "XOF" in mamadou.body   # office 6 speaks French


@pytest.mark.postgres
def test_meeting_reminders_the_day_before(sim_at, pg_url):
    day = dt.date(2024, 3, 4)   # a Monday: Umoja Center meets on Tuesdays
    url, _ = sim_at(day)
    svc = make_services(url, pg_url)
    rems = reminders.find_meeting_reminders(svc, on=day)
    umoja = {r.client_id for r in rems if r.key.startswith("meeting:10:2024-03-05:")}
    assert umoja == {1, 5, 36}
    assert all(r.variables["date"] == dt.date(2024, 3, 5) for r in rems)
    rep = reminders.run(svc, on=day, payments=False, now=dt.datetime(2024, 3, 4, 9, tzinfo=UTC))
    assert rep.written == len(rems) and reminders.run(svc, on=day, payments=False).written == 0
    grace = next(r for r in outbox_rows(svc, "meeting") if r.recipient == "+254700000101")
    assert grace.body == "Dear Grace, reminder: Umoja Women Group meets tomorrow at Kariobangi Social Hall."


# --------------------------------------------------------------------------- alert rules


def flows_copy(tmp_path, alerts: str | None = None, notify_yaml: str | None = None) -> Path:
    d = tmp_path / "flows"
    shutil.copytree(FLOWS, d, ignore=shutil.ignore_patterns("tests"))
    if alerts is not None:
        (d / "alerts.yaml").write_text(alerts)
    if notify_yaml is not None:
        (d / "notify.yaml").write_text(notify_yaml)
    return d


def test_shipped_configuration_is_valid():
    cfg = notify.load_config(FLOWS)
    assert {r.name for r in cfg.rules} == {"overdue_to_officer", "large_disbursal", "pin_lockout"}
    rep = notify.lint(FLOWS, load_flowset(FLOWS).locales)
    assert rep.errors == []


@pytest.mark.parametrize("rule, message, line", [
    ("  - when: loan_late\n    to: [loan_officer]\n    text: notify.alert.loan_overdue\n",
     "unknown event 'loan_late'", 3),
    ("  - when: loan_overdue\n    to: [{boss: 1}]\n    text: notify.alert.loan_overdue\n", "bad recipient", 4),
    ("  - when: loan_overdue\n    if: amount > 5\n    to: [loan_officer]\n    text: notify.alert.loan_overdue\n",
     "condition uses amount, not a fact of 'loan_overdue'", 4),
    ("  - when: pin_locked\n    if: days >\n    to: [loan_officer]\n    text: notify.alert.pin_locked\n",
     "bad condition", 4),
    ("  - when: pin_locked\n    to: [{office: cashier}]\n    text: notify.alert.pin_locked\n",
     "no office contact 'cashier'", 4),
    ("  - when: pin_locked\n    to: [loan_officer]\n    text: alert.pin\n", "text must be a locale key", 5),
])
def test_bad_alert_rules_are_refused_with_file_and_line(tmp_path, rule, message, line):
    d = flows_copy(tmp_path, alerts="# rules\nalerts:\n" + rule)
    with pytest.raises(FlowValidationError) as e:
        notify.load_config(d)
    assert any(message in err.message for err in e.value.errors), e.value
    assert any(err.where.file.endswith("alerts.yaml") and err.where.line == line for err in e.value.errors), \
        [str(x) for x in e.value.errors]


def test_lint_checks_variables_and_length_of_every_language(tmp_path):
    d = flows_copy(tmp_path)
    fr = (d / "locales" / "fr.yaml").read_text()
    fr = fr.replace("Reste à payer : {{ balance | money(currency) }}", "Reste : {{ solde }}")
    fr = fr.replace('documents_ready: "Cher(e) {{ first_name }},',
                    'documents_ready: "Cher(e) {{ first_name }}, ' + "vos documents sont là. " * 25)
    (d / "locales" / "fr.yaml").write_text(fr)
    sw = (d / "locales" / "sw.yaml").read_text().replace("Asante kwa kulipa kwa wakati.", "Asante ✓")
    (d / "locales" / "sw.yaml").write_text(sw)
    rep = notify.lint(d, load_flowset(d).locales)
    errs = [str(e) for e in rep.errors]
    assert any("fr.yaml" in e and "notify.receipt.loan_repayment" in e and "unknown variable(s) solde" in e
               for e in errs), errs
    assert any("fr.yaml" in e and "notify.staff.documents_ready" in e and "more than the limit of 3" in e
               for e in errs), errs
    assert any("sw.yaml" in str(w) and "UCS-2" in str(w) for w in rep.warnings)


class _FakeMifos:
    def __init__(self, staff: dict):
        self.staff = staff

    def get(self, path, params=None):
        from convo.mifos.client import MifosNotFound

        sid = int(path.rsplit("/", 1)[1])
        if sid not in self.staff:
            raise MifosNotFound("no staff", status=404)
        return {"id": sid, "mobileNo": self.staff[sid], "isActive": True}


@pytest.mark.postgres
def test_alerts_fire_by_rule_once_per_occurrence(tmp_path, pg_url):
    d = flows_copy(tmp_path, alerts="""alerts:
  - name: pin_to_branch
    when: pin_locked
    to: [{office: branch}, {phone: "+254799000001"}]
    text: notify.alert.pin_locked
  - name: overdue_officer
    when: loan_overdue
    if: days_overdue > 7
    to: [loan_officer]
    text: notify.alert.loan_overdue
  - name: big_deposit
    when: savings_deposit
    if: amount >= 100000 and currency.code == "KES"
    to: [{staff: 3}]
    text: notify.alert.large_disbursal
""")
    upgrade(pg_url)
    svc = build_services(sim_settings("http://127.0.0.1:9", redis_url="memory://", database_url=pg_url,
                                      flows_dir=str(d), flows_reload_seconds=0))
    svc.__dict__["mifos"] = _FakeMifos({2: "+254711000002", 3: "+254711000003"})
    facts = dict(phone="+254700000101", client_id=1, client_name="Grace Wanjiru Kamau", office_id=2,
                 channel="ussd", locked_until="2024-05-01 10:00")
    sent = notify.alert(svc, event="pin_locked", **facts)
    assert sorted(m.recipient for m in sent) == ["+254711000001", "+254711000010", "+254799000001"]
    assert sent[0].body == "PIN locked: Grace Wanjiru Kamau (client 1) after too many wrong PINs on ussd."
    notify.alert(svc, event="pin_locked", **facts)                       # the same lockout again
    assert len(outbox_rows(svc, "alert")) == 3
    overdue = dict(client_id=12, client_name="Daniel", office_id=3, loan_officer_id=2, loan_id=207,
                   account_no="000000207", product="Kilimo", amount_overdue=Decimal("11799.99"),
                   currency={"code": "KES", "decimal_places": 2}, oldest_due_date=dt.date(2024, 1, 1))
    assert notify.alert(svc, "loan_overdue", key="loan:207:2024-01-01", days_overdue=7, **overdue) == []
    got = notify.alert(svc, "loan_overdue", key="loan:207:2024-01-01", days_overdue=8, **overdue)
    assert [m.recipient for m in got] == ["+254711000002"] and "late by 8 days" in got[0].body
    notify.alert(svc, "loan_overdue", key="loan:207:2024-01-01", days_overdue=9, **overdue)  # next day: same episode
    assert len(outbox_rows(svc, "alert")) == 4
    kes = {"code": "KES", "decimal_places": 2}
    assert notify.alert(svc, "savings_deposit", amount=Decimal("99999"), currency=kes, client_id=1, office_id=2) == []
    assert len(notify.alert(svc, "savings_deposit", amount=Decimal("100000"), currency=kes, client_id=1,
                            office_id=2, client_name="G", account_no="42")) == 1
    set_opt_out(svc.db, "+254799000001", True)                          # a staff number said STOP
    later = notify.alert(svc, event="pin_locked", **{**facts, "locked_until": "2024-05-02 10:00"})
    assert {m.recipient: m.status for m in later}["+254799000001"] == "suppressed"
    assert notify.alert(svc, event="no_such_event") == []


# --------------------------------------------------------------------------- receipts over HTTP


def hook(gw: str, entity: str, action: str, response: dict, *, token: str = TOKEN, status: str | None = None,
         old_style: bool = False) -> requests.Response:
    headers = {"X-Fineract-Entity": entity, "X-Fineract-Action": action, "Fineract-Platform-TenantId": "default",
               "X-Fineract-Endpoint": "https://mifos.example/fineract-provider/api/v1",
               "Content-Type": "application/json"}
    if old_style:
        body = response
    else:
        body = {"entityName": entity, "actionName": action, "createdBy": 1, "createdByName": "mifos",
                "createdByFullName": "App Administrator", "request": {"transactionAmount": "1", "locale": "en"},
                "officeId": response.get("officeId"), "clientId": response.get("clientId"),
                "response": {**response, "officeId": None}, "timestamp": "2024-05-01T09:30:00Z"}
        if status:
            body["status"] = status
    return requests.post(f"{gw}/hooks/fineract/{token}/", json=body, headers=headers, timeout=10)


@pytest.fixture
def stack(redis_url, pg_url):
    with running_sms_stack(redis_url, pg_url, callback_token=TOKEN) as s:
        yield s


@pytest.mark.postgres
def test_deposit_receipt_once_per_transaction(stack):
    gw, fake, services = stack
    dep = {"officeId": 1, "clientId": 1, "savingsId": 42, "resourceId": 4202, "changes": {}}
    assert hook(gw, "SAVINGSACCOUNT", "DEPOSIT", dep, token="wrong").status_code == 403
    r = hook(gw, "SAVINGSACCOUNT", "DEPOSIT", dep)
    assert r.status_code == 200 and r.json()["status"] == "done", r.text
    for _ in range(3):                                                   # replays
        assert hook(gw, "SAVINGSACCOUNT", "DEPOSIT", dep).json()["status"] == "duplicate"
    assert hook(gw, "SAVINGSACCOUNT", "DEPOSIT", dep, old_style=True).json()["status"] == "duplicate"
    rows = outbox_rows(services, "receipt")
    assert len(rows) == 1 and rows[0].recipient == "+254700000101"
    run_worker(services.settings, once=True, handle_signals=False, engine=services.db)
    sent = [m["message"] for m in fake.fake.accepted()]
    assert len(sent) == 1
    assert "Deposit of KES 2,500.00 to account *0042" in sent[0]
    assert "New balance: KES 7,500.00" in sent[0] and "Ref SW1MX7KNJ" in sent[0]


@pytest.mark.postgres
def test_no_receipt_for_failed_reversed_or_unknown_transactions(stack):
    gw, fake, services = stack
    failed = hook(gw, "LOAN", "REPAYMENT", {"loanId": 29, "clientId": 1, "errorCode": 403}, status="Exception")
    assert failed.json()["status"] == "ignored"
    reversed_ = hook(gw, "SAVINGSACCOUNT", "DEPOSIT", {"clientId": 1, "savingsId": 42, "resourceId": 4207})
    assert reversed_.json() == {"status": "ignored", "detail": "the transaction was reversed",
                                "key": "default:SAVINGSACCOUNT:DEPOSIT:42:4207"}
    unknown = hook(gw, "LOAN", "REPAYMENT", {"clientId": 1, "loanId": 29, "resourceId": 999999})
    assert unknown.json()["status"] == "ignored"
    other = hook(gw, "CLIENT", "CREATE", {"clientId": 99, "resourceId": 99})
    assert other.json()["status"] == "ignored"
    assert outbox_rows(services, "receipt") == []


@pytest.mark.postgres
def test_a_hook_without_the_ids_its_receipt_needs_is_ignored_not_retried(stack):
    gw, fake, services = stack
    # a loan repayment naming only a savings account, a deposit naming only a loan, and one without a transaction
    loan_as_savings = hook(gw, "LOAN", "REPAYMENT", {"clientId": 1, "savingsId": 42, "transactionId": 4202})
    assert loan_as_savings.json()["status"] == "ignored"
    assert loan_as_savings.json()["detail"] == "no loanId in the hook body"
    savings_as_loan = hook(gw, "SAVINGSACCOUNT", "DEPOSIT", {"clientId": 1, "loanId": 29, "transactionId": 4202})
    assert savings_as_loan.json() == {"status": "ignored", "detail": "no savingsId in the hook body",
                                      "key": "default:SAVINGSACCOUNT:DEPOSIT:29:4202"}
    no_tx = hook(gw, "SAVINGSACCOUNT", "DEPOSIT", {"clientId": 1, "savingsId": 42})
    assert no_tx.json()["detail"] == "no transaction id in the hook body"
    keys = [r.json()["key"] for r in (loan_as_savings, savings_as_loan, no_tx)]
    with services.db.connect() as c:
        states = c.execute(sa.text("SELECT status FROM fineract_hooks WHERE key = ANY(:keys)"),
                           {"keys": keys}).scalars().all()
    assert states == ["ignored"] * 3                              # none left pending for the worker to retry
    assert outbox_rows(services, "receipt") == []


@pytest.mark.postgres
def test_repayment_receipt_reaches_an_opted_out_client_and_waits_out_a_mifos_outage(stack):
    gw, fake, services = stack
    from convo.notify.receipts import retry_pending_hooks

    set_opt_out(services.db, "+254700000101", True)     # STOP ends reminders, not receipts
    sim = services.settings.fineract_url.split("/fineract-provider")[0]
    requests.post(f"{sim}/__sim/faults", json={"down": True}, timeout=5)
    rep = {"officeId": 1, "clientId": 1, "loanId": 29, "resourceId": 2907}
    r = hook(gw, "LOAN", "REPAYMENT", rep)
    assert r.status_code == 202 and r.json()["status"] == "pending"
    assert outbox_rows(services, "receipt") == []
    requests.delete(f"{sim}/__sim/faults", timeout=5)
    services.mifos.breaker.success()
    assert retry_pending_hooks(services) == 1
    assert retry_pending_hooks(services) == 0
    assert hook(gw, "LOAN", "REPAYMENT", rep).json()["status"] == "duplicate"
    (row,) = outbox_rows(services, "receipt")
    assert row.status == "queued"
    assert row.body.startswith("Received KES 1,000.00 for loan *0029") and "Loan balance: KES 7,120.00" in row.body


@pytest.mark.postgres
def test_a_hook_mifos_cannot_answer_is_retried_at_once_then_waits_longer_each_time(stack):
    gw, fake, services = stack
    from convo.notify.receipts import retry_pending_hooks
    from convo.store.notify_models import FineractHook

    t = FineractHook.__table__

    def pending():
        with services.db.connect() as c:
            r = c.execute(sa.select(t.c.status, t.c.attempts, t.c.next_attempt_at, t.c.updated_at)).one()
        return r.status, r.attempts, (r.next_attempt_at - r.updated_at).total_seconds()

    def time_passes():
        with services.db.begin() as c:
            c.execute(sa.update(t).values(next_attempt_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)))

    sim = services.settings.fineract_url.split("/fineract-provider")[0]
    requests.post(f"{sim}/__sim/faults", json={"down": True}, timeout=5)
    rep = {"officeId": 1, "clientId": 1, "loanId": 29, "resourceId": 2907}
    assert hook(gw, "LOAN", "REPAYMENT", rep).json()["status"] == "pending"
    assert pending() == ("pending", 1, 0)                   # the worker's next pass tries it
    assert retry_pending_hooks(services) == 1               # Mifos X still down
    status, attempts, wait = pending()
    assert (status, attempts) == ("pending", 2) and 30 <= wait <= 60
    assert retry_pending_hooks(services) == 0               # not before its time
    time_passes()
    assert retry_pending_hooks(services) == 1
    status, attempts, wait = pending()
    assert (status, attempts) == ("pending", 3) and 60 <= wait <= 120
    requests.delete(f"{sim}/__sim/faults", timeout=5)
    services.mifos.breaker.success()
    time_passes()
    assert retry_pending_hooks(services) == 1
    assert pending()[:2] == ("done", 4)
    assert len(outbox_rows(services, "receipt")) == 1


@pytest.mark.postgres
def test_disbursal_receipt_and_large_disbursal_alert(redis_url, pg_url, tmp_path):
    d = flows_copy(tmp_path, alerts="""alerts:
  - name: large_disbursal
    when: loan_disbursed
    if: amount >= 50000
    to: [{office: manager}]
    text: notify.alert.large_disbursal
""")
    with running_sms_stack(redis_url, pg_url, callback_token=TOKEN, flows_dir=str(d)) as (gw, fake, services):
        r = hook(gw, "LOAN", "DISBURSE", {"officeId": 2, "clientId": 14, "loanId": 208, "resourceId": 208})
        assert r.json()["status"] == "done", r.text
        (receipt,) = outbox_rows(services, "receipt")
        assert receipt.recipient == "+254700000114" and "of KES 50,000.00 was disbursed" in receipt.body
        (alert,) = outbox_rows(services, "alert")
        assert alert.recipient == "+254711000001"      # office 2's manager: Mifos X staff 1's mobile number
        assert alert.body == ("Large disbursal: KES 50,000.00 to Wanjiku Muthoni Ndungu (client 14), "
                              "loan 000000208.")


# --------------------------------------------------------------------------- CLI and the worker's schedule


def test_convo_remind_dry_run_lists_without_writing(sim_at, sqlite_url, monkeypatch):
    from click.testing import CliRunner

    from convo.cli import main

    day = dt.date(2024, 5, 31)
    url, _ = sim_at(day)
    upgrade(sqlite_url)
    env = {"CONVO_FINERACT_URL": f"{url}/fineract-provider/api/v1", "CONVO_DATABASE_URL": sqlite_url,
           "CONVO_REDIS_URL": "memory://", "CONVO_FLOWS_RELOAD_SECONDS": "0"}
    res = CliRunner().invoke(main, ["remind", "--date", "2024-05-31", "--dry-run", "--no-meetings"], env=env)
    assert res.exit_code == 0, res.output
    assert "remind:200:" in res.output and "dry run, nothing written" in res.output
    svc = make_services(url, sqlite_url)
    assert outbox_rows(svc) == []
    res = CliRunner().invoke(main, ["remind", "--date", "2024-05-31", "--no-meetings"], env=env)
    assert res.exit_code == 0 and " written, 0 already sent" in res.output, res.output
    res = CliRunner().invoke(main, ["remind", "--date", "2024-05-31", "--no-meetings"], env=env)
    assert ": 0 written," in res.output, res.output


def test_worker_schedule_runs_the_reminders(sim_at, sqlite_url):
    url, _ = sim_at(dt.date.today())
    svc = make_services(url, sqlite_url)
    with pytest.raises(ValueError):
        ReminderSchedule(svc, "every morning")
    stop = threading.Event()
    loop = JobLoop([ReminderSchedule(svc, "* * * * * *", idle_seconds=0.2)])   # croniter: seconds field
    t = threading.Thread(target=loop.run, kwargs={"stop_event": stop, "handle_signals": False})
    t.start()
    try:
        deadline = dt.datetime.now() + dt.timedelta(seconds=20)
        while not outbox_rows(svc, "reminder") and dt.datetime.now() < deadline:
            stop.wait(0.2)
        assert outbox_rows(svc, "reminder")
    finally:
        stop.set()
        t.join(5)
