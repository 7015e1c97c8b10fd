"""Security: PINs (:mod:`.pins`), what production refuses (:mod:`.production`), redaction
(:mod:`.redaction`), callback callers (:mod:`.callbacks`), rate limits (:mod:`.limits`), SIM swaps
(:mod:`.simswap`). The names most code needs are re-exported here.
"""
from convo.security.callbacks import client_ip, ip_allowed, parse_networks
from convo.security.limits import allowed
from convo.security.pins import COMMON_PINS, DEV_PEPPER, PinHasher, weak_pin_reason
from convo.security.production import ConfigurationError, check_production_settings
from convo.security.redaction import RedactSecretsFilter, redact_query_secrets, redact_ussd_text

__all__ = ["COMMON_PINS", "DEV_PEPPER", "ConfigurationError", "PinHasher", "RedactSecretsFilter", "allowed",
           "check_production_settings", "client_ip", "ip_allowed", "parse_networks", "redact_query_secrets",
           "redact_ussd_text", "weak_pin_reason"]
