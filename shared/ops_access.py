"""Who may read the operational endpoints (``/metrics``, and the engine's ``/status``): they tell every
tenant id with its snapshot version and the traffic counts, and the engine's port is the one Cloudonix
reaches from the internet. ``/health`` and ``/ready`` stay open for the probes.

With ``VLB_OPS_TOKEN`` set: the requests carrying ``Authorization: Bearer <token>`` (a scraper's
``authorization`` setting), from anywhere. Without it: the requests from this host (a loopback peer)
that no proxy forwarded (no ``X-Forwarded-For`` / ``Forwarded``), as ``vlb run`` and a local
Prometheus make them.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping

OPS_REALM = 'Bearer realm="ops"'


def ops_allowed(headers: Mapping[str, str], client: str, token: str) -> bool:
    """``headers`` has lower-cased names; ``client`` is the peer's address ("" when unknown)."""
    if token:
        auth = headers.get("authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        return bool(given) and hmac.compare_digest(given.encode(), token.encode())
    if "x-forwarded-for" in headers or "forwarded" in headers:
        return False
    try:
        return ipaddress.ip_address(client).is_loopback
    except ValueError:
        return False
