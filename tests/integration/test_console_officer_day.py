"""The field officer's day (issue 14 item 6): each morning, in the office's time zone, a loan officer gets one
SMS with the day's group meetings (group, time, place) and the count and total of installments due and
overdue in their portfolio, read from the simulator; in the officer's language; through the outbox; once a day.
Real PostgreSQL and Redis; the simulator over HTTP."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import requests
import sqlalchemy as sa

TUESDAY = dt.date(2026, 12, 1)               # Umoja Center (Umoja Women Group) meets on Tuesdays at 10:00
NAIROBI, DAKAR = ZoneInfo("Africa/Nairobi"), ZoneInfo("Africa/Dakar")
PETER, MOUSSA = "+254711000002", "+221770000004"


@pytest.fixture
def world(redis_url, pg_url):
    """Peter Otieno (staff 2, Nairobi Eastlands) keeps the Kenyan clients; Moussa Diallo (staff 4, Dakar
    Plateau, French) gets the Tanzanian and West African ones (loans in TZS and XOF)."""
    from convo.cli import sim_settings
    from convo.devkit import fineract_seed as seed
    from convo.devkit.devserver import BackgroundServer
    from convo.devkit.fineract_sim import create_sim_app
    from convo.services import build_services
    from convo.store.db import upgrade

    data = seed.build(TUESDAY)
    for c in data["clients"].values():
        if c["officeId"] >= 4:
            c["staffId"], c["staffName"] = 4, "Diallo, Moussa"
    sim = BackgroundServer(create_sim_app(data, today=TUESDAY)).start()
    upgrade(pg_url)
    services = build_services(sim_settings(sim.url, redis_url=redis_url, database_url=pg_url,
                                           flows_reload_seconds=0, officer_day=True, officer_day_at="06:30"))
    try:
        yield sim.url, services
    finally:
        services.db.dispose()
        sim.stop()


def at(zone, hour, minute=0) -> dt.datetime:
    return dt.datetime(TUESDAY.year, TUESDAY.month, TUESDAY.day, hour, minute, tzinfo=zone).astimezone(dt.timezone.utc)


def outbox(services, recipient):
    from convo.store.db import OutboxMessage

    o = OutboxMessage.__table__
    with services.db.connect() as c:
        return c.execute(sa.select(o.c.idempotency_key, o.c.body, o.c.kind, o.c.status)
                         .where(o.c.recipient == recipient).order_by(o.c.id)).all()


def portfolio(sim_url, officer):
    """Installments due on TUESDAY and unpaid before it, over the simulator's HTTP API (count, total)."""
    api, h = sim_url + "/fineract-provider/api/v1", {"Fineract-Platform-TenantId": "default"}
    auth = ("mifos", "password")
    loans = requests.get(api + "/loans", params={"limit": 0}, headers=h, auth=auth, timeout=10).json()["pageItems"]
    due, overdue = [0, Decimal(0)], [0, Decimal(0)]
    for loan in loans:
        if loan.get("loanOfficerId") != officer or not loan["status"].get("active"):
            continue
        body = requests.get(f"{api}/loans/{loan['id']}", params={"associations": "repaymentSchedule"}, headers=h,
                            auth=auth, timeout=10).json()
        for p in body["repaymentSchedule"]["periods"]:
            owed = Decimal(str(p.get("totalOutstandingForPeriod") or 0))
            if p.get("period") is None or owed <= 0:
                continue
            day = dt.date(*p["dueDate"])
            if day == TUESDAY:
                due[0] += 1
                due[1] += owed
            elif day < TUESDAY:
                overdue[0] += 1
                overdue[1] += owed
    return due, overdue


def test_each_officer_gets_one_morning_sms_in_their_offices_time_and_language(world):
    from convo.notify import officer_day

    sim_url, services = world
    early = officer_day.run(services, now=at(NAIROBI, 6, 0))               # 06:00 in Nairobi, 03:00 in Dakar
    assert (early.written, early.not_yet) == (0, 2) and outbox(services, PETER) == []

    morning = officer_day.run(services, now=at(NAIROBI, 7, 0))             # 07:00 in Nairobi, 04:00 in Dakar
    assert (morning.written, morning.not_yet) == (1, 1)
    [(key, body, kind, status)] = outbox(services, PETER)
    (due_n, due_total), (late_n, late_total) = portfolio(sim_url, 2)
    assert due_n == 1 and late_n >= 5                                     # David's installment; the arrears
    assert key == "officer-day:2:2026-12-01" and kind == "officer" and status == "queued"
    assert body == (f"Good morning Peter. 1 Dec 2026: Umoja Women Group 10:00 at Kariobangi Social Hall. "
                    f"Due today: 1, KES {due_total:,.2f}. Overdue: {late_n}, KES {late_total:,.2f}."), body

    from pathlib import Path

    assert f"\n{body}\n" in (Path(__file__).resolve().parents[2] / "README.md").read_text()   # the README's example
    again = officer_day.run(services, now=at(NAIROBI, 9, 0))               # never twice a day
    assert again.written == 0 and again.already == 1 and len(outbox(services, PETER)) == 1

    dakar = officer_day.run(services, now=at(DAKAR, 7, 0))
    assert dakar.written == 1
    [(key, body, _, _)] = outbox(services, MOUSSA)
    (due_n, _), (late_n, _) = portfolio(sim_url, 4)
    assert key == "officer-day:4:2026-12-01"
    assert body.startswith("Bonjour Moussa. ") and "aucune réunion de groupe." in body
    # his loans are in TZS and XOF: counts, no single total
    assert f"Échéances du jour : {due_n}. En retard : {late_n}." in body, body

    tomorrow = officer_day.run(services, now=at(DAKAR, 7, 0) + dt.timedelta(days=1))
    assert tomorrow.written == 2                                            # a new day, a new SMS each


def test_the_worker_tick_reads_mifos_x_only_when_a_morning_comes(world):
    from convo.notify import officer_day

    sim_url, services = world
    hits = lambda: requests.get(sim_url + "/__sim/stats", timeout=5).json()["hits"]  # noqa: E731
    assert officer_day.tick(services, now=at(NAIROBI, 5, 0)) is None       # no office's morning yet
    first = officer_day.tick(services, now=at(NAIROBI, 6, 31))
    assert first is not None and first.written == 1
    before = hits()
    assert officer_day.tick(services, now=at(NAIROBI, 6, 32)) is None      # nothing new: Mifos X left alone
    assert hits() == before
    later = officer_day.tick(services, now=at(DAKAR, 6, 31))               # Dakar's morning: one more run
    assert later is not None and later.written == 1 and later.already == 1
    assert len(outbox(services, PETER)) == 1 and len(outbox(services, MOUSSA)) == 1


def test_off_unless_the_setting_is_on(world):
    from convo.notify import officer_day

    _sim, services = world
    services.settings = services.settings.replace(officer_day=False)     # CONVO_OFFICER_DAY=false (default)
    assert officer_day.tick(services, now=at(NAIROBI, 7, 0)) is None
    assert outbox(services, PETER) == []
