"""Security primitives: PIN hashing, weak-PIN rules, redaction, caller IPs, rate limits.

PIN hashing: ``argon2id(HMAC-SHA256(pepper, pin))``. The pepper
(``CONVO_PIN_PEPPER``) never leaves the server's configuration, so a stolen
database alone cannot be brute-forced even though PINs have only 10^4-10^6
values; argon2id (OWASP parameters: 19 MiB, 2 passes, 1 lane) makes each
guess expensive when both leak. Verification is argon2's own constant-time
comparison; a missing hash is checked against a dummy hash so the time taken
does not say whether a PIN is set.

Nothing in this module logs its inputs.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import time
from functools import lru_cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

log = logging.getLogger(__name__)

DEV_PEPPER = "convo-development-pepper-not-for-production"
MIN_PRODUCTION_PEPPER = 16
MIN_STAFF_TOKEN = 32       # characters of CONVO_STAFF_TOKEN in production
MIN_SECRET_KEY = 32        # bytes of CONVO_SECRET_KEY in production


#: database passwords of examples and compose defaults, refused in production
DEFAULT_DB_PASSWORDS = frozenset({"convo", "postgres", "password", "mysql", "changeme", "change_me", "secret"})
#: host names of the Fineract simulator (docker-compose.yml `demo` profile), refused in production
SIMULATOR_HOSTS = frozenset({"fineract-sim"})


def _database_password(url: str) -> str | None:
    """The password in a SQLAlchemy URL; None when it has none (sqlite, peer or IAM authentication)."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - a malformed URL fails later, where it is used
        return None
    if parsed.get_backend_name() == "sqlite" or parsed.username is None:
        return None
    return parsed.password


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return (urlsplit(url or "").hostname or "").lower()


class ConfigurationError(RuntimeError):
    """The service must not start with this configuration."""


def check_production_settings(settings) -> None:
    """Refuse to start in production without the secrets production needs."""
    if not settings.production:
        if not settings.pin_pepper:
            log.warning("CONVO_PIN_PEPPER is not set: PINs are hashed with a development pepper "
                        "(fine for the demo, refused when CONVO_ENV=production)")
        return
    if len(settings.pin_pepper or "") < MIN_PRODUCTION_PEPPER:
        raise ConfigurationError(
            "CONVO_ENV=production needs CONVO_PIN_PEPPER: a random secret of at least "
            f"{MIN_PRODUCTION_PEPPER} characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`). "
            "Keep it out of the database; changing it invalidates every PIN.")
    if len(settings.callback_token or "") < MIN_PRODUCTION_PEPPER:
        # Africa's Talking does not sign its callbacks: without the token anyone can post a USSD hop for any number
        raise ConfigurationError(
            "CONVO_ENV=production needs CONVO_CALLBACK_TOKEN: a random secret of at least "
            f"{MIN_PRODUCTION_PEPPER} characters, given as ?token=... in every callback URL set at the gateway "
            "and in Fineract's hook Payload URL")
    if settings.staff_token and len(settings.staff_token) < MIN_STAFF_TOKEN:
        raise ConfigurationError(
            f"CONVO_STAFF_TOKEN is shorter than {MIN_STAFF_TOKEN} characters: too easy to guess for production "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`), or leave it empty to "
            "close the staff API and console")
    if settings.pin_pepper == DEV_PEPPER:
        raise ConfigurationError("CONVO_PIN_PEPPER is the development pepper: set a secret of your own")
    password = _database_password(settings.database_url)
    if password is not None and str(password).lower() in DEFAULT_DB_PASSWORDS:
        raise ConfigurationError(
            "CONVO_ENV=production and CONVO_DATABASE_URL uses a default password (POSTGRES_PASSWORD): "
            "set a random one (`python -c 'import secrets; print(secrets.token_urlsafe(24))'`)")
    if _host(settings.fineract_url) in SIMULATOR_HOSTS:
        raise ConfigurationError(
            "CONVO_ENV=production and CONVO_FINERACT_URL points at the Fineract simulator: set your Mifos X "
            "(the simulator answers made-up clients and balances; it runs only in the compose `demo` profile)")
    if len((settings.secret_key or "").encode()) < MIN_SECRET_KEY:
        raise ConfigurationError(
            f"CONVO_ENV=production needs CONVO_SECRET_KEY: a random secret of at least {MIN_SECRET_KEY} bytes "
            "that signs the console's cookies (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`); "
            "the same on every instance, never the staff token")


# --------------------------------------------------------------------------- PIN hashing
class PinHasher:
    def __init__(self, pepper: str, memory_kib: int = 19456, time_cost: int = 2):
        self._key = (pepper or DEV_PEPPER).encode()
        self._ph = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1,
                                  hash_len=32, salt_len=16, type=Type.ID)
        self._dummy = self._ph.hash(b"\0" * 32)

    @classmethod
    def from_settings(cls, settings) -> "PinHasher":
        return _hasher(settings.pin_pepper, settings.pin_argon2_memory_kib, settings.pin_argon2_time_cost)

    def _peppered(self, pin: str) -> bytes:
        return hmac.new(self._key, pin.encode(), hashlib.sha256).digest()

    def hash(self, pin: str) -> str:
        return self._ph.hash(self._peppered(pin))

    def verify(self, encoded: str | None, pin: str) -> bool:
        """Constant-time check; False for a wrong PIN, a missing or a corrupt hash."""
        try:
            return self._ph.verify(encoded or self._dummy, self._peppered(pin)) and encoded is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, encoded: str) -> bool:
        try:
            return self._ph.check_needs_rehash(encoded)
        except InvalidHashError:
            return True


@lru_cache(maxsize=8)
def _hasher(pepper: str, memory_kib: int, time_cost: int) -> PinHasher:
    return PinHasher(pepper, memory_kib, time_cost)


# --------------------------------------------------------------------------- weak PINs
COMMON_PINS = frozenset({"1212", "1122", "2580", "0852", "1004", "2000", "6969", "1313", "4545", "1010",
                         "2020", "5683", "0007", "121212", "123123", "112233", "147258", "159753",
                         "654321", "696969", "101010"})


def weak_pin_reason(pin: str, phone: str | None = None, birth_year: int | None = None) -> str | None:
    """Why ``pin`` is too easy to guess, or None. Reasons: same, sequence, common, birth_year, phone."""
    if len(set(pin)) == 1:
        return "same"
    steps = {(int(b) - int(a)) % 10 for a, b in zip(pin, pin[1:])}
    if steps in ({1}, {9}):                         # 1234, 4321, 7890, 3210
        return "sequence"
    if pin in COMMON_PINS:
        return "common"
    if birth_year and len(pin) == 4 and pin == f"{birth_year:04d}":
        return "birth_year"
    if birth_year and len(pin) >= 4 and f"{birth_year:04d}" in pin:
        return "birth_year"
    digits = re.sub(r"\D", "", phone or "")
    if digits and digits.endswith(pin):
        return "phone"
    return None


# --------------------------------------------------------------------------- redaction
def redact_ussd_text(text: str, secret_positions) -> str:
    """Africa's Talking's cumulative ``text`` with the inputs at ``secret_positions`` replaced by ``****``.

    Positions are indexes of the ``*``-separated inputs (0 = first answer).
    As a second line of defence any input of 4 or more characters is redacted
    too (a PIN typed where none was asked, or in a callback that raced another),
    so what remains are short menu choices.
    """
    if not text:
        return text
    secret = set(secret_positions or ())
    return "*".join("****" if i in secret or len(p) >= 4 else p for i, p in enumerate(text.split("*")))


#: also ``text``/``answer``/``from``: Kannel's get-url and dlr-url carry the client's message (a PIN), the
#: SMSC's receipt (the first characters of ours) and the client's number (``%2B...``, which the phone
#: masking cannot see) in the query string
_TOKEN_RE = re.compile(r"(?i)((?:^|[?&\s])(?:token|api_?key|pepper|text|answer|from)=)[^&\s\"']+")


_HOOK_PATH_RE = re.compile(r"(/hooks/fineract/)[^/?#\s\"']+")


def redact_query_secrets(line: str) -> str:
    """``...?token=abc&x=1`` -> ``...?token=***&x=1``, ``/hooks/fineract/abc/`` -> ``/hooks/fineract/***/``
    (access logs)."""
    return _HOOK_PATH_RE.sub(r"\1***", _TOKEN_RE.sub(r"\1***", line))


class RedactSecretsFilter(logging.Filter):
    """Logging filter for access logs: callback tokens in URLs become ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - never break logging
            return True
        red = redact_query_secrets(msg)
        if red != msg:
            record.msg, record.args = red, ()
        return True


# --------------------------------------------------------------------------- caller IPs
def parse_networks(spec: str) -> tuple:
    """``"196.201.214.0/24, 10.0.0.1"`` -> networks; raises ConfigurationError naming a bad entry."""
    nets = []
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigurationError(f"CONVO_CALLBACK_ALLOW_IPS: {part!r} is not an IP address or CIDR") from None
    return tuple(nets)


def client_ip(remote_addr: str | None, forwarded_for: str | None, trusted_proxies: int) -> str | None:
    """The caller's address: the socket peer, or with N trusted proxies the N-th X-Forwarded-For entry
    from the right (what the nearest trusted proxy saw). Fewer entries than proxies: the header is
    not trusted at all."""
    if trusted_proxies > 0 and forwarded_for:
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        if len(hops) >= trusted_proxies:
            return hops[-trusted_proxies]
        return None
    return remote_addr


def ip_allowed(ip: str | None, networks: tuple) -> bool:
    if not networks:
        return True
    try:
        addr = ipaddress.ip_address((ip or "").strip())
    except ValueError:
        return False
    if addr.version == 6 and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return any(addr in n for n in networks)


# --------------------------------------------------------------------------- rate limits
def hit(redis, name: str, phone: str, limit: int, window: int = 3600) -> bool:
    """Count one event for ``phone`` in a fixed window; False once ``limit`` is exceeded (0 = no limit)."""
    if limit <= 0:
        return True
    key = f"convo:rl:{name}:{{{phone}}}:{int(time.time() // window)}"
    pipe = redis.pipeline(transaction=False)
    pipe.incr(key)
    pipe.expire(key, window + 60)
    count, _ = pipe.execute()
    return int(count) <= limit
