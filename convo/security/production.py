"""What production refuses to start without: its own secrets, no development defaults."""
from __future__ import annotations

import logging

from convo.security.pins import DEV_PEPPER, MIN_PRODUCTION_PEPPER

log = logging.getLogger(__name__)

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
            f"{MIN_PRODUCTION_PEPPER} characters "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`). "
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
