"""SIM-swap checks through Africa's Talking's Insights API (the official SDK's ``InsightService``).

When ``CONVO_SIMSWAP_HOLD_DAYS`` is set, the first PIN-protected answer of a
dialog asks AT when the number's SIM was last swapped; within that many days
the answer is refused (``pin.simswap_hold``): whoever holds a freshly swapped
SIM may not be the client. Results are cached per number for
``CACHE_SECONDS``. When AT cannot answer (error, timeout, an asynchronous
``Queued`` reply) the check *fails open*, logged as a warning: an outage of
the Insights API must not stop every client from seeing their balance.

``CONVO_AT_BASE_URL`` points the SDK at another server: the Insights calls go
to ``<base>/v1/sim-swap`` there (the fake in :mod:`convo.devkit.fake_at` serves it).
"""
from __future__ import annotations

import datetime as dt
import json
import logging

log = logging.getLogger(__name__)

CACHE_SECONDS = 6 * 3600
_UNKNOWN = "unknown"


def _service(settings):
    from africastalking.Insights import InsightService

    svc = InsightService(settings.at_username or "sandbox", settings.at_api_key or "none")
    if settings.at_base_url:
        svc._baseUrl = settings.at_base_url.rstrip("/") + "/v1"
    return svc


def _parse_date(value) -> dt.date | None:
    if not isinstance(value, str) or not value.strip():
        return None
    v = value.strip()
    for fmt in ("%d-%m-%Y", "%Y-%m-%d", "%d/%m/%Y", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"):
        try:
            return dt.datetime.strptime(v[:19], fmt).date()
        except ValueError:
            continue
    return None


def parse_response(body: dict, phone: str) -> dt.date | None | str:
    """The last swap date for ``phone`` from AT's answer; None if never swapped; ``"unknown"`` if not said."""
    rows = body.get("responses")
    if rows is None:
        rows = (body.get("data") or {}).get("phoneNumbers")
    if not isinstance(rows, list):
        return _UNKNOWN
    for r in rows:
        if not isinstance(r, dict):
            continue
        num = r.get("phoneNumber")
        if isinstance(num, dict):
            num = num.get("number")
        if num != phone:
            continue
        status = str(r.get("status", ""))
        date = _parse_date(r.get("lastSimSwapDate") or r.get("lastSwapDate"))
        if status == "NotSwapped" or (date and date.year <= 1900):
            return None
        if status == "Swapped" and date:
            return date
        return _UNKNOWN
    return _UNKNOWN


def last_swap(services, phone: str, timeout: float = 2.0) -> dt.date | None | str:
    """Date of the last SIM swap of ``phone`` (None: never; ``"unknown"``: AT could not say)."""
    key = f"convo:simswap:{{{phone}}}"
    cached = services.redis.get(key)
    if cached is not None:
        v = json.loads(cached)
        return dt.date.fromisoformat(v) if v and v != _UNKNOWN else v
    try:
        body = _service(services.settings).check_sim_swap_state([phone], timeout=timeout)
        if isinstance(body, str):
            body = json.loads(body)
        result = parse_response(body if isinstance(body, dict) else {}, phone)
    except Exception as e:  # noqa: BLE001 - fail open, say why (no number in the log)
        log.warning("SIM-swap check failed: %s", type(e).__name__)
        return _UNKNOWN
    if not isinstance(result, str):  # a date or None (no swap on record); the only text is _UNKNOWN
        services.redis.set(key, json.dumps(result.isoformat() if result else None), ex=CACHE_SECONDS)
    return result


def on_hold(services, phone: str, today: dt.date) -> bool:
    days = services.settings.simswap_hold_days
    if days <= 0:
        return False
    swapped = last_swap(services, phone)
    return isinstance(swapped, dt.date) and (today - swapped).days < days
