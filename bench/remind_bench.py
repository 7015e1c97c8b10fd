"""Reminders at scale: Mifos X calls, minutes and memory of one reminder run over N active loans, against
the Fineract simulator in its own process (run on demand, not in pytest; results in bench/README.md).

    .venv/bin/python bench/remind_bench.py [--loans 100000] [--old]

The simulator gets N extra active loans (monthly, 12 installments, due days spread over the month,
one loan in 20 with its last due installment unpaid), each with its own client. The run is
`convo remind --dry-run` minus the texts: :func:`convo.notify.reminders.find_payment_reminders` (the selection
from Fineract), then the contacts of the clients reminded (as delivering does: ``GET /clients/{id}`` each, or the
pages of ``GET /clients?status=active`` when fewer). Reported: simulator requests (counted by the simulator), wall time, peak RSS of the run's process.
``--old`` also runs the previous selection (every active loan page by page, then each loan's schedule),
on the same data.
"""
from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import resource
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

KES = {"code": "KES", "name": "Kenyan Shilling", "decimalPlaces": 2, "displaySymbol": "KSh",
       "nameCode": "currency.KES", "displayLabel": "Kenyan Shilling (KSh)"}
ACTIVE = {"id": 300, "code": "loanStatusType.active", "value": "Active", "active": True, "closed": False}
OFFICES = (1, 2, 3)                    # Nairobi offices of the seed: one time zone


def _months(day: dt.date, n: int) -> dt.date:
    y, m = divmod(day.month - 1 + n, 12)
    return day.replace(year=day.year + y, month=m + 1, day=min(day.day, 28))


def add_loans(data: dict, n: int, today: dt.date, first_id: int = 1_000_000) -> None:
    """``n`` more active loans, each of its own new client, in the simulator's data set (compact bodies:
    what the list, the loan, the report and the client read)."""
    template = data["clients"][1]
    for i in range(n):
        lid, cid = first_id + i, first_id + i
        office = OFFICES[i % len(OFFICES)]
        client = dict(template, id=cid, accountNo=f"C{cid:09d}", externalId=None, displayName=f"Client {cid}",
                      firstname="Client", lastname=str(cid), mobileNo=f"0{780000000 + i}", officeId=office,
                      officeName=data["offices"][office], savingsAccountId=None, groups=[])
        data["clients"][cid] = client
        first_due = today - dt.timedelta(days=200) + dt.timedelta(days=i % 28)
        late = i % 20 == 0
        periods, overdue, since = [], Decimal(0), None
        due_dates = [_months(first_due, k) for k in range(12)]
        last_past = max((k for k, d in enumerate(due_dates) if d < today), default=-1)
        for k, due in enumerate(due_dates):
            unpaid = due >= today or (late and k == last_past)
            p, it = Decimal("1000"), Decimal("100")
            if unpaid and due < today:
                overdue += p + it
                since = since or due
            periods.append({"period": k + 1, "dueDate": due, "complete": not unpaid,
                            "principalDue": p, "principalPaid": Decimal(0) if unpaid else p,
                            "interestDue": it, "interestPaid": Decimal(0) if unpaid else it,
                            "feeChargesDue": Decimal(0), "feeChargesPaid": Decimal(0),
                            "penaltyChargesDue": Decimal(0), "penaltyChargesPaid": Decimal(0),
                            "totalDueForPeriod": p + it, "totalOutstandingForPeriod": p + it if unpaid else Decimal(0)})
        summary = {"currency": KES, "totalOverdue": overdue}
        if since:
            summary["overdueSinceDate"] = since
        data["loans"][lid] = {"id": lid, "accountNo": f"L{lid:09d}", "status": ACTIVE, "clientId": cid,
                              "clientAccountNo": client["accountNo"], "clientName": client["displayName"],
                              "clientOfficeId": office, "loanProductName": "Biashara Flat 12M", "currency": KES,
                              "summary": summary, "repaymentSchedule": {"currency": KES, "periods": periods}}


def _serve_sim(n: int, today: dt.date, port_q) -> None:
    import logging

    from werkzeug.serving import make_server

    from convo.devkit import fineract_seed as seed
    from convo.devkit.fineract_sim import create_sim_app

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    data = seed.build(today)
    add_loans(data, n, today)
    app = create_sim_app(data, today=today)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    port_q.put(server.server_port)
    server.serve_forever()


def _hits(url: str) -> int:
    import requests

    return requests.get(f"{url}/__sim/stats", timeout=30).json()["hits"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--loans", type=int, default=100_000)
    ap.add_argument("--old", action="store_true", help="also time the previous selection (one call per loan)")
    args = ap.parse_args()
    today = dt.date(2024, 5, 15)
    q = mp.get_context("spawn").Queue()
    sim = mp.get_context("spawn").Process(target=_serve_sim, args=(args.loans, today, q), daemon=True)
    t0 = time.monotonic()
    sim.start()
    port = q.get(timeout=1800)
    print(f"simulator with {args.loans} extra active loans ready in {time.monotonic() - t0:.0f} s", flush=True)
    url = f"http://127.0.0.1:{port}"

    import tempfile

    from convo.config import Settings
    from convo.mifos.notify_reads import client_contacts
    from convo.notify import reminders
    from convo.services import build_services
    from convo.store.db import upgrade

    db = f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    upgrade(db)
    settings = Settings(redis_url="memory://", database_url=db, flows_reload_seconds=0,
                        fineract_url=f"{url}/fineract-provider/api/v1", fineract_timeout=30)
    services = build_services(settings)
    now = dt.datetime(2024, 5, 15, 6, 0, tzinfo=dt.timezone.utc)
    before, start = _hits(url), time.monotonic()
    events: list = []
    found = reminders.find_payment_reminders(services, on=today, now=now, overdue_events=events)
    select_s, select_calls = time.monotonic() - start, _hits(url) - before - 0
    clients = sorted({r.client_id for r in found})
    before2, start2 = _hits(url), time.monotonic()
    client_contacts(services.mifos, clients)
    contact_s, contact_calls = time.monotonic() - start2, _hits(url) - before2
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rules: dict[str, int] = {}
    for r in found:
        rules[r.rule] = rules.get(r.rule, 0) + 1
    print(f"loans: {args.loans} + seed; reminders found: {len(found)} {dict(sorted(rules.items()))}; "
          f"loans in arrears (alert events): {len(events)}")
    print(f"selection: {select_calls} Mifos X calls in {select_s / 60:.2f} min")
    print(f"client look-ups of the reminders: {contact_calls} calls in {contact_s / 60:.2f} min")
    print(f"peak RSS of the run's process: {rss_mb:.0f} MiB")
    if args.old:
        from convo.mifos.notify_reads import iter_active_loans, loan_with_schedule

        before3, start3 = _hits(url), time.monotonic()
        n = 0
        for loan in iter_active_loans(services.mifos):
            loan_with_schedule(services.mifos, loan["id"])
            n += 1
        print(f"previous selection: {_hits(url) - before3} Mifos X calls ({n} schedules) in "
              f"{(time.monotonic() - start3) / 60:.2f} min")
    sim.terminate()


if __name__ == "__main__":
    main()
