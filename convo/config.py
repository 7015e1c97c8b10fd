"""Settings, read once from ``CONVO_*`` environment variables (and an optional ``.env``).

Every knob the operator can turn lives here, with its default. Code takes a
``Settings`` object instead of reading the environment itself, so tests build
one with ``Settings.from_env({...})`` and never touch ``os.environ``.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def _bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


@dataclass(frozen=True)
class Settings:
    #: ``memory://`` = a private in-process fakeredis, ``memory://NAME`` one shared by name (demo);
    #: ``redis://host:6379/0`` = a real server
    redis_url: str = "memory://"
    #: seconds one Redis call may take (connect, or wait for an answer) before the hop gives up and
    #: answers "service unavailable"; well inside the hop budget, never retried on a timeout
    redis_timeout: float = 0.5
    #: SQLAlchemy URL of the outbox / subscribers / audit database
    database_url: str = f"sqlite:///{REPO_ROOT / 'convo.db'}"
    flows_dir: str = str(REPO_ROOT / "flows")
    #: seconds between checks for edited flow files (0 = never reload)
    flows_reload_seconds: float = 2.0
    #: an edited flows folder goes live only if its conversation tests (flows/tests/*.yaml) pass too,
    #: run in the background against the built-in Fineract simulator (lint always runs)
    flows_reload_tests: bool = True
    default_region: str = "KE"
    default_language: str = "en"
    #: first language of a caller by country calling code, until they choose one ("255:sw,221:fr")
    country_languages: str = "255:sw,221:fr,223:fr,225:fr,226:fr,227:fr,228:fr,229:fr,237:fr,243:fr"
    fineract_url: str = "http://127.0.0.1:8443/fineract-provider/api/v1"
    fineract_user: str = "mifos"
    fineract_password: str = "password"
    fineract_tenant: str = "default"
    fineract_verify_tls: bool = True
    #: seconds allowed for one Fineract call on the USSD hop path
    fineract_timeout: float = 2.5
    #: seconds one hop may spend calling Mifos X in all (gateways give up on a USSD hop after a few seconds)
    hop_budget_seconds: float = 3.0
    #: seconds a USSD session lives in Redis after its last hop (carrier sessions last ~180 s)
    ussd_session_ttl: int = 200
    #: seconds of silence after which an SMS dialog expires
    sms_session_timeout: int = 300
    #: seconds the phone -> client and account figures stay cached
    client_cache_ttl: int = 300
    #: seconds balances and amounts due stay cached (a hop inside that window does not call Mifos X)
    figures_cache_ttl: int = 60
    #: seconds the last good answers are kept for when Mifos X is down ("as of <time>")
    last_good_ttl: int = 7 * 86400
    callback_token: str = ""
    #: YAML file naming the gateways and which one sends to which country, cheapest first (README "Gateways");
    #: empty: one gateway ``africastalking`` from the ``CONVO_AT_*`` variables
    routes_file: str = ""
    #: the public base URL providers call (``https://sms.example.org``); signatures over the URL (Twilio)
    #: are checked against it behind a proxy. Empty: the URL of the request as received
    public_url: str = ""
    at_username: str = ""
    at_api_key: str = ""
    at_sender_id: str = ""
    at_base_url: str = ""
    #: seconds Africa's Talking may take to answer one send (plus 3.05 s to connect)
    at_timeout: float = 10.0
    #: outbox worker: rows claimed per batch, seconds a claim (lease) holds - at least
    #: 2 x (3.05 + at_timeout) + 5, or the worker refuses to start -, idle poll interval
    worker_batch: int = 100
    worker_lease_seconds: float = 60.0
    worker_poll_seconds: float = 1.0
    #: send requests one worker has in flight at once (a SIGKILL re-sends at most these)
    worker_concurrency: int = 8
    #: retries: attempts before a message is failed for good, and the backoff between them
    outbox_max_attempts: int = 8
    outbox_retry_base_seconds: float = 30.0
    outbox_retry_max_seconds: float = 3600.0
    log_level: str = "INFO"
    # ---- security (README "Security")
    #: ``production`` makes missing secrets fatal at start (``CONVO_ENV``)
    env: str = "development"
    #: server-side secret mixed into every PIN hash (HMAC key); required in production
    pin_pepper: str = ""
    #: wrong PINs in a row before the subscriber is locked on every channel
    pin_max_attempts: int = 3
    #: minutes a lock lasts (0: until a staff reset)
    pin_lock_minutes: int = 1440
    #: argon2id cost (OWASP: 19 MiB, 2 passes, 1 lane); lower only in tests
    pin_argon2_memory_kib: int = 19456
    pin_argon2_time_cost: int = 2
    #: bearer token of the staff API (``/api/...``); unset = staff API refuses every call;
    #: at least 32 characters in production
    staff_token: str = ""
    #: key that signs the console's session cookie; at least 32 bytes, required in production
    #: (development without it: a random key kept in ``.convo-secret-key`` in the working directory)
    secret_key: str = ""
    #: wrong staff tokens (console sign-in or API bearer) per caller address, and per staff user name,
    #: within ``staff_auth_window_seconds``, before further attempts are refused with 429 (0: no limit)
    staff_auth_failures: int = 10
    staff_auth_window_seconds: int = 900
    #: Mifos X permissions the console asks of a signed-in user (``ALL_FUNCTIONS`` allows all): to view
    #: and find clients, to send them an SMS, to reset or unlock a PIN (README "The console")
    console_perm_view: str = "READ_CLIENT"
    console_perm_send: str = "CREATE_SMS"
    console_perm_pin: str = "UPDATE_CLIENT"
    #: Mifos X permission for the studio (``/console/flows``: diagrams, browser phone, lint, drop-offs)
    studio_permission: str = "ALL_FUNCTIONS"
    #: count per flow version, state and day where dialogs go and end (``convo.dialog.stats``: counted in the
    #: process, written to Redis each second; kept ``flow_stats_days``)
    flow_stats: bool = True
    flow_stats_days: int = 90
    #: the field officer's day: each loan officer with a mobile number in Mifos X gets one SMS a morning
    #: with the day's group meetings and their portfolio's installments due and overdue (README)
    officer_day: bool = False
    #: local time (HH:MM, in each office's time zone) from which the officer's SMS is sent
    officer_day_at: str = "06:30"
    #: comma-separated CIDRs allowed to call ``/gateways/...`` and ``/hooks/...`` (empty: any)
    callback_allow_ips: str = ""
    #: reverse proxies in front of the app that append to X-Forwarded-For (0: trust no header)
    trusted_proxies: int = 0
    #: abuse limits per phone number and hour (0: no limit)
    ussd_sessions_per_hour: int = 30
    sms_inbound_per_hour: int = 60
    sms_replies_per_hour: int = 30
    #: refuse PIN-protected answers for this many days after a SIM swap (0: no check)
    simswap_hold_days: int = 0
    # ---- notifications (README "Notifications")
    #: the MFI's time zone: "as of" times, and for offices notify.yaml does not list quiet hours, the
    #: "today" of reminders and the reminder cron
    timezone: str = "Africa/Nairobi"
    #: when `convo worker` runs the reminders, 5-field cron in ``timezone`` (empty: never; e.g. "0 9 * * *")
    remind_cron: str = ""
    #: receipts for Fineract transactions (false: the MFI turned them off)
    receipts_enabled: bool = True
    # ---- repayments from savings (README "Repaying a loan from savings")
    #: the most one repayment may move, per currency ("KES:100000,TZS:2000000"); ``*`` for any currency
    #: not listed; a currency with no cap (and no ``*``) is not capped; empty: no cap at all
    repay_max_amount: str = "KES:100000,UGX:3000000,TZS:2000000,XOF:500000"

    @property
    def production(self) -> bool:
        return self.env.strip().lower() in ("production", "prod")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from ``CONVO_<FIELD>`` variables; unknown fields keep defaults."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get("CONVO_" + f.name.upper())
            if raw is None:
                continue
            if f.type in ("bool", bool):
                values[f.name] = _bool(raw)
            elif f.type in ("int", int):
                values[f.name] = int(raw)
            elif f.type in ("float", float):
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        values.update(overrides)
        settings = cls(**values)
        settings.repay_cap("*")  # a malformed CONVO_REPAY_MAX_AMOUNT stops the start, not a repayment
        return settings

    def repay_cap(self, currency: str) -> Decimal | None:
        """The most one repayment in ``currency`` may move (``repay_max_amount``), or None: no cap."""
        caps = _amount_caps(self.repay_max_amount)
        return caps.get(currency.upper(), caps.get("*"))

    def replace(self, **changes) -> "Settings":
        return replace(self, **changes)


@lru_cache(maxsize=8)
def _amount_caps(text: str) -> dict[str, Decimal]:
    """``"KES:100000, TZS:2000000, *:500"`` -> {"KES": Decimal("100000"), ...}; a clear ValueError if malformed."""
    caps = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        code, _, amount = part.partition(":")
        code = code.strip().upper()
        try:
            value = Decimal(amount.strip()) if amount.strip().isascii() else None
        except InvalidOperation:
            value = None
        if not (code == "*" or (len(code) == 3 and code.isascii() and code.isalpha())) \
                or value is None or not value.is_finite() or value <= 0:
            raise ValueError(f"CONVO_REPAY_MAX_AMOUNT: {part!r} is not CURRENCY:AMOUNT (e.g. KES:100000)")
        caps[code] = value
    return caps


def load_dotenv_if_present(path: str | os.PathLike | None = None) -> None:
    """Load ``.env`` from the working directory (never overriding real env vars)."""
    from dotenv import load_dotenv

    load_dotenv(path or Path.cwd() / ".env", override=False)
