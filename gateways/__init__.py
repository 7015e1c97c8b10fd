"""SMS/USSD gateways. One module per gateway *type*, each with one :class:`gateways.base.Gateway` subclass.

:data:`GATEWAY_TYPES` is the registry: routes-file ``type`` -> ``(module, class)``.
It is an explicit list in code (a routes file can only pick one of these, never
name a Python path); modules are imported on first use so an SDK that is not
needed is not loaded. Adding a gateway = its module, its tests, one line here.
"""
from __future__ import annotations

from importlib import import_module

__all__ = ["GATEWAY_TYPES", "gateway_class"]

GATEWAY_TYPES: dict[str, tuple[str, str]] = {
    "africastalking": ("gateways.africastalking", "AfricasTalkingGateway"),
    "twilio": ("gateways.twilio", "TwilioGateway"),
    "smsgate": ("gateways.smsgate", "SmsGateGateway"),
    "kannel": ("gateways.kannel", "KannelGateway"),
    "log": ("gateways.base", "LogGateway"),
}


def gateway_class(type_: str):
    """The :class:`~gateways.base.Gateway` subclass registered for ``type_``; ``KeyError`` when unknown."""
    module, cls = GATEWAY_TYPES[type_]
    return getattr(import_module(module), cls)
