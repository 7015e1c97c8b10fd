"""Payment and meeting reminders (``convo remind``, and on a schedule inside ``convo worker``:
:mod:`convo.jobs.schedule`).

Selection (see :func:`find_payment_reminders`): Fineract's own report of the
unpaid installments of active loans due on a given day ("Expected Payments By
Date - Basic", :func:`convo.mifos.notify_reads.installments_due`), asked once per
reminder day, then the loans found, by account number or from the pages of the
active loan list, whichever takes fewer calls: a run over 100,000 active loans
makes a few dozen Mifos X calls (bench/remind_bench.py, bench/README.md). For
each unpaid installment, with ``today`` the date *in the loan's office time
zone* (or ``--date``):

* ``due - today`` in ``reminders.due_in_days`` (e.g. ``[3, 0]``): a
  ``notify.reminder.due_soon`` (or ``due_today`` for 0) text;
* ``today - due`` in ``reminders.overdue_days`` (e.g. ``[1, 7]``): ``notify.reminder.overdue``.

Reminder texts get ``keyword``: the DUE keyword in the client's language, read from
``flows/channels.yaml`` (DENI in Swahili, DU in French; :func:`keyword_for`).

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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from convo.notify import messages as notify
from convo.store.db import utcnow

if TYPE_CHECKING:
    from convo.mifos.notify_reads import ClientContact, DueRow

log = logging.getLogger("convo.notify.reminders")

__all__ = ["Outgoing", "Reminder", "RunReport", "keyword_for", "find_meeting_reminders", "find_payment_reminders",
           "run"]


@dataclass(frozen=True)
class Reminder:
    key: str
    kind: str                 # reminder | meeting
    template: str
    client_id: int
    office_id: int | None
    variables: dict
    rule: str


@dataclass(frozen=True)
class Outgoing:
    """A reminder as its client gets it: number, language, text (``convo remind --dry-run`` shows these)."""
    reminder: Reminder
    phone: str
    lang: str
    text: str


@dataclass
class RunReport:
    reminders: list[Reminder] = field(default_factory=list)
    #: the texts, in each client's language (every run; a dry run writes none of them)
    texts: list[Outgoing] = field(default_factory=list)
    written: int = 0
    duplicates: int = 0
    suppressed: int = 0
    skipped: list[str] = field(default_factory=list)
    alerts: int = 0


def keyword_for(keywords, flow: str, lang: str) -> str:
    """The SMS keyword a client of ``lang`` texts for ``flow``, from ``flows/channels.yaml``: the first
    alias listed for that language (DENI in Swahili, DU in French), else the keyword itself (DUE)."""
    words = list(getattr(keywords, "words", {}).values())
    for lang_wanted in (lang, None):
        for kw in words:
            if kw.flow == flow and kw.lang == lang_wanted:
                return kw.word
    return ""


#: variable -> the flow whose keyword a reminder text names (``Text {{ keyword }} for details``)
KEYWORD_FLOWS = {"keyword": "due"}


def _today(cfg, office_id, on: dt.date | None, now: dt.datetime, default_tz: str) -> dt.date:
    return on or now.astimezone(cfg.timezone(office_id, default_tz)).date()


def find_payment_reminders(services, *, on: dt.date | None = None, now: dt.datetime | None = None,
                           cfg=None, overdue_events: list | None = None, threads: int = 4,
                           stats: dict | None = None) -> list[Reminder]:
    """Reminders due for the active loans (see the module doc). ``overdue_events`` collects
    ``(key, facts)`` of the ``loan_overdue`` alert event when given; ``stats`` gets ``mifos_calls``.

    Fineract selects: one ``Expected Payments By Date - Basic`` report per reminder day (unpaid
    installments of active loans due that day, every office under the head office), and with a
    ``loan_overdue`` alert rule one more (every unpaid installment due before today). The loans found
    are then read from the loan list (id, client, office, currency): one ``GET /loans?accountNo=`` each
    while they are few, else the pages of ``GET /loans?status=300`` (2,000 a page). Mifos X calls:
    ``1 + reminder days + 1 + min(loans found, active loans / 2,000 + 1)``."""
    from convo.mifos.notify_reads import installments_due, loan_currency, loans_by_account_no, offices

    cfg = cfg or notify.config_for(services)
    now = now or utcnow()
    default_tz = getattr(services.settings, "timezone", "Africa/Nairobi")
    mifos = services.mifos
    calls = 1
    all_offices = offices(mifos)
    heads = [o for o in all_offices if o.get("parentId") is None] or all_offices[:1]
    # rule of each day offset: +3 -> due3, 0 -> due0, -1 -> overdue1
    rules = {d: (f"due{d}", "notify.reminder.due_today" if d == 0 else "notify.reminder.due_soon")
             for d in cfg.due_in_days}
    rules.update({-d: (f"overdue{d}", "notify.reminder.overdue") for d in cfg.overdue_days if d > 0})
    # each office's own today (its time zone): which office wants which due date, and for what rule
    wanted: dict[dt.date, dict[str, int]] = {}
    office_ids: dict[str, int] = {}
    for o in all_offices:
        office_ids[o.get("name") or ""] = o["id"]
        today = _today(cfg, o["id"], on, now, default_tz)
        for offset in rules:
            wanted.setdefault(today + dt.timedelta(days=offset), {})[o.get("name") or ""] = offset
    rows: list[tuple[DueRow, int]] = []
    for day in sorted(wanted):
        for head in heads:
            calls += 1
            rows.extend((r, wanted[day][r.office]) for r in installments_due(mifos, head["id"], day, day)
                        if r.office in wanted[day])
    # the loan_overdue alert (when notify.yaml has a rule for it): every loan in arrears, one more report
    # per head office over every unpaid installment due before today
    arrears: dict[str, tuple[DueRow, dt.date]] = {}
    if overdue_events is not None and any(rule.event == "loan_overdue" for rule in cfg.rules):
        todays = {o.get("name") or "": _today(cfg, o["id"], on, now, default_tz) for o in all_offices}
        latest = max(todays.values()) - dt.timedelta(days=1)
        for head in heads:
            calls += 1
            for r in installments_due(mifos, head["id"], dt.date(1970, 1, 1), latest):
                if r.office in todays and r.due_date < todays[r.office] and r.outstanding > 0:
                    seen = arrears.get(r.loan_account_no)
                    if seen is None or r.due_date < seen[0].due_date:
                        arrears[r.loan_account_no] = (r, todays[r.office])
    loans, looked_up = loans_by_account_no(mifos, {r.loan_account_no for r, _ in rows} | set(arrears),
                                           threads=threads)
    calls += looked_up
    if stats is not None:
        stats["mifos_calls"] = stats.get("mifos_calls", 0) + calls
    found: list[Reminder] = []
    for r, offset in rows:
        loan = loans.get(r.loan_account_no)
        if loan is None:
            log.warning("reminders: loan account %s of the report not found by GET /loans?accountNo=",
                        r.loan_account_no)
            continue
        office_id = loan.get("clientOfficeId") or office_ids.get(r.office)
        today = _today(cfg, office_id, on, now, default_tz)
        currency = loan_currency(loan)
        cur = {"code": currency.code, "decimal_places": currency.decimal_places}
        rule, template = rules[offset]
        account_no = str(loan.get("accountNo") or r.loan_account_no)
        product = loan.get("loanProductName") or r.product
        found.append(Reminder(
            key=f"remind:{loan['id']}:{r.installment}:{r.due_date.isoformat()}:{rule}",
            kind="reminder", template=template, client_id=int(loan["clientId"]), office_id=office_id, rule=rule,
            variables={"account_no": account_no, "product": product, "currency": cur, "overdue": r.loan_overdue,
                       "amount": r.outstanding, "due_date": r.due_date, "days": abs(offset)}))
    for account, (r, today) in sorted(arrears.items()):
        loan = loans.get(account)
        if loan is None:
            continue
        assert overdue_events is not None  # arrears are gathered only for it
        currency = loan_currency(loan)
        oldest = r.due_date                  # the oldest unpaid installment (m_loan_arrears_aging's overdue since)
        overdue_events.append((f"loan:{loan['id']}:{oldest.isoformat()}", {
            "client_id": loan.get("clientId"), "client_name": loan.get("clientName") or r.client_name,
            "office_id": loan.get("clientOfficeId") or office_ids.get(r.office),
            "loan_officer_id": loan.get("loanOfficerId"), "loan_id": loan["id"],
            "account_no": str(loan.get("accountNo") or account), "product": loan.get("loanProductName") or r.product,
            "amount_overdue": r.loan_overdue,
            "currency": {"code": currency.code, "decimal_places": currency.decimal_places},
            "days_overdue": (today - oldest).days, "oldest_due_date": oldest}))
    return found


def find_meeting_reminders(services, *, on: dt.date | None = None, now: dt.datetime | None = None,
                           cfg=None) -> list[Reminder]:
    """Members of active groups whose (group's or center's) meeting is ``meeting_days_before`` days away."""
    from convo.mifos import notify_reads as reads
    from convo.mifos.client import meeting_from_group

    cfg = cfg or notify.config_for(services)
    now = now or utcnow()
    default_tz = getattr(services.settings, "timezone", "Africa/Nairobi")
    mifos = services.mifos
    out: list[Reminder] = []
    for g in reads.all_groups(mifos):
        if g.get("active") is False:
            continue
        today = _today(cfg, g.get("officeId"), on, now, default_tz)
        full = reads.group_with_members_and_meetings(mifos, int(g["id"]))
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
    from convo.mifos.notify_reads import client_contact, client_contacts
    from convo.notify.recipients import NoRecipient, client_phone, office_regions

    regions = office_regions(services)
    default_tz = getattr(services.settings, "timezone", "Africa/Nairobi")
    contacts: dict[int, ClientContact] = {}
    # every client to text, in as few calls as it takes (one each, or the pages of the active client list)
    wanted = {r.client_id for r in reminders if r.variables.get("_mobile") is None}
    contacts.update(client_contacts(services.mifos, wanted)[0])
    flowset = notify.flowset_for(services)
    locales = flowset.locales
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
        lang = notify.client_language(services, e164, office.language)
        if r.template.startswith("notify.reminder."):
            v.update({var: keyword_for(flowset.keywords, flow, lang) for var, flow in KEYWORD_FLOWS.items()})
        text = notify.render_text(locales, r.template, lang, v)
        rep.texts.append(Outgoing(r, e164, lang, text))
        if dry_run:
            continue
        quiet = notify.not_before(now, cfg.timezone(r.office_id, default_tz), cfg.quiet_start, cfg.quiet_end)
        t0 = utcnow()
        msg = notify.send_to_client(services, client_id=r.client_id, phone=e164, key=r.template, variables=v,
                                    kind=r.kind, idempotency_key=r.key, sent_by="reminders", lang=lang,
                                    region=region, quiet=quiet, locales=locales, text=text)
        if msg.created_at < t0:
            rep.duplicates += 1
        else:
            rep.written += 1
        if msg.status == "suppressed":
            rep.suppressed += 1


def run(services, *, on: dt.date | None = None, dry_run: bool = False, now: dt.datetime | None = None,
        payments: bool = True, meetings: bool = True) -> RunReport:
    """Find and enqueue today's reminders (``convo remind``). Safe to run any number of times."""
    import time

    from convo import metrics

    cfg = notify.config_for(services)
    now = now or utcnow()
    rep = RunReport()
    events: list = []
    stats: dict = {}
    try:
        if payments:
            rep.reminders.extend(find_payment_reminders(services, on=on, now=now, cfg=cfg, overdue_events=events,
                                                        stats=stats))
        if meetings:
            rep.reminders.extend(find_meeting_reminders(services, on=on, now=now, cfg=cfg))
        _deliver(services, cfg, rep.reminders, now, rep, dry_run)
        if not dry_run:
            for key, facts in events:
                rep.alerts += len(notify.alert(services, "loan_overdue", key=key, **facts))
    except Exception:
        metrics.REMINDER_RUNS.labels("failed").inc()
        raise
    finally:
        metrics.REMINDER_MIFOS_CALLS.inc(stats.get("mifos_calls", 0))
    metrics.REMINDER_RUNS.labels("dry_run" if dry_run else "ok").inc()
    if not dry_run:
        metrics.REMINDERS.labels("written").inc(rep.written)
        metrics.REMINDERS.labels("duplicate").inc(rep.duplicates)
        metrics.REMINDERS.labels("suppressed").inc(rep.suppressed)
        metrics.REMINDER_LAST_RUN.set(time.time())
    return rep
