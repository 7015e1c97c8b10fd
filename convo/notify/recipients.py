"""Who a message to a Mifos X client goes to: the one place a client's stored mobile number
becomes an E.164 recipient (receipts, reminders, staff messages; issue 9 item 1).

The rule is the one that identifies callers (:func:`convo.actions.mifos.identify_caller`):
the number is read in the *client's* country, :func:`office_regions`
(the office's region in ``flows/notify.yaml``, else the nearest listed office above it in
Mifos X, else ``CONVO_DEFAULT_REGION``), with :func:`convo.text.phone.read_stored`. A number that
cannot be read there is no recipient: nobody is texted on a guess (``771000141`` at a
Dakar branch is +221771000141, never the Kenyan +254771000141).
"""
from __future__ import annotations

from typing import Any, Callable

from convo.mifos import keys

__all__ = ["NoRecipient", "client_phone", "office_regions"]


class NoRecipient(ValueError):
    """The client cannot be texted; ``str(exc)`` says why (for a skipped row, a hook's detail, a 422)."""


def client_phone(services, client_id, mobile_no: str | None, office_id,
                 regions: Callable[[Any], str] | None = None) -> tuple[str, str]:
    """``(e164, region)`` of client ``client_id`` whose Mifos X ``mobileNo`` is ``mobile_no``
    and whose office is ``office_id``.

    Raises :class:`NoRecipient` when there is no number or it is not a number in the
    client's region, and :class:`~convo.mifos.client.MifosError` when the office tree cannot
    be read (the caller retries later, as for any Mifos X read). Pass ``regions`` (one
    :func:`office_regions`) to share it across many clients.
    """
    from convo.text.phone import read_stored

    if not mobile_no:
        raise NoRecipient(f"client {client_id} has no mobile number in Mifos X")
    region = (regions or office_regions(services))(office_id)
    e164 = read_stored(mobile_no, region)
    if e164 is None:
        raise NoRecipient(f"client {client_id}: mobile number {mobile_no!r} is not a phone number "
                          f"in {region} (office {office_id})")
    return e164, region


def office_regions(services) -> Callable[[Any], str]:
    """Office id → the region its clients' numbers are read in (for any code that reads a
    number stored in Mifos X: identification (:func:`convo.actions.mifos.identify_caller`) and whoever texts a client).

    The office's ``region`` in ``flows/notify.yaml``; for an office not listed
    there, the nearest listed office above it in Mifos X (``GET /offices``,
    cached for an hour), so a new branch under Dakar reads its numbers as
    Senegalese; ``CONVO_DEFAULT_REGION`` when no office above it has one.
    When ``notify.yaml`` lists no region at all, Mifos X is never asked. May
    raise :class:`~convo.mifos.client.MifosError` (the office tree, once an hour).
    """
    from convo.notify import messages as notify  # messages imports this module: resolved at call time

    s = services
    default = s.settings.default_region
    listed = {oid: o.region for oid, o in notify.config_for(s).offices.items() if o.region}
    parents: dict[int, int | None] | None = None

    def region(office_id) -> str:
        nonlocal parents
        try:
            oid = int(office_id)
        except (TypeError, ValueError):
            return default
        if oid in listed or not listed:
            return listed.get(oid, default)
        if parents is None:
            cached = s.cache.get(keys.OFFICE_PARENTS)
            if cached is None:
                cached = {str(k): v for k, v in s.mifos.office_parents().items()}
                s.cache.put(keys.OFFICE_PARENTS, cached, 3600)
            parents = {int(k): v for k, v in cached.items()}
        seen = {oid}
        up = parents.get(oid)
        while up is not None and up not in seen:
            if up in listed:
                return listed[up]
            seen.add(up)
            up = parents.get(up)
        return default

    return region
