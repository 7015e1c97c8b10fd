"""The field officer's day: one SMS each morning to every loan officer, with the day's group meetings
and the installments due and overdue in their portfolio (``CONVO_OFFICER_DAY=true``).

What is read from Mifos X, once per run for all officers:

* ``GET /loans`` (paged, :func:`convo.mifos.notify_reads.iter_active_loans`): the active loans and their
  ``loanOfficerId``; then each of those loans' schedule (``GET /loans/{id}?associations=repaymentSchedule``):
  installments due on the officer's today, and unpaid installments due before it (overdue).
* ``GET /groups?staffId={id}&paged=true`` (GroupsApiResource's ``staffId`` filter) per officer and
  ``GET /groups/{id}?associations=collectionMeetingCalendar`` per active group: a meeting today
  (:func:`convo.mifos.client.meeting_from_group`; the center's calendar for a group in a center) with
  the calendar's ``meetingTime`` (Fineract's ``LocalTimeAdapter``: ``[h, m, s]``) and ``location``.
* ``GET /staff/{id}``: ``mobileNo``, ``isActive``, ``officeId`` (inactive staff and staff without a
  number get nothing, and the run says why).

"Today" and the sending time are the officer's office's (``flows/notify.yaml`` time zone, else
``CONVO_TIMEZONE``): the SMS goes once the office's clock has passed ``CONVO_OFFICER_DAY_AT``. The text is
``notify.officer.day`` in the officer's language (the language their phone chose, else the office's).
It goes through the outbox with the key ``officer-day:<staff id>:<local date>``, so any number of runs,
on any number of workers, send it once a day. ``convo worker`` runs it every minute beside the
reminders (:class:`convo.jobs.schedule.ReminderSchedule`); a run that finds the office's time not yet come
does nothing for that officer.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

log = logging.getLogger("convo.notify.officer_day")

__all__ = ["OfficerDay", "Report", "meeting_time", "run"]

TEXT = "notify.officer.day"


@dataclass
class OfficerDay:
    staff_id: int
    office_id: int | None
    date: dt.date
    meetings: list[dict] = field(default_factory=list)
    due_count: int = 0
    overdue_count: int = 0
    due: dict = field(default_factory=lambda: defaultdict(Decimal))        # currency → total
    overdue: dict = field(default_factory=lambda: defaultdict(Decimal))

    def variables(self) -> dict:
        currencies = set(self.due) | set(self.overdue)
        one = next(iter(currencies)) if len(currencies) == 1 else None
        return {"date": self.date, "meetings": self.meetings, "due_count": self.due_count,
                "overdue_count": self.overdue_count, "currency": one or "",
                # with loans in several currencies there is no one total: the text shows the counts only
                "due_total": self.due.get(one, Decimal(0)) if one else None,
                "overdue_total": self.overdue.get(one, Decimal(0)) if one else None}


@dataclass
class Report:
    written: int = 0
    already: int = 0
    not_yet: int = 0
    skipped: list[str] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)        # (phone, body) of each SMS written


def meeting_time(calendar: dict) -> str | None:
    """``meetingTime`` of a Fineract ``CalendarData`` as ``HH:MM`` (``[10, 0, 0]`` or ``"10:00:00"``)."""
    raw = calendar.get("meetingTime")
    if isinstance(raw, (list, tuple)) and len(raw) >= 2:
        return f"{int(raw[0]):02d}:{int(raw[1]):02d}"
    if isinstance(raw, str) and len(raw) >= 5 and raw[2] == ":":
        return raw[:5]
    return None


def _at(settings) -> dt.time:
    h, _, m = settings.officer_day_at.partition(":")
    return dt.time(int(h), int(m or 0))


def _groups_of(mifos, staff_id: int) -> list[dict]:
    from convo.mifos.notify_reads import groups

    return [g for g in groups(mifos, staff_id) if g.get("staffId") in (None, staff_id)]


def _meetings(mifos, staff_id: int, today: dt.date) -> list[dict]:
    from convo.mifos.client import meeting_from_group
    from convo.mifos.notify_reads import group_with_meetings

    out = []
    for g in _groups_of(mifos, staff_id):
        if g.get("staffId") != staff_id:
            continue
        group = group_with_meetings(mifos, int(g["id"]))
        found = meeting_from_group(group, today)
        if found is None or found.date != today:
            continue
        cal = group.get("collectionMeetingCalendar") or {}
        out.append({"group": found.group_name, "time": meeting_time(cal), "place": found.location})
    return sorted(out, key=lambda m: (m["time"] or "99:99", m["group"]))


def run(services, *, now: dt.datetime | None = None, force: bool = False) -> Report:
    """Write today's officer SMS for every loan officer whose office's morning has come (``force``:
    whatever the time). Safe to call every minute: the outbox key sends each one once a day."""
    from convo.mifos.client import MifosNotFound
    from convo.mifos.notify_reads import (
        groups,
        iter_active_loans,
        loan_currency,
        loan_installments,
        loan_with_schedule,
        staff,
    )
    from convo.notify import messages as notify
    from convo.notify.outbox import enqueue
    from convo.notify.recipients import office_regions
    from convo.text.phone import read_stored

    s = services
    rep = Report()
    now = now or dt.datetime.now(dt.timezone.utc)
    cfg = notify.config_for(s)
    at = _at(s.settings)
    loans_of: dict[int, list[dict]] = defaultdict(list)
    for loan in iter_active_loans(s.mifos):
        if loan.get("loanOfficerId"):
            loans_of[int(loan["loanOfficerId"])].append(loan)
    officers = set(loans_of)
    for g in groups(s.mifos):
        if g.get("staffId"):
            officers.add(int(g["staffId"]))
    regions = office_regions(s)
    locales = notify.flowset_for(s).locales
    for sid in sorted(officers):
        try:
            member = staff(s.mifos, sid)
        except MifosNotFound:
            rep.skipped.append(f"staff {sid}: not in Mifos X")
            continue
        if member.get("isActive") is False:
            rep.skipped.append(f"staff {sid}: not active")
            continue
        office = member.get("officeId")
        phone = read_stored(member.get("mobileNo"), regions(office)) if member.get("mobileNo") else None
        if not phone:
            rep.skipped.append(f"staff {sid}: no mobile number in Mifos X")
            continue
        local = now.astimezone(cfg.timezone(office, s.settings.timezone))
        if not force and local.time() < at:
            rep.not_yet += 1
            continue
        day = OfficerDay(sid, office, local.date())
        key = f"officer-day:{sid}:{day.date.isoformat()}"
        day.meetings = _meetings(s.mifos, sid, day.date)
        for loan in loans_of.get(sid, ()):
            full = loan_with_schedule(s.mifos, loan["id"])
            cur = loan_currency(full or loan).code
            for inst in loan_installments(full):
                if inst.due_date == day.date:
                    day.due_count += 1
                    day.due[cur] += inst.outstanding
                elif inst.due_date < day.date:
                    day.overdue_count += 1
                    day.overdue[cur] += inst.outstanding
        lang = notify.client_language(s, phone, cfg.office(office).language)
        first = member.get("firstname") or (member.get("displayName") or "").split(",")[-1].strip()
        body = notify.render_text(locales, TEXT, lang, {**day.variables(), "first_name": first,
                                                        "name": member.get("displayName") or first})
        t0 = dt.datetime.now(dt.timezone.utc)
        msg = enqueue(s.db, idempotency_key=key, to=phone, body=body, kind="officer", region=regions(office))
        created = msg.created_at if msg.created_at.tzinfo else msg.created_at.replace(tzinfo=dt.timezone.utc)
        if created < t0:
            rep.already += 1
        else:
            rep.written += 1
            rep.texts.append((phone, msg.body))
    return rep


# --------------------------------------------------------------------------- inside `convo worker`
_done: dict[int, frozenset] = {}


def tick(services, now: dt.datetime | None = None) -> Report | None:
    """Called every minute by :class:`convo.jobs.schedule.ReminderSchedule`: a full :func:`run` only when another
    office time zone's morning (``CONVO_OFFICER_DAY_AT``) has come since the last good run of this process,
    so Mifos X is read a few times a day, not every minute. Never raises: a failed run (Mifos X down) is
    logged and tried again at the next tick."""
    from zoneinfo import ZoneInfo

    from convo.notify import messages as notify

    s = services
    if not s.settings.officer_day:
        return None
    now = now or dt.datetime.now(dt.timezone.utc)
    try:
        at = _at(s.settings)
        zones = {o.timezone for o in notify.config_for(s).offices.values() if o.timezone} | {s.settings.timezone}
        ready = frozenset((z, now.astimezone(ZoneInfo(z)).date()) for z in zones
                          if now.astimezone(ZoneInfo(z)).time() >= at)
        if not ready or _done.get(id(s)) == ready:
            return None
        rep = run(s, now=now)
    except Exception:  # noqa: BLE001 - next minute, then
        log.exception("officer's day run failed")
        return None
    _done[id(s)] = ready
    log.info("officer's day: %d written, %d already sent, %d not yet, %d skipped%s", rep.written, rep.already,
             rep.not_yet, len(rep.skipped), f" ({'; '.join(rep.skipped)})" if rep.skipped else "")
    return rep
