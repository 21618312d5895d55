"""The daily purge scheduler every control plane runs (app lifespan, ``app.state.retention``).

Each replica wakes at start (after ``purge_first_check_s``) and then every ``purge_check_s`` and asks
for the purge of the latest slot due (today's at ``purge_hour_utc`` once that hour is past, else
yesterday's). ``runs.run_purge`` makes exactly one of them do it: the others find the lock taken or
the day's row done. A replica that was down when the slot passed (or every replica) runs it at its
first check after start; a missed day never needs catching up separately, since a purge removes
everything older than the cut-offs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import structlog
from litestar import Litestar
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from control_plane.retention.purge import Purger
from control_plane.retention.runs import RunOutcome, run_purge
from control_plane.settings import ControlPlaneSettings

log = structlog.get_logger("control_plane.retention")

STOP_WAIT_S = 10.0


def due_slot(now: datetime.datetime, hour: int) -> datetime.date:
    """The day of the latest scheduled purge at or before ``now`` (UTC)."""
    now = now.astimezone(datetime.UTC)
    return now.date() if now.hour >= hour else now.date() - datetime.timedelta(days=1)


def purger_for(engine: AsyncEngine, settings: ControlPlaneSettings) -> Purger:
    return Purger(
        engine,
        batch=settings.purge_batch,
        lock_timeout_ms=settings.purge_lock_timeout_ms,
        pause_s=settings.purge_pause_s,
    )


class PurgeScheduler:
    def __init__(self, settings: ControlPlaneSettings) -> None:
        self.settings = settings
        self.engine: AsyncEngine | None = None
        self._task: asyncio.Task[None] | None = None
        self.last: RunOutcome | None = None

    async def start(self) -> None:
        # Its own small pool: the lock's connection and the batches' one, never the API's.
        self.engine = create_async_engine(
            self.settings.database_url, pool_size=2, max_overflow=0, pool_pre_ping=True
        )
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="vlb-retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_WAIT_S)
        if self.engine is not None:
            await self.engine.dispose()
            self.engine = None

    async def check(self, now: datetime.datetime | None = None) -> RunOutcome:
        """Run the due slot's purge if nobody has (one check of the loop)."""
        assert self.engine is not None
        day = due_slot(now or datetime.datetime.now(datetime.UTC), self.settings.purge_hour_utc)
        self.last = await run_purge(self.engine, purger_for(self.engine, self.settings), day=day)
        return self.last

    async def _loop(self) -> None:
        await asyncio.sleep(self.settings.purge_first_check_s)
        while True:
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next check tries again
                log.warning("retention.check_failed", error=repr(exc))
            await asyncio.sleep(self.settings.purge_check_s)


def retention_lifespan(
    settings: ControlPlaneSettings,
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """The app lifespan hook: a PurgeScheduler on ``app.state.retention`` (when ``purge_enabled``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if not settings.purge_enabled:
            app.state.retention = None
            yield
            return
        scheduler = PurgeScheduler(settings)
        app.state.retention = scheduler
        await scheduler.start()
        try:
            yield
        finally:
            await scheduler.stop()

    return lifespan


__all__ = ["PurgeScheduler", "due_slot", "purger_for", "retention_lifespan"]
