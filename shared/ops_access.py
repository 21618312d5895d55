"""Who may read the operational endpoints (``/metrics``, and the engine's ``/status``): they tell every
tenant id with its snapshot version and the traffic counts, and the engine's port is the one Cloudonix
reaches from the internet. ``/health`` and ``/ready`` stay open for the probes.

With ``VLB_OPS_TOKEN`` set: the requests carrying ``Authorization: Bearer <token>`` (a scraper's
``authorization`` setting), from anywhere. Without it: the requests from this host (a loopback peer)
that no proxy forwarded (no ``X-Forwarded-For`` / ``Forwarded``), as ``vlb run`` and a local
Prometheus make them; or, through a proxy listed in ``VLB_TRUSTED_PROXIES``, the requests whose client
(shared/client_address.py) is on this host. A forwarding header from any other peer refuses: an
unlisted proxy on this host would otherwise make every internet request look local.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from shared.client_address import TrustedProxies, parse_address

OPS_REALM = 'Bearer realm="ops"'


def ops_allowed(
    headers: Mapping[str, str], client: str, token: str, proxies: TrustedProxies | None = None
) -> bool:
    """``headers`` has lower-cased names; ``client`` is the peer's address ("" when unknown)."""
    if token:
        auth = headers.get("authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        return bool(given) and hmac.compare_digest(given.encode(), token.encode())
    forwarded_for = headers.get("x-forwarded-for")
    if forwarded_for is not None or "forwarded" in headers:
        if proxies is None or "forwarded" in headers or not proxies.trusts_peer(client):
            return False
        client = proxies.client(client, forwarded_for)
    ip = parse_address(client)
    return ip is not None and ip.is_loopback
