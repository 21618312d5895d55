"""The engine's heartbeat: every few seconds one small JSON message on core NATS saying which engine
this is and which snapshot version of each tenant it runs, so the control plane can show the replicas
and spot one stuck on an old config. Fire and forget: it never waits on NATS and never blocks serving."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable

import structlog
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError

from routing_engine import metrics
from shared.cancellation import raise_if_cancelling
from shared.events import HEARTBEAT_ENCODER, EngineHeartbeat

log = structlog.get_logger("routing_engine.heartbeat")


class HeartbeatPublisher:
    def __init__(
        self,
        *,
        subject: str,
        interval_s: float,
        engine_id: str,
        versions: Callable[[], dict[int, int]],
    ) -> None:
        self.subject = subject
        self.interval_s = interval_s
        self.engine_id = engine_id
        self.pid = os.getpid()
        self.started_at = time.time()
        self._versions = versions
        self._nc: NATS | None = None
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    def beat(self) -> EngineHeartbeat:
        return EngineHeartbeat(
            engine_id=self.engine_id,
            pid=self.pid,
            started_at=self.started_at,
            sent_at=time.time(),
            versions=self._versions(),
        )

    def start(self, nc: NATS) -> None:
        self._nc = nc
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="vlb-heartbeat")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            raise_if_cancelling()
            nc = self._nc
            if nc is not None and nc.is_connected:
                try:
                    # Core NATS publish only appends to the client's write buffer.
                    await nc.publish(self.subject, HEARTBEAT_ENCODER.encode(self.beat()))
                except NatsError as exc:
                    raise_if_cancelling()
                    metrics.NATS_ERRORS.labels("heartbeat").inc()
                    log.warning("heartbeat_failed", error=str(exc) or type(exc).__name__)
                else:
                    self.sent += 1
                    metrics.HEARTBEATS.inc()
            await asyncio.sleep(self.interval_s)
