"""Every cache key of Mifos X answers, in one place, and which of them a repayment makes stale.

The values live in :class:`convo.mifos.cache.Cache` (a per-process layer in front of Redis). Keys of one
account's figures name the account; keys of a day's figures name the MFI's day (the business date the
dialog ran on), so yesterday's "due today" is never read today.
"""
from __future__ import annotations

import datetime as dt

#: the office tree (office id -> parent id), read once an hour
OFFICE_PARENTS = "convo:office-parents"


def client(phone: str) -> str:
    """Who is calling from ``phone`` (E.164): the identified client(s), or "unknown" for a while."""
    return f"convo:client:{phone}"


def accounts(client_id: int) -> str:
    return f"convo:accounts:{client_id}"


def savings(savings_id: int) -> str:
    return f"convo:savings:{savings_id}"


def loan_due(loan_id: int, day: dt.date) -> str:
    return f"convo:loan:{loan_id}:{day.isoformat()}"


def statement(kind: str, account_id: int, limit: int) -> str:
    return f"convo:mini:{kind}:{account_id}:{limit}"


def meeting(client_id: int, day: dt.date) -> str:
    return f"convo:meeting:{client_id}:{day.isoformat()}"


#: the mini-statement lengths the flows ask for (``mini_statement`` ``limit``), whose keys a repayment drops
STATEMENT_LIMITS = range(1, 11)


def stale_after_repayment(savings_id: int, loan_id: int, days: tuple[dt.date, ...]) -> list[str]:
    """The keys a repayment from ``savings_id`` to ``loan_id`` makes stale: both balances, the loan's
    amount due on each of ``days`` (the MFI's date and the server's, which differ around midnight), and
    both accounts' mini-statements."""
    keys = [savings(savings_id)] + [loan_due(loan_id, d) for d in days]
    for limit in STATEMENT_LIMITS:
        keys += [statement("savings", savings_id, limit), statement("loan", loan_id, limit)]
    return keys
