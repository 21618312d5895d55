"""The Redis key layout both planes use for runtime counters (the engine's balancer writes them, the
control plane reads and resets them). Every key carries the tenant in a hash tag, so one tenant's keys
live on one Redis Cluster slot and one Lua script may touch them all.

``routing_engine/balancer.lua`` builds the same names from :meth:`TenantKeys.base`; change both
together.
"""

from __future__ import annotations

# Window buckets: calls routed to an agent per epoch minute (``win``) and per epoch hour (``winh``,
# hour = minute // 60). A rolling window sums the whole hours from ``winh`` and the two partial hours
# at its edges from ``win`` (at most 60 minute keys + window_hours hour keys).
MINUTES_PER_HOUR = 60
# The longest window a group may use (SPEC §2.3); reset deletes buckets this far back.
MAX_WINDOW_HOURS = 168


def tenant_base(prefix: str, tenant_id: int) -> str:
    """``<prefix>:{t<tenant>}:``, the start of every key of one tenant."""
    return f"{prefix}:{{t{tenant_id}}}:"


class TenantKeys:
    """Key builders for one tenant; build once per tenant and reuse (the base is precomputed)."""

    __slots__ = ("base", "tenant_id")

    def __init__(self, prefix: str, tenant_id: int) -> None:
        self.tenant_id = tenant_id
        self.base = tenant_base(prefix, tenant_id)

    def window_minute(self, agent_id: int, minute: int) -> str:
        """Calls routed to ``agent_id`` during epoch minute ``minute`` (string counter)."""
        return f"{self.base}win:{agent_id}:{minute}"

    def window_hour(self, agent_id: int, hour: int) -> str:
        """Calls routed to ``agent_id`` during epoch hour ``hour`` (string counter)."""
        return f"{self.base}winh:{agent_id}:{hour}"

    def window_base(self, agent_id: int, window_hours: int) -> str:
        """Caches ``agent_id``'s calls in the completed minutes of a ``window_hours`` window, as
        ``<minute>:<sum>`` for the minute it was summed in (the current minute's bucket is added live).
        A 2-minute key; deleting it is always safe."""
        return f"{self.base}wb:{agent_id}:{window_hours}"

    def window_keys_reaching(self, agent_id: int, now_min: int) -> list[str]:
        """Every window bucket and cached window sum of ``agent_id`` that any window can still read at
        epoch minute ``now_min`` (the longest window plus a margin either side): what a reset of its
        window deletes."""
        now_hour = now_min // MINUTES_PER_HOUR
        span = (MAX_WINDOW_HOURS + 2) * MINUTES_PER_HOUR
        names = [self.window_base(agent_id, w) for w in range(1, MAX_WINDOW_HOURS + 1)]
        names += [self.window_minute(agent_id, m) for m in range(now_min - span, now_min + 2)]
        names += [self.window_hour(agent_id, h) for h in range(now_hour - MAX_WINDOW_HOURS - 2, now_hour + 2)]
        return names

    def active(self, agent_id: int) -> str:
        """Sorted set of the sessions holding a slot of ``agent_id``, scored by expiry (epoch ms)."""
        return f"{self.base}active:{agent_id}"

    def round_robin(self, group_id: int) -> str:
        """The last member chosen for a round-robin group, as ``<priority>:<agent_id>``."""
        return f"{self.base}rr:{group_id}"

    def call(self, session: str) -> str:
        """Hash of one call's routing state: ``cur`` (agent holding a slot), ``tried`` (``,1,5,``),
        ``att`` (last attempt number), ``end`` (the call is over), and per decided stage ``d:<stage>``
        = ``<candidate-index>|<agent>|<attempt>|<cxml>``, which repeats of that webhook answer with."""
        return f"{self.base}call:{session}"

    def last_chosen(self, agent_id: int) -> str:
        """When ``agent_id`` was last chosen (epoch ms)."""
        return f"{self.base}last:{agent_id}"

    def seen(self, dedupe_id: str) -> str:
        """Marks a session update or CDR delivery as applied (``SET NX`` with a TTL): repeats are
        dropped. ``dedupe_id`` is ``<token>:su:<eventId>``, ``<token>:su:<status>:<modifiedAt>`` or
        ``<token>:cdr``."""
        return f"{self.base}seen:{dedupe_id}"
