"""The Redis key layout both planes use for runtime counters (the engine's balancer writes them, the
control plane reads and resets them). Every key carries the tenant in a hash tag, so one tenant's keys
live on one Redis Cluster slot and one Lua script may touch them all.

``routing_engine/balancer.lua`` builds the same names from :meth:`TenantKeys.base`; change both
together.
"""

from __future__ import annotations

# Window buckets: calls routed per epoch minute (``win``) and per epoch hour (``winh``, hour =
# minute // 60), one hash per tenant and bucket with a field per agent. A rolling window sums the whole
# hours from ``winh`` and the two partial hours at its edges from ``win`` (at most 60 minute buckets +
# window_hours hour buckets).
MINUTES_PER_HOUR = 60
# The longest window a group may use (SPEC §2.3); reset deletes buckets this far back.
MAX_WINDOW_HOURS = 168
# How long a new minute bucket lives (an hour bucket an hour more): as long as the longest window can
# read it, whichever group's call created it (an agent's counts are shared by all its groups).
WINDOW_BUCKET_TTL_S = MAX_WINDOW_HOURS * 3600 + 120


def tenant_base(prefix: str, tenant_id: int) -> str:
    """``<prefix>:{t<tenant>}:``, the start of every key of one tenant."""
    return f"{prefix}:{{t{tenant_id}}}:"


class TenantKeys:
    """Key builders for one tenant; build once per tenant and reuse (the base is precomputed)."""

    __slots__ = ("base", "tenant_id")

    def __init__(self, prefix: str, tenant_id: int) -> None:
        self.tenant_id = tenant_id
        self.base = tenant_base(prefix, tenant_id)

    def window_minute(self, minute: int) -> str:
        """Hash of the calls routed during epoch minute ``minute``: field = agent id, value = calls."""
        return f"{self.base}win:{minute}"

    def window_hour(self, hour: int) -> str:
        """Hash of the calls routed during epoch hour ``hour``: field = agent id, value = calls."""
        return f"{self.base}winh:{hour}"

    def window_base(self, window_hours: int) -> str:
        """Hash caching each agent's calls in the completed minutes of a ``window_hours`` window, as
        ``<minute>:<sum>`` for the minute it was summed in (the current minute's bucket is added live).
        A 2-minute key; deleting it (or a field) is always safe."""
        return f"{self.base}wb:{window_hours}"

    def window_keys_reaching(self, now_min: int) -> list[str]:
        """Every window bucket and cached window sum that any window can still read at epoch minute
        ``now_min`` (the longest window and a margin either side): where a reset deletes agents'
        fields."""
        now_hour = now_min // MINUTES_PER_HOUR
        span = (MAX_WINDOW_HOURS + 2) * MINUTES_PER_HOUR
        names = [self.window_base(w) for w in range(1, MAX_WINDOW_HOURS + 1)]
        names += [self.window_minute(m) for m in range(now_min - span, now_min + 2)]
        names += [self.window_hour(h) for h in range(now_hour - MAX_WINDOW_HOURS - 2, now_hour + 2)]
        return names

    def active(self, agent_id: int) -> str:
        """Sorted set of the sessions holding a slot of ``agent_id``, scored by expiry (epoch ms)."""
        return f"{self.base}active:{agent_id}"

    def round_robin(self, group_id: int) -> str:
        """The last member chosen for a round-robin group, as ``<priority>:<agent_id>``."""
        return f"{self.base}rr:{group_id}"

    def priority_levels(self, group_id: int) -> str:
        """Hash of a priority group's rotation among equal priorities: field = priority, value = the
        agent last chosen at that level."""
        return f"{self.base}pr:{group_id}"

    def sticky(self, group_id: int, caller: str) -> str:
        """The agent ``caller`` (normalised From) last reached in the group; lives ``sticky_hours``."""
        return f"{self.base}st:{group_id}:{caller}"

    def outlier_ejections(self, group_id: int) -> str:
        """Hash: agent -> "<until ms>|<ejections in a row>|<reason>|<at ms>|<session>" (settings.outlier:
        out of the group's selection until then, on probation after)."""
        return f"{self.base}olx:{group_id}"

    def outlier_state(self, group_id: int) -> str:
        """Hash: ``s:<agent>`` consecutive failures, ``w:<agent>`` "<start ms>:<failures>:<calls>"."""
        return f"{self.base}ol:{group_id}"

    def call(self, session: str) -> str:
        """Hash of one call's routing state: ``cur`` (agent holding a slot), ``tried`` (``,1,5,``),
        ``att`` (last attempt number), ``end`` (the call is over), and per decided stage ``d:<stage>``
        = ``<candidate-index>|<agent>|<attempt>|<cxml>``, which repeats of that webhook answer with."""
        return f"{self.base}call:{session}"

    def last_chosen(self) -> str:
        """Hash of when each agent was last chosen: field = agent id, value = epoch ms."""
        return f"{self.base}last"

    def seen(self, dedupe_id: str) -> str:
        """Marks a session update or CDR delivery as applied (``SET NX`` with a TTL): repeats are
        dropped. ``dedupe_id`` is ``<token>:su:<eventId>``, ``<token>:su:<status>:<modifiedAt>`` or
        ``<token>:cdr``."""
        return f"{self.base}seen:{dedupe_id}"
