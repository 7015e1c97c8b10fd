"""Notifications: texts from the locale files, quiet hours, sending to clients, staff alerts by rules.

Everything here ends in :func:`convo.notify.outbox.enqueue` (one idempotency key per
cause), so the worker sends it, retries it and records its delivery.

Configuration lives next to the flows (product managers own it, ``convo lint``
checks it, the running service picks up edits like flow edits):

* ``flows/notify.yaml`` (:class:`NotifyConfig`): quiet hours, reminder days,
  office time zones / phone regions / contacts, staff message templates,
  the segment limits lint enforces;
* ``flows/alerts.yaml`` (:class:`AlertRule`): "when EVENT [if CONDITION] → SMS
  these staff with this text";
* texts: ``notify.*`` keys of ``flows/locales/<lang>.yaml``. :data:`TEMPLATES`
  says which variables each notification gives its text.

Entry points: :func:`send_to_client` (staff messages, reminders, receipts),
:func:`alert` (``notify.alert(services, event="pin_locked", phone=..., client_id=...)``),
:func:`lint` (``convo lint``).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo
from zoneinfo import ZoneInfoNotFoundError as ZoneInfoNotAvailableError

import sqlalchemy as sa
from sqlalchemy.orm import Session

from convo.text import sms, templates
from convo.yamlfiles import FlowError, Where, line_of, load_yaml

log = logging.getLogger("convo.notify.messages")

__all__ = [
    "EVENTS", "TEMPLATES", "AlertRule", "NotifyConfig", "alert", "client_language", "lint",
    "load_config", "not_before", "render_text", "send_to_client",
]

NOTIFY_FILE = "notify.yaml"
ALERTS_FILE = "alerts.yaml"

# --------------------------------------------------------------------------- what each text may use

_CLIENT = {"first_name", "name", "lang"}
#: locale key → variables that notification gives its text (``lang`` is always there)
TEMPLATES: dict[str, set[str]] = {
    "notify.reminder.due_soon": _CLIENT | {"account_no", "product", "amount", "currency", "due_date", "days",
                                            "overdue", "keyword"},
    "notify.reminder.due_today": _CLIENT | {"account_no", "product", "amount", "currency", "due_date", "days",
                                             "overdue", "keyword"},
    "notify.reminder.overdue": _CLIENT | {"account_no", "product", "amount", "currency", "due_date", "days",
                                           "overdue", "keyword"},
    "notify.meeting.tomorrow": _CLIENT | {"group_name", "center_name", "location", "date", "days"},
    "notify.officer.day": _CLIENT | {"date", "meetings", "due_count", "due_total", "overdue_count",
                                      "overdue_total", "currency"},      # convo.notify.officer_day
    "notify.receipt.loan_repayment": _CLIENT | {"amount", "currency", "account_no", "balance", "reference", "date"},
    "notify.receipt.loan_disbursal": _CLIENT | {"amount", "currency", "account_no", "balance", "reference", "date"},
    "notify.receipt.savings_deposit": _CLIENT | {"amount", "currency", "account_no", "balance", "reference",
                                                  "date"},
    "notify.receipt.savings_withdrawal": _CLIENT | {"amount", "currency", "account_no", "balance", "reference",
                                                     "date"},
}

_TX = {"client_id", "client_name", "office_id", "loan_officer_id", "amount", "currency", "account_no", "balance",
       "reference", "date"}
#: alert event → facts it carries (the rule's condition and text may use these, and ``lang``)
EVENTS: dict[str, set[str]] = {
    "loan_overdue": {"client_id", "client_name", "office_id", "loan_officer_id", "loan_id", "account_no",
                     "product", "amount_overdue", "currency", "days_overdue", "oldest_due_date"},
    "loan_disbursed": _TX | {"loan_id"},
    "loan_repayment": _TX | {"loan_id"},
    "savings_deposit": _TX | {"savings_id"},
    "savings_withdrawal": _TX | {"savings_id"},
    "pin_locked": {"phone", "client_id", "client_name", "office_id", "channel", "locked_until"},
    #: an edited flows folder the running service refused (convo.flowlang.compiler.FlowLibrary)
    "flows_refused": {"version", "count", "first_error"},
}

#: values lint renders every text with: long, realistic, to measure the worst case in segments
SAMPLES: dict[str, Any] = {
    "first_name": "Wanjiku", "name": "Wanjiku Muthoni Ndungu", "client_name": "Wanjiku Muthoni Ndungu",
    "account_no": "000000201", "product": "Biashara Flat 6M", "amount": Decimal("125400.00"),
    "amount_overdue": Decimal("125400.00"), "overdue": Decimal("12540.00"), "balance": Decimal("1254000.00"),
    "currency": "KES", "due_date": dt.date(2024, 9, 30), "date": dt.date(2024, 9, 30),
    "oldest_due_date": dt.date(2024, 9, 30), "days": 3, "days_overdue": 12, "reference": "RCP-2024-000123",
    "group_name": "Tumaini Self-Help Group", "center_name": "Umoja Center", "location": "Kariobangi Social Hall",
    "client_id": 1234, "office_id": 2, "loan_officer_id": 2, "loan_id": 201, "savings_id": 101,
    "phone": "+254700000101", "channel": "ussd", "locked_until": "2024-09-30 10:00",
    "meetings": [{"group": "Tumaini Self-Help Group", "time": "10:00", "place": "Kariobangi Social Hall"},
                 {"group": "Umoja Women Group", "time": "14:30", "place": "Eastlands Market Shed"}],
    "due_count": 12, "due_total": Decimal("125400.00"), "overdue_count": 4, "overdue_total": Decimal("48200.00"),
    "keyword": "ECHEANCE",
}


# --------------------------------------------------------------------------- configuration


@dataclass
class Office:
    timezone: str | None = None
    region: str | None = None
    language: str | None = None
    #: contact name (manager, branch, ...) → recipients (phone strings or {"staff": id})
    contacts: dict[str, list] = field(default_factory=dict)


@dataclass
class AlertRule:
    name: str
    event: str
    text: str
    to: list                       # "loan_officer" | {"staff": id} | {"phone": "+..."} | {"office": contact}
    condition: str | None = None
    line: int = 1
    file: str = ALERTS_FILE
    compiled: Any = None           # jinja compiled expression

    def applies(self, facts: dict) -> bool:
        if self.compiled is None:
            return True
        return bool(self.compiled(**facts))


@dataclass
class NotifyConfig:
    quiet_start: dt.time = dt.time(20, 0)
    quiet_end: dt.time = dt.time(8, 0)
    due_in_days: tuple[int, ...] = (3, 0)
    overdue_days: tuple[int, ...] = (1, 7)
    meeting_days_before: tuple[int, ...] = (1,)
    receipts: bool = True
    warn_segments: int = 1
    max_segments: int = 3
    offices: dict[int, Office] = field(default_factory=dict)
    staff_templates: dict[str, set[str]] = field(default_factory=dict)
    rules: list[AlertRule] = field(default_factory=list)
    version: str = ""

    def office(self, office_id) -> Office:
        try:
            return self.offices.get(int(office_id), Office()) if office_id is not None else Office()
        except (TypeError, ValueError):
            return Office()

    def timezone(self, office_id, default: str) -> ZoneInfo:
        return ZoneInfo(self.office(office_id).timezone or default)

    def region(self, office_id, default: str) -> str:
        return self.office(office_id).region or default

    def template_variables(self, key: str) -> set[str] | None:
        """Variables a ``notify.*`` text may use; None for a key no notification uses."""
        if key in TEMPLATES:
            return TEMPLATES[key]
        if key.startswith("notify.staff."):
            return _CLIENT | self.staff_templates.get(key[len("notify.staff."):], set())
        if key.startswith("notify.alert."):
            users = [r for r in self.rules if r.text == key]
            if users:
                facts = set.intersection(*(EVENTS[r.event] for r in users))
            else:
                facts = set().union(*EVENTS.values())
            return facts | {"lang"}
        return None


def _time(value: Any, where: Where, errors: list[FlowError]) -> dt.time | None:
    try:
        h, m = str(value).split(":")
        return dt.time(int(h), int(m))
    except (ValueError, TypeError):
        errors.append(FlowError(where, f"'{value}' is not a time of day (HH:MM)"))
        return None


def _days(value: Any, where: Where, errors: list[FlowError], what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 365
                                              for v in value):
        errors.append(FlowError(where, f"{what}: a list of whole days (0-365) expected, e.g. [3, 0]"))
        return ()
    return tuple(sorted(set(value), reverse=True))


def _check_zone(name: Any, where: Where, errors: list[FlowError]) -> str | None:
    try:
        ZoneInfo(str(name))
        return str(name)
    except (ZoneInfoNotAvailableError, ValueError, TypeError):
        errors.append(FlowError(where, f"unknown time zone '{name}' (use an IANA name such as Africa/Nairobi)"))
        return None


_NOTIFY_KEYS = {"quiet_hours", "reminders", "receipts", "limits", "offices", "staff_templates"}
_RECIPIENT_HELP = "a recipient is loan_officer, {staff: ID}, {phone: '+254...'} or {office: CONTACT}"


def _recipient_ok(r: Any, contacts: set[str]) -> str | None:
    """None when ``r`` is a valid recipient, else the problem."""
    if r == "loan_officer":
        return None
    if isinstance(r, dict) and len(r) == 1:
        (k, v), = r.items()
        if k == "staff" and isinstance(v, int) and not isinstance(v, bool):
            return None
        if k == "phone" and isinstance(v, str):
            from convo.text.phone import InvalidPhone, normalize

            try:
                normalize(v, "KE")
                return None
            except (InvalidPhone, ValueError):
                return f"'{v}' is not a phone number"
        if k == "office" and isinstance(v, str):
            return None if v in contacts or not contacts else \
                f"no office contact '{v}' in notify.yaml (have: {', '.join(sorted(contacts))})"
    return f"bad recipient {r!r}: {_RECIPIENT_HELP}"


def _office_contact_ok(r: Any) -> bool:
    if isinstance(r, str):
        return True
    return isinstance(r, dict) and set(r) == {"staff"} and isinstance(r["staff"], int)


def load_config(directory: str | Path, env=None) -> NotifyConfig:
    """Read and validate ``notify.yaml`` and ``alerts.yaml`` in the flows ``directory``.

    Both are optional (defaults apply). Raises :class:`convo.flowlang.spec.FlowValidationError`
    listing every problem with file and line.
    """
    from convo.yamlfiles import FlowValidationError

    directory = Path(directory)
    env = env or templates.make_env()
    errors: list[FlowError] = []
    cfg = NotifyConfig()
    digest = hashlib.sha256()
    contacts: set[str] = set()

    def rel(name: str) -> str:
        p = directory / name
        try:
            return str(p.relative_to(directory.parent))
        except ValueError:
            return str(p)

    path = directory / NOTIFY_FILE
    if path.exists():
        text = path.read_text(encoding="utf-8")
        digest.update(text.encode())
        file = rel(NOTIFY_FILE)
        try:
            doc = load_yaml(text, file) or {}
        except FlowError as e:
            raise FlowValidationError([e]) from None
        if not isinstance(doc, dict):
            raise FlowValidationError([FlowError(Where(file, 1), "notify.yaml must be a mapping")])
        at = lambda obj, key=None: Where(file, line_of(obj, key))  # noqa: E731
        for k in doc:
            if k not in _NOTIFY_KEYS:
                errors.append(FlowError(at(doc, k), f"unknown key '{k}' (known: {', '.join(sorted(_NOTIFY_KEYS))})"))
        qh = doc.get("quiet_hours")
        if qh is not None:
            if not isinstance(qh, dict) or set(qh) - {"start", "end"}:
                errors.append(FlowError(at(doc, "quiet_hours"), "quiet_hours: {start: 'HH:MM', end: 'HH:MM'}"))
            else:
                cfg.quiet_start = _time(qh.get("start", "20:00"), at(qh, "start"), errors) or cfg.quiet_start
                cfg.quiet_end = _time(qh.get("end", "08:00"), at(qh, "end"), errors) or cfg.quiet_end
        rem = doc.get("reminders") or {}
        if not isinstance(rem, dict):
            errors.append(FlowError(at(doc, "reminders"), "reminders must be a mapping"))
            rem = {}
        for k in rem:
            if k not in ("due_in_days", "overdue_days", "meeting_days_before"):
                errors.append(FlowError(at(rem, k), f"reminders: unknown key '{k}' "
                                                    "(due_in_days, overdue_days, meeting_days_before)"))
        if "due_in_days" in rem:
            cfg.due_in_days = _days(rem["due_in_days"], at(rem, "due_in_days"), errors, "due_in_days")
        if "overdue_days" in rem:
            cfg.overdue_days = tuple(d for d in _days(rem["overdue_days"], at(rem, "overdue_days"), errors,
                                                      "overdue_days") if d > 0)
        if "meeting_days_before" in rem:
            v = rem["meeting_days_before"]
            cfg.meeting_days_before = _days(v if isinstance(v, list) else [v], at(rem, "meeting_days_before"),
                                            errors, "meeting_days_before")
        rc = doc.get("receipts")
        if rc is not None:
            if not isinstance(rc, dict) or not isinstance(rc.get("enabled", True), bool):
                errors.append(FlowError(at(doc, "receipts"), "receipts: {enabled: true|false}"))
            else:
                cfg.receipts = rc.get("enabled", True)
        lim = doc.get("limits") or {}
        for k, v in (lim.items() if isinstance(lim, dict) else []):
            if k not in ("warn_segments", "max_segments") or not isinstance(v, int) or v < 1:
                errors.append(FlowError(at(lim, k), f"limits: '{k}' must be warn_segments or max_segments, >= 1"))
            else:
                setattr(cfg, k, v)
        offices = doc.get("offices") or {}
        for oid, o in (offices.items() if isinstance(offices, dict) else []):
            w = at(offices, oid)
            if not str(oid).isdigit() or not isinstance(o, dict):
                errors.append(FlowError(w, f"offices: '{oid}' must be a Mifos X office id with settings"))
                continue
            off = Office()
            for k, v in o.items():
                if k == "timezone":
                    off.timezone = _check_zone(v, at(o, k), errors)
                elif k == "region":
                    if not (isinstance(v, str) and len(v) == 2 and v.isupper()):
                        errors.append(FlowError(at(o, k), f"region '{v}' is not a country code like KE"))
                    off.region = str(v)
                elif k == "language":
                    off.language = str(v)
                elif k == "contacts" and isinstance(v, dict):
                    for name, lst in v.items():
                        lst = lst if isinstance(lst, list) else [lst]
                        if not all(_office_contact_ok(r) for r in lst):
                            errors.append(FlowError(at(v, name), f"contacts.{name}: phone numbers or {{staff: ID}}"))
                        off.contacts[str(name)] = list(lst)
                        contacts.add(str(name))
                else:
                    errors.append(FlowError(at(o, k), f"offices.{oid}: unknown key '{k}' "
                                                      "(timezone, region, language, contacts)"))
            cfg.offices[int(oid)] = off
        st = doc.get("staff_templates") or {}
        for name, vars_ in (st.items() if isinstance(st, dict) else []):
            if not isinstance(vars_, list) or not all(isinstance(v, str) for v in vars_):
                errors.append(FlowError(at(st, name), f"staff_templates.{name}: a list of variable names"))
                continue
            cfg.staff_templates[str(name)] = set(vars_)

    path = directory / ALERTS_FILE
    if path.exists():
        text = path.read_text(encoding="utf-8")
        digest.update(b"\0" + text.encode())
        file = rel(ALERTS_FILE)
        try:
            doc = load_yaml(text, file) or {}
        except FlowError as e:
            raise FlowValidationError(errors + [e]) from None
        rules = doc.get("alerts") if isinstance(doc, dict) else None
        if rules is None or not isinstance(rules, list):
            errors.append(FlowError(Where(file, 1), "alerts.yaml: a list under 'alerts:' expected"))
            rules = []
        names: set[str] = set()
        for i, r in enumerate(rules):
            line = rules.item_lines[i] if hasattr(rules, "item_lines") else 1
            w = Where(file, line)
            if not isinstance(r, dict):
                errors.append(FlowError(w, "an alert rule is a mapping (name, when, if, to, text)"))
                continue
            name = r.get("name") or f"rule{i + 1}"
            for k in r:
                if k not in ("name", "when", "if", "to", "text"):
                    errors.append(FlowError(Where(file, line_of(r, k)), f"alert '{name}': unknown key '{k}' "
                                                                         "(name, when, if, to, text)"))
            if name in names:
                errors.append(FlowError(w, f"alert '{name}' is defined twice"))
            names.add(name)
            event = r.get("when")
            if event not in EVENTS:
                known = ", ".join(sorted(EVENTS))
                errors.append(FlowError(Where(file, line_of(r, "when")),
                                        f"alert '{name}': unknown event '{event}' (known: {known})"))
                continue
            to = r.get("to")
            to = to if isinstance(to, list) else [to] if to is not None else []
            if not to:
                errors.append(FlowError(w, f"alert '{name}': 'to' names no recipient ({_RECIPIENT_HELP})"))
            for rc in to:
                problem = _recipient_ok(rc, contacts)
                if problem:
                    errors.append(FlowError(Where(file, line_of(r, "to")), f"alert '{name}': {problem}"))
            text_key = r.get("text")
            if not isinstance(text_key, str) or not text_key.startswith("notify.alert."):
                errors.append(FlowError(Where(file, line_of(r, "text")),
                                        f"alert '{name}': text must be a locale key under notify.alert."))
                continue
            rule = AlertRule(name=name, event=event, text=text_key, to=list(to), line=line, file=file)
            cond = r.get("if")
            if cond is not None:
                cond = str(cond)
                try:
                    rule.compiled = env.compile_expression(cond)
                    unknown = templates.template_variables(env, "{{ " + cond + " }}") - EVENTS[event] - {"lang"}
                    if unknown:
                        errors.append(FlowError(Where(file, line_of(r, "if")),
                                                f"alert '{name}': condition uses {', '.join(sorted(unknown))}, "
                                                f"not a fact of '{event}' ({', '.join(sorted(EVENTS[event]))})"))
                except Exception as e:  # noqa: BLE001 - jinja syntax errors of many kinds
                    errors.append(FlowError(Where(file, line_of(r, "if")), f"alert '{name}': bad condition: {e}"))
                rule.condition = cond
            cfg.rules.append(rule)
    if errors:
        raise FlowValidationError(errors)
    cfg.version = digest.hexdigest()[:16]
    return cfg


class _ConfigCache:
    """The last good configuration per flows directory; reloaded when the files change."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_dir: dict[str, tuple[tuple, NotifyConfig]] = {}

    def get(self, directory: str | Path) -> NotifyConfig:
        directory = Path(directory)
        stamp = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in
                      (directory / NOTIFY_FILE, directory / ALERTS_FILE) if p.exists())
        with self._lock:
            hit = self._by_dir.get(str(directory))
            if hit and hit[0] == stamp:
                return hit[1]
            try:
                cfg = load_config(directory)
            except Exception as e:  # noqa: BLE001 - a bad edit never takes the notifications down
                if hit:
                    log.error("notify configuration refused, keeping the last good one: %s", e)
                    return hit[1]
                raise
            self._by_dir[str(directory)] = (stamp, cfg)
            return cfg


_configs = _ConfigCache()


def config_for(services) -> NotifyConfig:
    return _configs.get(services.settings.flows_dir)


# --------------------------------------------------------------------------- texts

_env = templates.make_env()
_compiled: dict[tuple[str, str, str], Any] = {}
_compiled_lock = threading.Lock()


def flowset_for(services):
    lib = services.flows
    try:
        lib.maybe_reload()
    except Exception:  # noqa: BLE001
        pass
    return lib.current


def render_text(locales, key: str, lang: str, variables: dict) -> str:
    """Render locale text ``key`` in ``lang`` (falls back to ``en``, then the first language)."""
    langs = locales.languages
    use = lang if locales.has(lang, key) else ("en" if locales.has("en", key) else next(
        (l for l in langs if locales.has(l, key)), None))
    if use is None:
        raise KeyError(f"no text '{key}' in any locale")
    ident = (locales.content_hash(), use, key)
    tpl = _compiled.get(ident)
    if tpl is None:
        with _compiled_lock:
            tpl = _compiled.get(ident) or templates.compile_template(_env, locales.source(use, key),
                                                                     name=f"{use}:{key}")
            _compiled[ident] = tpl
    return tpl.render({**variables, "lang": use}).strip()


def client_language(services, phone_e164: str | None, office_lang: str | None = None) -> str:
    """The subscriber's language (``subscribers.language``, set by the language menu), else the office's,
    else ``CONVO_DEFAULT_LANGUAGE``."""
    default = office_lang or services.settings.default_language
    if not phone_e164:
        return default
    try:
        with services.db.connect() as c:
            lang = c.execute(sa.text("SELECT language FROM subscribers WHERE phone = :p"),
                             {"p": phone_e164}).scalar()
    except sa.exc.SQLAlchemyError:
        return default  # no subscribers table yet
    return lang or default


# --------------------------------------------------------------------------- quiet hours


def in_quiet_hours(local: dt.time, start: dt.time, end: dt.time) -> bool:
    if start == end:
        return False
    if start < end:
        return start <= local < end
    return local >= start or local < end


def not_before(now_utc: dt.datetime, tz: ZoneInfo, start: dt.time, end: dt.time) -> dt.datetime | None:
    """When a message written at ``now_utc`` may go out: None (now) outside quiet hours, else the
    end of the quiet hours in the office's time zone, as aware UTC."""
    local = now_utc.astimezone(tz)
    if not in_quiet_hours(local.time(), start, end):
        return None
    day = local.date()
    if local.time() >= end and start > end:  # evening part of an overnight window: tomorrow morning
        day += dt.timedelta(days=1)
    wake = dt.datetime.combine(day, end, tzinfo=tz)
    if wake <= local:
        wake += dt.timedelta(days=1)
    return wake.astimezone(dt.timezone.utc)


# --------------------------------------------------------------------------- sending


def insert_for(s):
    from convo.notify.outbox import insert_for as pick

    return pick(s)


def send_to_client(services, *, client_id: int, phone: str, key: str | None, variables: dict,
                   kind: str, idempotency_key: str, sent_by: str | None = None, text: str | None = None,
                   lang: str | None = None, region: str | None = None, quiet: dt.datetime | None = None,
                   requested_by_client: bool = False, locales=None):
    """Render ``key`` (or take free ``text``) and write it to the outbox plus a ``client_messages`` row.

    Idempotent on ``idempotency_key``: a second call returns the first row.
    ``quiet`` is the ``not_before`` time (quiet hours), None to send now.
    """
    from convo.notify.outbox import enqueue
    from convo.store.notify_models import ClientMessage

    region = region or services.settings.default_region
    if text is None:
        assert key is not None, "send_to_client needs a key or a text"
        locales = locales or flowset_for(services).locales
        text = render_text(locales, key, lang or services.settings.default_language, variables)
    with Session(services.db, expire_on_commit=False) as s:
        msg = enqueue(s, idempotency_key=idempotency_key, to=phone, body=text, kind=kind, region=region,
                      not_before=quiet, requested_by_client=requested_by_client)
        ins = insert_for(s)
        s.execute(ins(ClientMessage.__table__).values(
            outbox_id=msg.id, client_id=int(client_id), kind=kind, template=key, sent_by=sent_by,
            created_at=msg.created_at).on_conflict_do_nothing(index_elements=["outbox_id"]))
        s.commit()
        return msg


def _facts_key(facts: dict) -> str:
    raw = json.dumps({k: str(v) for k, v in sorted(facts.items())}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


def _resolve(services, cfg: NotifyConfig, recipient, facts: dict) -> list[str]:
    from convo.mifos.notify_reads import staff_mobile

    if recipient == "loan_officer":
        sid = facts.get("loan_officer_id")
        found = staff_mobile(services.mifos, sid) if sid else None
        return [found] if found else []
    (k, v), = recipient.items()
    if k == "phone":
        return [v]
    if k == "staff":
        found = staff_mobile(services.mifos, v)
        return [found] if found else []
    if k == "office":
        out = []
        for c in cfg.office(facts.get("office_id")).contacts.get(v, []):
            out.extend(_resolve(services, cfg, c if isinstance(c, dict) else {"phone": c}, facts))
        return out
    return []


def alert(services, event: str, key: str | None = None, **facts) -> list:
    """Fire the alert rules of ``event`` with ``facts``; returns the outbox rows written.

    Never raises (the caller, e.g. the PIN lockout, must go on): problems are
    logged. ``key`` names the occurrence (e.g. ``"loan:29:2024-04-15"``); two
    calls with the same key send once; without a key the facts make it.
    Opted-out staff numbers are suppressed like any other.
    Example: ``notify.alert(services, event="pin_locked", phone="+2547...", client_id=1, office_id=2,
    channel="ussd", locked_until="2024-05-01 10:00")``.
    """
    if event not in EVENTS:
        log.error("alert: unknown event %r", event)
        return []
    sent = []
    try:
        cfg = config_for(services)
        rules = [r for r in cfg.rules if r.event == event]
        if not rules:
            return []
        locales = flowset_for(services).locales
        ctx = {k: None for k in EVENTS[event]}
        ctx.update(facts)
        occurrence = key or _facts_key(facts)
        for rule in rules:
            try:
                if not rule.applies(ctx):
                    continue
            except Exception:  # noqa: BLE001 - a condition that cannot be evaluated on these facts
                log.exception("alert %s: condition %r failed on %s", rule.name, rule.condition, event)
                continue
            office = cfg.office(ctx.get("office_id"))
            lang = office.language or services.settings.default_language
            body = render_text(locales, rule.text, lang, ctx)
            phones: list[str] = []
            for r in rule.to:
                try:
                    phones.extend(p for p in _resolve(services, cfg, r, ctx) if p not in phones)
                except Exception:  # noqa: BLE001 - Mifos X down: the other recipients still get it
                    log.exception("alert %s: cannot resolve recipient %r", rule.name, r)
            from convo.notify.outbox import enqueue
            from convo.notify.recipients import office_regions

            try:                    # numbers without a country code: the office's country, as for clients
                region = office_regions(services)(ctx.get("office_id"))
            except Exception:  # noqa: BLE001 - office tree unreadable: only numbers with a country code go
                log.warning("alert %s: cannot tell office %s's country; national numbers skipped",
                            rule.name, ctx.get("office_id"))
                region = None
            for phone in phones:
                try:
                    # region None: numbers without a country code are refused (phonenumbers takes None);
                    # enqueue's annotation (outbox.py) says str
                    sent.append(enqueue(services.db, idempotency_key=f"alert:{rule.name}:{occurrence}:{phone}"[:200],
                                        to=phone, body=body, kind="alert",
                                        region=region))  # type: ignore[arg-type]
                except ValueError:
                    log.warning("alert %s: bad recipient number %r", rule.name, phone)
    except Exception:  # noqa: BLE001
        log.exception("alert %s failed", event)
    return sent


# --------------------------------------------------------------------------- lint


@dataclass
class LintReport:
    errors: list[FlowError] = field(default_factory=list)
    warnings: list[FlowError] = field(default_factory=list)


def lint(directory: str | Path, locales) -> LintReport:
    """Check ``notify.yaml``, ``alerts.yaml`` and every ``notify.*`` text in every language:
    unknown variables (errors), texts no notification uses (errors), texts the alert
    rules name that do not exist (errors), length in SMS segments above
    ``limits.max_segments`` (errors) or ``warn_segments`` (warnings), UCS-2 texts (warnings)."""
    from convo.yamlfiles import FlowValidationError

    rep = LintReport()
    try:
        cfg = load_config(directory)
    except FlowValidationError as e:
        rep.errors.extend(e.errors)
        return rep
    for rule in cfg.rules:
        if not any(locales.has(l, rule.text) for l in locales.languages):
            rep.errors.append(FlowError(Where(rule.file, rule.line),
                                        f"alert '{rule.name}': no text '{rule.text}' in the locale files"))
    for key in TEMPLATES:
        if not any(locales.has(l, key) for l in locales.languages):
            rep.errors.append(FlowError(Where(str(Path(directory) / "locales"), 1),
                                        f"text '{key}' is missing (a notification uses it)"))
    for lang in locales.languages:
        for key in sorted(k for k in locales.keys(lang) if k.startswith("notify.")):
            file, line = locales.where(lang, key)
            w = Where(file, line)
            allowed = cfg.template_variables(key)
            if allowed is None:
                rep.errors.append(FlowError(w, f"text '{key}' ({lang}): no notification uses this key"))
                continue
            src = locales.source(lang, key)
            try:
                used = templates.template_variables(_env, src)
            except templates.TemplateError as e:
                rep.errors.append(FlowError(w, f"text '{key}' ({lang}): {e.message}"))
                continue
            unknown = used - allowed
            if unknown:
                rep.errors.append(FlowError(w, f"text '{key}' ({lang}): unknown variable(s) "
                                               f"{', '.join(sorted(unknown))}; it has {', '.join(sorted(allowed))}"))
                continue
            sample = {v: SAMPLES.get(v, "X" * 12) for v in allowed}
            try:
                tpl = templates.compile_template(_env, src, name=key)
                body = sms.to_gsm(tpl.render({**sample, "lang": lang}).strip())
            except Exception as e:  # noqa: BLE001
                rep.errors.append(FlowError(w, f"text '{key}' ({lang}): cannot render with sample values: {e}"))
                continue
            info = sms.sms_info(body)
            what = f"text '{key}' ({lang}): {info.segments} SMS segment(s), {info.chars} {info.encoding} characters"
            if info.encoding != "GSM-7":
                bad = sorted({c for c in body if not sms.is_gsm(c)})
                rep.warnings.append(FlowError(w, f"{what}: UCS-2 because of {' '.join(bad)} "
                                                 "(70 per SMS instead of 160)"))
            if info.segments > cfg.max_segments:
                rep.errors.append(FlowError(w, f"{what}, more than the limit of {cfg.max_segments}"))
            elif info.segments > cfg.warn_segments:
                rep.warnings.append(FlowError(w, f"{what} (more than {cfg.warn_segments})"))
    return rep
