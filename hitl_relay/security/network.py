"""Who is asking, from where, over what: client address, allowlist, forwarded scheme.

`X-Forwarded-For` is believed only when the direct peer is a configured trusted proxy, and
then read from the right: each trusted hop is skipped and the first address that is not a
trusted proxy is the client (the "rightmost untrusted" rule). Anything a client writes into the
header itself sits to the left of what its first proxy appended, so it is never reached.
`X-Forwarded-Proto` is read the same way, aligned from the right with `X-Forwarded-For`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.types import Scope

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A peer with no address (a test transport, a unix socket) is treated as this one.
UNKNOWN_PEER = ipaddress.ip_address("0.0.0.0")


def networks(entries: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip())


def parse_ip(text: str) -> IPAddress | None:
    """An address from a header entry: `1.2.3.4`, `1.2.3.4:5678`, `[::1]:80`, `::1`."""
    value = text.strip().strip('"')
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:  # IPv4 with a port
        value = value.partition(":")[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _inside(address: IPAddress, nets: Sequence[IPNetwork]) -> bool:
    return any(address.version == net.version and address in net for net in nets)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a request came from, as far as this process can know."""

    client: IPAddress
    peer: IPAddress
    https: bool
    # The direct peer is a trusted proxy (its forwarding headers were read).
    via_proxy: bool


class NetworkPolicy:
    """Trusted proxies and the client allowlist (both CIDR lists)."""

    def __init__(self, trusted_proxies: Iterable[str] = (), allowlist: Iterable[str] = ()) -> None:
        self.trusted = networks(trusted_proxies)
        self.allowlist = networks(allowlist)

    def is_trusted(self, address: IPAddress) -> bool:
        return _inside(address, self.trusted)

    def allowed(self, address: IPAddress) -> bool:
        return not self.allowlist or _inside(address, self.allowlist)

    def origin(self, scope: Scope) -> Origin:
        client = scope.get("client")
        peer = (parse_ip(str(client[0])) if client else None) or UNKNOWN_PEER
        direct_https = scope.get("scheme") in ("https", "wss")
        if not self.is_trusted(peer):
            return Origin(client=peer, peer=peer, https=direct_https, via_proxy=False)
        headers = Headers(scope=scope)
        hops = _entries(headers.getlist("x-forwarded-for"))
        client_ip, index = self._rightmost_untrusted(peer, hops)
        protos = [p.lower() for p in _entries(headers.getlist("x-forwarded-proto"))]
        https = direct_https
        if protos:
            # Align from the right with X-Forwarded-For; a proxy that overwrote the header
            # (one value for the whole chain) is the nearest one, so use the rightmost value.
            at = len(protos) - (len(hops) - index) if index is not None else len(protos) - 1
            proto = protos[at] if 0 <= at < len(protos) else protos[-1]
            https = proto == "https"
        return Origin(client=client_ip, peer=peer, https=https, via_proxy=True)

    def _rightmost_untrusted(
        self, peer: IPAddress, hops: list[str]
    ) -> tuple[IPAddress, int | None]:
        """The client address and its index in `hops` (None: the peer itself)."""
        nearest: IPAddress = peer
        nearest_index: int | None = None
        for index in range(len(hops) - 1, -1, -1):
            address = parse_ip(hops[index])
            if address is None:
                # Garbage in the chain: stop at the last hop we could vouch for.
                return nearest, nearest_index
            if not self.is_trusted(address):
                return address, index
            nearest, nearest_index = address, index
        return nearest, nearest_index


def _entries(values: list[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out
