"""Who may call the gateway callbacks: the caller's address behind trusted proxies, and allow-lists."""
from __future__ import annotations

import ipaddress

from convo.security.production import ConfigurationError


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
