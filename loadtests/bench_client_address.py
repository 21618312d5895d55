"""What the engine's client-address check costs per webhook (the allowlist path of
``routing_engine/app.py``: ``EngineApp._client_allowed``), against the code it replaced.

    .venv/bin/python -m loadtests.bench_client_address

Only a domain with ``allowed_networks`` pays any of it; each figure is the best of 30 runs of 20,000
calls (microseconds per call), the cases interleaved, in one process."""

from __future__ import annotations

import ipaddress
import itertools
import timeit
from collections.abc import Callable
from typing import Any

from shared.client_address import TrustedProxies, parse_address

NETWORKS = [ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("192.0.2.0/24")]
NUMBER = 20_000
ROUNDS = 30  # the cases take turns, round after round: a busy machine slows them all alike


def before(peer: str, xff: str | None, trust_proxy: bool) -> bool:
    """The check as it was: the last hop unconditionally when told to trust the proxy."""
    address = ""
    if trust_proxy:
        address = xff.rsplit(",", 1)[-1].strip() if xff else ""
    if not address:
        address = peer
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in NETWORKS)


def after(proxies: TrustedProxies, peer: str, xff: str | None) -> bool:
    """The check as it is (``EngineApp._client_allowed``)."""
    address = peer
    if proxies.enabled:
        address = proxies.client(address, xff)
    ip = parse_address(address)
    return ip is not None and any(ip in net for net in NETWORKS)


def main() -> None:
    none = TrustedProxies.from_setting("")
    listed = TrustedProxies.from_setting("10.0.0.0/8, 172.16.0.0/12")
    chain = "203.0.113.9, 198.51.100.7"
    fresh = (f"203.0.113.9, 198.51.{n % 250}.{n // 250 % 250}" for n in itertools.count())
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("before: no proxy trusted, direct peer", lambda: before("198.51.100.7", None, False)),
        ("after:  no proxy trusted, direct peer", lambda: after(none, "198.51.100.7", None)),
        ("after:  no proxy trusted, spoofed XFF ignored", lambda: after(none, "203.0.113.7", chain)),
        ("before: VLB_TRUST_PROXY, XFF from the proxy", lambda: before("10.0.0.5", chain, True)),
        ("after:  listed proxy, XFF (a repeated chain)", lambda: after(listed, "10.0.0.5", chain)),
        ("after:  listed proxy, XFF (every chain new)", lambda: after(listed, "10.0.0.5", next(fresh))),
        ("after:  untrusted peer sending XFF", lambda: after(listed, "203.0.113.7", chain)),
    ]
    best = [float("inf")] * len(cases)
    for _ in range(ROUNDS):
        for i, (_label, fn) in enumerate(cases):
            best[i] = min(best[i], timeit.timeit(fn, number=NUMBER))
    for (label, _fn), seconds in zip(cases, best, strict=True):
        print(f"{label:48s} {seconds / NUMBER * 1e6:6.2f} µs")


if __name__ == "__main__":
    main()
