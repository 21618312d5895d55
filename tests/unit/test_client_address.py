"""The client address behind reverse proxies (shared/client_address.py): X-Forwarded-For is believed
only from the listed proxy networks, walked from the right past the proxies; malformed chains give no
address rather than a spoofed one."""

from __future__ import annotations

import pytest

from shared.client_address import MAX_HOPS, TrustedProxies, parse_address, parse_networks
from shared.ops_access import ops_allowed

PROXIES = TrustedProxies.from_setting("10.0.0.0/8, 2001:db8:ff::/48 192.168.7.7")


@pytest.mark.parametrize(
    ("peer", "xff", "client"),
    [
        # no proxy in the way, or a peer we do not trust: the header is ignored
        ("203.0.113.7", None, "203.0.113.7"),
        ("203.0.113.7", "198.51.100.1", "203.0.113.7"),
        ("203.0.113.7", "10.1.1.1", "203.0.113.7"),
        ("203.0.113.7", "garbage,,,", "203.0.113.7"),
        # a trusted proxy: its right-most entry
        ("10.0.0.2", "198.51.100.1", "198.51.100.1"),
        # the client's own (spoofed) entries left of what the proxy appended mean nothing
        ("10.0.0.2", "1.2.3.4, 198.51.100.1", "198.51.100.1"),
        # two proxies: the walk skips the inner one
        ("10.0.0.2", "1.2.3.4, 198.51.100.1, 10.9.9.9", "198.51.100.1"),
        ("192.168.7.7", "198.51.100.1 , 192.168.7.7", "198.51.100.1"),
        # only proxies in the chain: the left-most
        ("10.0.0.2", "10.0.0.9, 10.0.0.8", "10.0.0.9"),
        # ports and brackets as some proxies write them; IPv6; IPv4-mapped
        ("10.0.0.2", "198.51.100.1:4711", "198.51.100.1"),
        ("10.0.0.2", "[2001:db8::1]:4711", "2001:db8::1"),
        ("2001:db8:ff::5", "2001:db8::1", "2001:db8::1"),
        ("::ffff:10.0.0.2", "::ffff:198.51.100.1", "198.51.100.1"),
        # malformed where it matters: unknown, never the spoofed value
        ("10.0.0.2", "198.51.100.1, not-an-ip", ""),
        ("10.0.0.2", "1.2.3.4, , 10.0.0.3", ""),
        ("10.0.0.2", ",", ""),
        ("10.0.0.2", "unknown", ""),
        ("10.0.0.2", "[2001:db8::1", ""),
        ("10.0.0.2", "9" * 5000, ""),
        ("10.0.0.2", "1.2.3.4\x00", ""),
        # an empty header is no header
        ("10.0.0.2", "", "10.0.0.2"),
        # a malformed entry left of the client is never looked at
        ("10.0.0.2", "x'; DROP--, 198.51.100.1", "198.51.100.1"),
    ],
)
def test_client(peer: str, xff: str | None, client: str) -> None:
    assert PROXIES.client(peer, xff) == client


def test_trust_none_by_default() -> None:
    none = TrustedProxies.from_setting("")
    assert not none.enabled
    assert none.client("10.0.0.2", "198.51.100.1") == "10.0.0.2"
    assert not none.trusts_peer("127.0.0.1")


def test_huge_chains_cost_a_bounded_walk() -> None:
    only_proxies = ", ".join(["10.0.0.1"] * (MAX_HOPS * 100))
    assert PROXIES.client("10.0.0.2", only_proxies) == ""  # the client is further left than we look
    spoofed = ", ".join(["1.1.1.1"] * 10_000) + ", 198.51.100.1"
    assert PROXIES.client("10.0.0.2", spoofed) == "198.51.100.1"


def test_legacy_trust_proxy_believes_the_last_hop_of_any_peer() -> None:
    legacy = TrustedProxies.from_setting("", legacy_trust_proxy=True)
    assert legacy.client("203.0.113.7", "1.2.3.4, 198.51.100.1") == "198.51.100.1"
    # listing the proxies replaces the legacy switch
    listed = TrustedProxies.from_setting("10.0.0.0/8", legacy_trust_proxy=True)
    assert listed.client("203.0.113.7", "198.51.100.1") == "203.0.113.7"


def test_a_wrong_network_stops_the_service_with_its_name() -> None:
    with pytest.raises(SystemExit, match=r"VLB_TRUSTED_PROXIES.*'10\.0\.0\.0/33'"):
        TrustedProxies.from_setting("10.0.0.0/8, 10.0.0.0/33")
    assert parse_networks(" 10.1.2.3 ,::1 ") == parse_networks(["10.1.2.3/32", "::1/128"])


def test_parse_address() -> None:
    assert str(parse_address(" 198.51.100.1 ")) == "198.51.100.1"
    assert parse_address("2001:db8::1") is not None
    assert parse_address("") is None
    assert parse_address("1.2.3.4:80:90") is None


@pytest.mark.parametrize(
    ("headers", "peer", "allowed"),
    [
        # a listed proxy on this host forwarding a client on this host: allowed
        ({"x-forwarded-for": "127.0.0.1"}, "10.0.0.2", True),
        # ... forwarding the internet (or a spoof of loopback the proxy appended after): refused
        ({"x-forwarded-for": "198.51.100.1"}, "10.0.0.2", False),
        ({"x-forwarded-for": "127.0.0.1, 198.51.100.1"}, "10.0.0.2", False),
        ({"x-forwarded-for": "junk"}, "10.0.0.2", False),
        # a forwarding header from a peer we do not trust refuses, even on loopback
        ({"x-forwarded-for": "127.0.0.1"}, "127.0.0.1", False),
        ({"forwarded": "for=127.0.0.1"}, "10.0.0.2", False),
        ({}, "127.0.0.1", True),
    ],
)
def test_ops_access_through_a_trusted_proxy(headers: dict[str, str], peer: str, allowed: bool) -> None:
    assert ops_allowed(headers, peer, "", PROXIES) is allowed
