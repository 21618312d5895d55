"""The client's address behind reverse proxies, on both planes: ``X-Forwarded-For`` is believed only
from the proxy networks an operator lists (``VLB_TRUSTED_PROXIES``, CIDRs; empty = trust none).

The rule (the one nginx's ``real_ip_recursive`` and most proxies document): when the peer (the TCP
address) is not a trusted proxy, the header is ignored and the peer is the client. When it is, the
header is walked from the right, skipping the hops that are themselves trusted proxies; the first
hop that is not is the client (everything left of it was written by that client, so means nothing).
A hop that is not an address (garbage, an ``unknown``, a truncated entry) ends the walk: the client
is then unknown (``""``), which the engine's allowlist refuses and the login throttle counts under
one key. A chain made only of trusted proxies gives its left-most hop.

Cheap on purpose: nothing is parsed unless a caller asks, and the peer's verdict is cached (a few
peers, the proxies, send nearly all traffic), and so is a chain's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Hops walked at most (a header of thousands of entries costs no more than this many parses).
MAX_HOPS = 32
# Peers whose verdict is remembered; the cache is emptied when full (proxies are few, clients many).
PEER_CACHE_SIZE = 4096
# Chains remembered (same bound); only short ones, so the cache stays small whatever is sent.
CHAIN_CACHE_MAX_LEN = 128


def parse_networks(spec: str | Iterable[str]) -> tuple[IPNetwork, ...]:
    """``"10.0.0.0/8, 192.168.1.7"`` (a comma- or space-separated string, or its items) as networks;
    ValueError names the entry that is not one."""
    items = spec.replace(",", " ").split() if isinstance(spec, str) else [s.strip() for s in spec]
    networks: list[IPNetwork] = []
    for item in items:
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(f"not an IP network: {item!r}") from exc
    return tuple(networks)


def parse_address(text: str) -> IPAddress | None:
    """An address as proxies write it in ``X-Forwarded-For``: ``203.0.113.7``, ``2001:db8::1``, also
    ``203.0.113.7:4711`` and ``[2001:db8::1]:4711`` (some add the port); IPv4-mapped IPv6 as IPv4.
    None when it is not an address."""
    ip: IPAddress | None
    try:  # the common case: a bare address as it is
        ip = ipaddress.ip_address(text)
    except ValueError:
        ip = _parse_odd(text)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _parse_odd(text: str) -> IPAddress | None:
    """Spaces around it, a port, brackets."""
    text = text.strip()
    if not text or len(text) > 64:
        return None
    if text[0] == "[":
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class TrustedProxies:
    """The proxy networks a plane believes, and the client address of a request through them.

    ``any_peer=True`` is the engine's former ``VLB_TRUST_PROXY=true``: the peer is trusted whatever it
    is, for one hop (the right-most ``X-Forwarded-For`` entry is the client). Kept so that setting
    still works; ``VLB_TRUSTED_PROXIES`` replaces it."""

    __slots__ = ("_chains", "_peers", "any_peer", "networks")

    def __init__(self, networks: Iterable[IPNetwork] = (), *, any_peer: bool = False) -> None:
        self.networks = tuple(networks)
        self.any_peer = any_peer
        self._peers: dict[str, bool] = {}
        # X-Forwarded-For value -> its client, for chains from a trusted peer (the answer depends on the
        # chain alone then); Cloudonix calls from a handful of addresses, so most are repeats.
        self._chains: dict[str, str] = {}

    @classmethod
    def from_setting(cls, spec: str, *, legacy_trust_proxy: bool = False) -> TrustedProxies:
        """From ``VLB_TRUSTED_PROXIES``; a wrong entry stops the service with a clear message."""
        try:
            networks = parse_networks(spec)
        except ValueError as exc:
            raise SystemExit(f"invalid settings: VLB_TRUSTED_PROXIES: {exc}") from exc
        return cls(networks, any_peer=legacy_trust_proxy and not networks)

    @property
    def enabled(self) -> bool:
        return bool(self.networks) or self.any_peer

    def _trusted(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self.networks)

    def trusts_peer(self, peer: str) -> bool:
        """The peer (the TCP address, as the server reports it) is a proxy we believe."""
        if self.any_peer:
            return True
        if not self.networks:
            return False
        known = self._peers.get(peer)
        if known is None:
            ip = parse_address(peer)
            known = ip is not None and self._trusted(ip)
            if len(self._peers) >= PEER_CACHE_SIZE:
                self._peers.clear()
            self._peers[peer] = known
        return known

    def client(self, peer: str, forwarded_for: str | None) -> str:
        """The client's address as text (normalised); the peer itself when it is not a trusted proxy or
        sends no ``X-Forwarded-For``; ``""`` when the chain is malformed where it matters."""
        if not forwarded_for or not self.trusts_peer(peer):
            return peer
        known = self._chains.get(forwarded_for)
        if known is None:
            known = self._walk(forwarded_for)
            if len(forwarded_for) <= CHAIN_CACHE_MAX_LEN:
                if len(self._chains) >= PEER_CACHE_SIZE:
                    self._chains.clear()
                self._chains[forwarded_for] = known
        return known

    def _walk(self, forwarded_for: str) -> str:
        hops = forwarded_for.rsplit(",", MAX_HOPS)
        cut = len(hops) > MAX_HOPS
        if cut:  # the left-most piece holds the rest, unsplit: only walked if all these are proxies
            hops = hops[1:]
        last: IPAddress | None = None
        for raw in reversed(hops):
            ip = parse_address(raw)
            if ip is None:
                return ""
            if self.any_peer or not self._trusted(ip):
                return str(ip)
            last = ip
        if cut:
            return ""  # more than MAX_HOPS proxies: the client is further left than we look
        return str(last) if last is not None else ""
