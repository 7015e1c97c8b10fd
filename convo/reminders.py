"""Payment and meeting reminders (``convo remind``, and on a schedule inside ``convo worker``).

Selection (see :func:`find_payment_reminders`): every active loan from
``GET /loans`` (paged) and its schedule; for each unpaid installment, with
``today`` the date *in the loan's office time zone* (or ``--date``):

* ``due - today`` in ``reminders.due_in_days`` (e.g. ``[3, 0]``): a
  ``notify.reminder.due_soon`` (or ``due_today`` for 0) text;
* ``today - due`` in ``reminders.overdue_days`` (e.g. ``[1, 7]``): ``notify.reminder.overdue``.

One reminder per installment per rule: the outbox key is
``remind:<loan>:<installment>:<due date>:<rule>``, so running twice, or on two
machines, sends once. Reminders written during quiet hours (office time)
wait for the morning (``not_before``). Each overdue loan also raises the
``loan_overdue`` alert event (once per loan and oldest unpaid due date).

Meeting reminders: every active group (``GET /groups?paged=true``) with its
collection meeting calendar (its center's when it sits in a center); a
meeting ``meeting_days_before`` days ahead sends each active member
``notify.meeting.tomorrow``, key ``meeting:<group>:<date>:<client>``.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal

from convo import notify
from convo.db import utcnow

log = logging.getLogger("convo.reminders")

__all__ = ["Reminder", "RunReport", "find_meeting_reminders", "find_payment_reminders", "run", "start_scheduler"]


@dataclass(frozen=True)
class Reminder:
    key: str
    kind: str                 # reminder | meeting
    template: str
    client_id: int
    office_id: int | None
    variables: dict
    rule: str


@dataclass
class RunReport:
    reminders: list[Reminder] = field(default_factory=list)
    written: int = 0
    duplicates: int = 0
    suppressed: int = 0
    skipped: list[str] = field(default_factory=list)
    alerts: int = 0


def _today(cfg, office_id, on: dt.date | None, now: dt.datetime, default_tz: str) -> dt.date:
    return on or now.astimezone(cfg.timezone(office_id, default_tz)).date()


def find_payment_reminders(services, *, on: dt.date | None = None, now: dt.datetime | None = None,
                           cfg=None, overdue_events: list | None = None, threads: int = 4) -> list[Reminder]:
    """Reminders due for the active loans (see the module doc). ``overdue_events`` collects
    ``(key, facts)`` of the ``loan_overdue`` alert event when given."""
    from convo.mifos.notify_reads import iter_active_loans, loan_currency, loan_installments, loan_with_schedule

    cfg = cfg or notify.config_for(services)
    now = now or utcnow()
    default_tz = getattr(services.settings, "timezone", "Africa/Nairobi")
    mifos = services.mifos
    loans = list(iter_active_loans(mifos))

    def one(summary: dict) -> tuple[list[Reminder], tuple | None]:
        office_id = summary.get("clientOfficeId")
        today = _today(cfg, office_id, on, now, default_tz)
        loan = loan_with_schedule(mifos, summary["id"])
        unpaid = loan_installments(loan)
        currency = loan_currency(loan)
        cur = {"code": currency.code, "decimal_places": currency.decimal_places}
        overdue = sum((i.outstanding for i in unpaid if i.due_date < today), Decimal(0))
        out = []
        base = {"account_no": str(loan.get("accountNo", loan["id"])), "product": loan.get("loanProductName") or "",
                "currency": cur, "overdue": overdue}
        for inst in unpaid:
            days = (inst.due_date - today).days
            if days >= 0 and days in cfg.due_in_days:
                rule, template = f"due{days}", ("notify.reminder.due_today" if days == 0 else
                                                "notify.reminder.due_soon")
            elif days < 0 and -days in cfg.overdue_days:
                rule, template = f"overdue{-days}", "notify.reminder.overdue"
            else:
                continue
            out.append(Reminder(
                key=f"remind:{loan['id']}:{inst.number}:{inst.due_date.isoformat()}:{rule}",
                kind="reminder", template=template, client_id=int(loan.get("clientId") or summary["clientId"]),
                office_id=office_id, rule=rule,
                variables={**base, "amount": inst.outstanding, "due_date": inst.due_date, "days": abs(days)}))
        event = None
        late = [i for i in unpaid if i.due_date < today]
        if late:
            oldest = min(i.due_date for i in late)
            event = (f"loan:{loan['id']}:{oldest.isoformat()}", {
                "client_id": loan.get("clientId"), "client_name": loan.get("clientName"), "office_id": office_id,
                "loan_officer_id": loan.get("loanOfficerId") or summary.get("loanOfficerId"),
                "loan_id": loan["id"], "account_no": base["account_no"], "product": base["product"],
                "amount_overdue": overdue, "currency": cur, "days_overdue": (today - oldest).days,
                "oldest_due_date": oldest})
        return out, event

    found: list[Reminder] = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for reminders, event in pool.map(one, loans):
            found.extend(reminders)
            if event and overdue_events is not None:
                overdue_events.append(event)
    return found


def find_meeting_reminders(services, *, on: dt.date | None = None, now: dt.datetime | None = None,
                           cfg=None) -> list[Reminder]:
    """Members of active groups whose (group's or center's) meeting is ``meeting_days_before`` days away."""
    from convo.mifos.client import meeting_from_group

    cfg = cfg or notify.config_for(services)
    now = now or utcnow()
    default_tz = getattr(services.settings, "timezone", "Africa/Nairobi")
    mifos = services.mifos
    out: list[Reminder] = []
    offset = 0
    groups: list[dict] = []
    while True:
        body = mifos.get("/groups", {"offset": offset, "limit": 200, "paged": "true"})
        items = body if isinstance(body, list) else (body or {}).get("pageItems") or []
        groups.extend(items)
        offset += len(items)
        total = None if isinstance(body, list) else (body or {}).get("totalFilteredRecords")
        if isinstance(body, list) or not items or len(items) < 200 or (total is not None and offset >= int(total)):
            break
    for g in groups:
        if g.get("active") is False:
            continue
        today = _today(cfg, g.get("officeId"), on, now, default_tz)
        full = mifos.get(f"/groups/{int(g['id'])}",
                         {"associations": "activeClientMembers,collectionMeetingCalendar"}) or {}
        for days in cfg.meeting_days_before:
            target = today + dt.timedelta(days=days)
            meeting = meeting_from_group(full, target)
            if meeting is None or meeting.date != target:
                continue
            for m in full.get("activeClientMembers") or []:
                out.append(Reminder(
                    key=f"meeting:{g['id']}:{target.isoformat()}:{m['id']}", kind="meeting",
                    template="notify.meeting.tomorrow", client_id=int(m["id"]), office_id=m.get("officeId"),
                    rule=f"meeting{days}",
                    variables={"group_name": meeting.group_name, "center_name": meeting.center_name or "",
                               "location": meeting.location or "", "date": meeting.date, "days": days,
                               "_mobile": m.get("mobileNo"), "_first": m.get("firstname"),
                               "_name": m.get("displayName")}))
    return out


def _deliver(services, cfg, reminders: list[Reminder], now: dt.datetime, rep: RunReport, dry_run: bool) -> None:
    from convo.mifos.notify_reads import client_contact
    from convo.actions.mifos import office_regions
    from convo.recipients import NoRecipient, client_phone

    regions = office_regions(services)
    default_tz = getattr(services.settings, "timezone", "Africa/Nairobi")
    contacts: dict[int, object] = {}
    locales = notify._flowset(services).locales
    for r in reminders:
        v = dict(r.variables)
        mobile, first, name = v.pop("_mobile", None), v.pop("_first", None), v.pop("_name", None)
        if mobile is None:
            if r.client_id not in contacts:
                contacts[r.client_id] = client_contact(services.mifos, r.client_id)
            c = contacts[r.client_id]
            if not c.active:
                rep.skipped.append(f"{r.key}: client {r.client_id} is not active")
                continue
            mobile, first, name = c.mobile_no, c.first_name, c.display_name
        office = cfg.office(r.office_id)
        try:
            e164, region = client_phone(services, r.client_id, mobile, r.office_id, regions)
        except NoRecipient as e:
            rep.skipped.append(f"{r.key}: {e}")
            continue
        v.update(first_name=first or (name or "").split(" ")[0], name=name or "")
        if dry_run:
            continue
        quiet = notify.not_before(now, cfg.timezone(r.office_id, default_tz), cfg.quiet_start, cfg.quiet_end)
        lang = notify.client_language(services, e164, office.language)
        t0 = utcnow()
        msg = notify.send_to_client(services, client_id=r.client_id, phone=e164, key=r.template, variables=v,
                                    kind=r.kind, idempotency_key=r.key, sent_by="reminders", lang=lang,
                                    region=region, quiet=quiet, locales=locales)
        if msg.created_at < t0:
            rep.duplicates += 1
        else:
            rep.written += 1
        if msg.status == "suppressed":
            rep.suppressed += 1


def run(services, *, on: dt.date | None = None, dry_run: bool = False, now: dt.datetime | None = None,
        payments: bool = True, meetings: bool = True) -> RunReport:
    """Find and enqueue today's reminders (``convo remind``). Safe to run any number of times."""
    cfg = notify.config_for(services)
    now = now or utcnow()
    rep = RunReport()
    events: list = []
    if payments:
        rep.reminders.extend(find_payment_reminders(services, on=on, now=now, cfg=cfg, overdue_events=events))
    if meetings:
        rep.reminders.extend(find_meeting_reminders(services, on=on, now=now, cfg=cfg))
    _deliver(services, cfg, rep.reminders, now, rep, dry_run)
    if not dry_run:
        for key, facts in events:
            rep.alerts += len(notify.alert(services, "loan_overdue", key=key, **facts))
    return rep


# --------------------------------------------------------------------------- schedule inside `convo worker`


def start_scheduler(services, cron: str, stop: threading.Event, *, timezone: str = "Africa/Nairobi",
                    hooks_every: float = 60.0) -> threading.Thread:
    """A daemon thread: reminders at every ``cron`` time (5-field cron, in ``timezone``) and
    Fineract hooks left pending (Mifos X was down) retried every ``hooks_every`` seconds.

    Several workers may each run one: the outbox keys make every reminder go once.
    """
    from zoneinfo import ZoneInfo

    from croniter import croniter

    if cron and not croniter.is_valid(cron):
        raise ValueError(f"CONVO_REMIND_CRON: not a cron expression: {cron!r}")
    tz = ZoneInfo(timezone)

    def loop() -> None:
        from convo.receipts import retry_pending_hooks

        it = croniter(cron, dt.datetime.now(tz)) if cron else None
        next_run = it.get_next(dt.datetime) if it else None
        next_hooks = 0.0
        import time

        while not stop.is_set():
            if next_run is not None and dt.datetime.now(tz) >= next_run:
                try:
                    rep = run(services)
                    log.info("reminders: %d found, %d written, %d already sent, %d suppressed, %d alerts",
                             len(rep.reminders), rep.written, rep.duplicates, rep.suppressed, rep.alerts)
                except Exception:  # noqa: BLE001 - next time, then
                    log.exception("reminder run failed")
                next_run = it.get_next(dt.datetime)
            if time.monotonic() >= next_hooks:
                next_hooks = time.monotonic() + hooks_every
                try:
                    retry_pending_hooks(services)
                except Exception:  # noqa: BLE001
                    log.exception("retrying pending Fineract hooks failed")
                if services.settings.officer_day:   # the field officer's morning SMS (convo/officer_day.py)
                    from convo import officer_day

                    officer_day.tick(services)
            stop.wait(1.0)

    t = threading.Thread(target=loop, name="notify-scheduler", daemon=True)
    t.start()
    log.info("scheduler: reminders %s (%s), pending hooks every %ss", cron or "off", timezone, hooks_every)
    return t
