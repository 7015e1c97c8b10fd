"""Who a message to a Mifos X client goes to: the one place a client's stored mobile number
becomes an E.164 recipient (receipts, reminders, staff messages; issue 9 item 1).

The rule is the one that identifies callers (:func:`convo.actions.mifos.identify_caller`):
the number is read in the *client's* country, :func:`convo.actions.mifos.office_regions`
(the office's region in ``flows/notify.yaml``, else the nearest listed office above it in
Mifos X, else ``CONVO_DEFAULT_REGION``), with :func:`convo.text.phone.read_stored`. A number that
cannot be read there is no recipient: nobody is texted on a guess (``771000141`` at a
Dakar branch is +221771000141, never the Kenyan +254771000141).
"""
from __future__ import annotations

from typing import Any, Callable

__all__ = ["NoRecipient", "client_phone"]


class NoRecipient(ValueError):
    """The client cannot be texted; ``str(exc)`` says why (for a skipped row, a hook's detail, a 422)."""


def client_phone(services, client_id, mobile_no: str | None, office_id,
                 regions: Callable[[Any], str] | None = None) -> tuple[str, str]:
    """``(e164, region)`` of client ``client_id`` whose Mifos X ``mobileNo`` is ``mobile_no``
    and whose office is ``office_id``.

    Raises :class:`NoRecipient` when there is no number or it is not a number in the
    client's region, and :class:`~convo.mifos.client.MifosError` when the office tree cannot
    be read (the caller retries later, as for any Mifos X read). Pass ``regions`` (one
    :func:`~convo.actions.mifos.office_regions`) to share it across many clients.
    """
    from convo.actions.mifos import office_regions
    from convo.text.phone import read_stored

    if not mobile_no:
        raise NoRecipient(f"client {client_id} has no mobile number in Mifos X")
    region = (regions or office_regions(services))(office_id)
    e164 = read_stored(mobile_no, region)
    if e164 is None:
        raise NoRecipient(f"client {client_id}: mobile number {mobile_no!r} is not a phone number "
                          f"in {region} (office {office_id})")
    return e164, region
