"""Redaction: PINs out of the USSD ``text``, secrets out of logged URLs."""
from __future__ import annotations

import logging
import re


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
