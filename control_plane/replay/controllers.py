"""Route: POST /api/routing/replay."""

from __future__ import annotations

from litestar import Controller, post
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK

from control_plane.auth.context import VIEWER_MAY_WRITE, Auth
from control_plane.replay import service
from control_plane.replay.schemas import ReplayIn, ReplayOut


class RoutingReplayController(Controller):
    path = "/api/routing"
    tags = ["routing"]

    # Like the rules dry run it changes nothing (no row, no counter): viewers may run it too.
    @post("/replay", status_code=HTTP_200_OK, opt={VIEWER_MAY_WRITE: True})
    async def replay(self, auth: Auth, data: JSONBody[ReplayIn]) -> ReplayOut:
        """Run the tenant's last ``last_calls`` inbound calls through the current routing configuration
        and through ``config`` (a draft applied over it), with simulated counters only, and compare."""
        return await service.run(auth.scope, data)


__all__ = ["RoutingReplayController"]
