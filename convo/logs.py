"""Log hygiene: phone numbers masked at INFO and above, callback tokens redacted in access logs.

:func:`install` (called by ``create_app`` and ``convo worker``) puts
:class:`MaskPhonesFilter` on every handler of the root logger and on the
access loggers of werkzeug, gunicorn and granian (they have handlers of their
own), so every line that reaches a file or the console passes it. DEBUG lines
keep the full number: turn DEBUG on only to trace one problem.

    >>> mask_phones("reply queued for +254700000101 (outbox 12)")
    'reply queued for +254*******01 (outbox 12)'

Database errors never show statement parameters (``hide_parameters=True`` in
:func:`convo.store.db.make_engine`), so a failed insert logs neither a phone number nor
a message body nor a PIN hash.
"""
from __future__ import annotations

import logging
import re

__all__ = ["MaskPhonesFilter", "install", "mask_phones"]

# 9-15 digits, optionally after "+", not inside a longer run of digits, letters or a decimal number:
# E.164 (+254700000101), national (0700000101) and bare international (254700000101) forms.
_PHONE_RE = re.compile(r"(?<![\w.])(\+?)(\d{3})(\d{4,10})(\d{2})(?![\w]|\.\d)")
ACCESS_LOGGERS = ("werkzeug", "gunicorn.access", "gunicorn.error", "granian.access", "granian")


def mask_phones(text: str) -> str:
    """Every phone-number-like run of digits keeps its first 3 and last 2 digits: ``+254*******01``."""
    return _PHONE_RE.sub(lambda m: m[1] + m[2] + "*" * len(m[3]) + m[4], text)


class MaskPhonesFilter(logging.Filter):
    """Masks phone numbers in the message and traceback of every record at INFO and above."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO or getattr(record, "_convo_masked", False):
            return True
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is logging's problem, never ours to raise
            return True
        masked = mask_phones(msg)
        if masked != msg:
            record.msg, record.args = masked, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_phones(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_phones(record.stack_info)
        record._convo_masked = True
        return True


def _add(filterer: logging.Filterer, kind: type[logging.Filter]) -> None:
    if not any(isinstance(f, kind) for f in filterer.filters):
        filterer.addFilter(kind())


def install() -> None:
    """Mask phones on every root handler and the access loggers; redact ``?token=`` in access logs."""
    from convo.security import RedactSecretsFilter

    for h in logging.getLogger().handlers:
        _add(h, MaskPhonesFilter)
    for name in ACCESS_LOGGERS:
        lg = logging.getLogger(name)
        _add(lg, RedactSecretsFilter)
        _add(lg, MaskPhonesFilter)
        for h in lg.handlers:
            _add(h, MaskPhonesFilter)
