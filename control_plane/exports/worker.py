"""Every control plane runs one ExportWorker (app lifespan, ``app.state.exports``): it owns the exports'
database pools, the NATS connection to the object store, and the loop that runs asynchronous export
jobs one at a time and deletes files past their expiry.

A job is claimed from the table (``jobs.claim``), its file streamed from PostgreSQL through gzip into
the object store (``objects.ObjectWriter``) while a heartbeat renews the lease; a worker that dies
mid-way leaves a running job whose lease runs out, and the next worker to look (any replica, or this one
restarted) runs it again from the start, purging the chunks the dead attempt left. Starting never waits
for NATS or the database: the loop connects and retries in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import socket
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog
from litestar import Litestar
from litestar.exceptions import ServiceUnavailableException
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.object_store import ObjectStore
from prometheus_client import Counter
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, create_async_engine

from control_plane.db.models import ExportJob
from control_plane.exports import jobs, objects
from control_plane.exports.fields import ExportFormat, ExportType, select_fields
from control_plane.exports.query import ExportQuery, ExportStream, build_query
from control_plane.exports.service import file_name, where_clause
from control_plane.nats_connection import connect_nats
from control_plane.settings import ControlPlaneSettings
from control_plane.tenancy import TenantScope
from shared.cancellation import raise_if_cancelling

log = structlog.get_logger("control_plane.exports")

EXPIRE_EVERY_S = 30.0
EXPIRE_BATCH = 100
MAX_RETRY_DELAY_S = 15.0
STOP_WAIT_S = 5.0

JOBS = Counter("vlb_cp_export_jobs_total", "Asynchronous export attempts by outcome", ["outcome"])
EXPIRED = Counter("vlb_cp_export_files_expired_total", "Export files deleted at expiry")


class LeaseLost(Exception):
    """Another worker holds the job now (ours stopped renewing in time)."""


class ExportWorker:
    def __init__(self, settings: ControlPlaneSettings, *, connect_timeout_s: float = 2.0) -> None:
        self.settings = settings
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.connect_timeout_s = connect_timeout_s
        self.lease_s = settings.exports_lease_s
        self.streams: AsyncEngine | None = None  # streaming exports: one connection each
        self.engine: AsyncEngine | None = None  # the job loop and its COPY
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._store: ObjectStore | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._expired_at = 0.0
        self.failures = 0
        self.completed = 0

    # --- lifecycle ---

    async def start(self, *, run_jobs: bool = True) -> None:
        s = self.settings
        self._stopping = False
        self.streams = create_async_engine(
            s.database_url,
            pool_size=max(1, s.exports_max_streams),
            max_overflow=0,
            pool_timeout=2,
            pool_pre_ping=True,
        )
        # The job loop: claims, lease renewals and the job's own COPY.
        self.engine = create_async_engine(s.database_url, pool_size=3, max_overflow=0, pool_pre_ping=True)
        if run_jobs:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="vlb-export-worker")

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_WAIT_S)
        await self._drop_connection()
        for engine in (self.streams, self.engine):
            if engine is not None:
                await engine.dispose()
        self.streams = self.engine = None

    def wake(self) -> None:
        self._wake.set()

    # --- what the routes use ---

    @property
    def dialect(self) -> Dialect:
        assert self.streams is not None
        return self.streams.dialect

    async def stream_connection(self) -> AsyncConnection:
        """A connection for one streaming export; 503 when this process already serves as many as its
        pool holds (``exports_max_streams``)."""
        assert self.streams is not None
        try:
            return await self.streams.connect()
        except PoolTimeoutError:
            raise ServiceUnavailableException(
                "Too many exports are streaming from this server; retry shortly.",
                headers={"Retry-After": "5"},
            ) from None

    async def object_store(self) -> tuple[JetStreamContext, ObjectStore]:
        """The object store, connecting first if needed; 503 while NATS is away."""
        try:
            return await self._ensure_store()
        except Exception as exc:
            log.warning("exports_store_unavailable", error=str(exc) or type(exc).__name__)
            raise ServiceUnavailableException(
                "The export file store is unavailable; retry shortly."
            ) from None

    # --- the loop ---

    async def _run(self) -> None:
        while not self._stopping:
            raise_if_cancelling()
            try:
                await self._ensure_store()
                ran = await self.run_next()
                if time.monotonic() - self._expired_at >= EXPIRE_EVERY_S:
                    await self.expire_due()
                self.failures = 0
                if not ran:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=self.settings.exports_poll_s)
                    self._wake.clear()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS or the database away: retry with a back-off
                raise_if_cancelling()
                self.failures += 1
                log.warning(
                    "export_worker_failed", error=str(exc) or type(exc).__name__, failures=self.failures
                )
                if self._nc is None or not self._nc.is_connected:
                    await self._drop_connection()
                await asyncio.sleep(min(MAX_RETRY_DELAY_S, 0.25 * 2 ** min(self.failures, 8)))

    async def run_next(self) -> bool:
        """Claim one job and run it; False when none was waiting."""
        assert self.engine is not None
        async with self.engine.begin() as conn:
            job_id = await jobs.claim(conn, self.owner, self.lease_s)
        if job_id is None:
            return False
        async with self.engine.connect() as conn:
            job = await jobs.load(conn, job_id)
        log_ = log.bind(export_id=job.id, tenant_id=job.tenant_id, attempt=job.attempts)
        if job.attempts > self.settings.exports_max_attempts:
            async with self.engine.begin() as conn:
                await jobs.give_up(conn, job.id, self.owner, f"gave up after {job.attempts - 1} attempts")
            JOBS.labels("gave_up").inc()
            log_.warning("export_gave_up")
            return True
        started = time.monotonic()
        try:
            rows, size = await self._run_leased(job)
        except asyncio.CancelledError:
            # Stopping (a deploy): give the job back so another worker takes it now, not after the
            # lease. One cancellation was delivered; these awaits run unless a second one comes.
            with contextlib.suppress(Exception):
                async with self.engine.begin() as conn:
                    await jobs.release(conn, job.id, self.owner)
                log_.info("export_released")
            raise
        except LeaseLost:
            JOBS.labels("lease_lost").inc()
            log_.warning("export_lease_lost")
        except Exception as exc:
            JOBS.labels("failed").inc()
            log_.warning("export_failed", error=str(exc) or type(exc).__name__)
            async with self.engine.begin() as conn:
                await jobs.fail(
                    conn,
                    job.id,
                    self.owner,
                    str(exc) or type(exc).__name__,
                    self.settings.exports_max_attempts,
                )
        else:
            self.completed += 1
            JOBS.labels("done").inc()
            log_.info("export_done", rows=rows, bytes=size, seconds=round(time.monotonic() - started, 2))
        return True

    async def _run_leased(self, job: ExportJob) -> tuple[int, int]:
        """Run the job while renewing its lease every third of it; LeaseLost when renewing fails."""
        assert self.engine is not None
        work = asyncio.get_running_loop().create_task(self._export(job))
        try:
            while True:
                done, _ = await asyncio.wait({work}, timeout=self.lease_s / 3)
                if done:
                    return work.result()
                async with self.engine.begin() as conn:
                    if not await jobs.renew(conn, job.id, self.owner, self.lease_s):
                        raise LeaseLost
        finally:
            if not work.done():
                work.cancel()
                await asyncio.wait({work})

    async def _export(self, job: ExportJob) -> tuple[int, int]:
        """Write the job's gzip file into the object store and mark the job done."""
        assert self.engine is not None
        js, _ = await self._ensure_store()
        bucket = self.settings.exports_bucket
        await _purge_earlier_attempts(js, bucket, job)  # what an attempt that died half-way left behind
        query = await self._query(job)
        stamp = int(job.created_at.timestamp() * 1_000_000)  # unique across databases, as chunk_token
        name = f"t{job.tenant_id}/{job.id}-{stamp}/{file_name(job)}"
        writer = objects.ObjectWriter(js, bucket, name, chunk_token(job.id, job.created_at, job.attempts))
        gz = zlib.compressobj(self.settings.exports_gzip_level, zlib.DEFLATED, 31)  # 31: gzip container
        # The job's own pool: busy streaming exports never make a job wait (and fail) for a connection.
        stream = ExportStream(await self.engine.connect(), query)
        try:
            async for chunk in stream:
                # zlib releases the GIL: compressing in a thread keeps the event loop serving requests.
                data = await asyncio.to_thread(gz.compress, chunk)
                if data:
                    await writer.write(data)
            await writer.write(gz.flush())
            await writer.close()
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(writer.abort())
            raise
        finally:
            await stream.aclose()
        async with self.engine.begin() as conn:
            finished = await jobs.finish(
                conn,
                job.id,
                self.owner,
                rows=stream.rows,
                size=writer.size,
                object_name=name,
                ttl_s=self.settings.exports_ttl_s,
            )
        if not finished:  # the lease went to another worker meanwhile: its file is the one kept
            await objects.purge_chunks(js, bucket, chunk_token(job.id, job.created_at, job.attempts))
            raise LeaseLost
        # Again now that the file is kept: a worker that lost its lease to this attempt may have
        # written a chunk after the purge at the start, before it noticed.
        await _purge_earlier_attempts(js, bucket, job)
        return stream.rows, writer.size

    async def _query(self, job: ExportJob) -> ExportQuery:
        assert self.engine is not None
        kind = ExportType(job.type)
        fields = select_fields(kind, job.fields)
        async with AsyncSession(self.engine) as session:  # TenantScope builds statements; no I/O here
            where = where_clause(TenantScope(session, job.tenant_id), kind, job.resolved_filters)
        return build_query(self.engine.dialect, kind, where, fields, ExportFormat(job.format), job.anonymize)

    async def expire_due(self) -> int:
        """Delete the files of jobs past their expiry and mark the jobs expired; returns how many."""
        assert self.engine is not None
        self._expired_at = time.monotonic()
        _, store = await self._ensure_store()
        count = 0
        while True:
            async with self.engine.begin() as conn:
                due = await jobs.expired(conn, EXPIRE_BATCH)
                for job_id, name in due:
                    if name:
                        await objects.delete_object(store, name)
                    await jobs.mark_expired(conn, job_id)
            count += len(due)
            EXPIRED.inc(len(due))
            if len(due) < EXPIRE_BATCH:
                break
        if count:
            log.info("exports_expired", count=count)
        return count

    # --- NATS ---

    async def _ensure_store(self) -> tuple[JetStreamContext, ObjectStore]:
        if self._nc is None or self._nc.is_closed:
            self._nc = await connect_nats(
                self.settings.nats_servers,
                name="vlb-control-plane-exports",
                timeout_s=self.connect_timeout_s,
                error_cb=_nats_error,
            )
            self._js = self._nc.jetstream(timeout=10.0)
            self._store = None
        if self._store is None:
            assert self._js is not None
            self._store = await objects.open_store(
                self._js, self.settings.exports_bucket, self.settings.nats_replicas
            )
        assert self._js is not None
        return self._js, self._store

    async def _drop_connection(self) -> None:
        nc, self._nc = self._nc, None
        self._js = self._store = None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()


async def _purge_earlier_attempts(js: JetStreamContext, bucket: str, job: ExportJob) -> None:
    """Remove the chunks every earlier attempt at ``job`` wrote (``chunk_token``)."""
    for earlier in range(1, job.attempts):
        await objects.purge_chunks(js, bucket, chunk_token(job.id, job.created_at, earlier))


def chunk_token(job_id: int, created_at: datetime.datetime, attempt: int) -> str:
    """The chunk subject token of one attempt at a job (so a later attempt can purge it). The job's
    creation instant makes it unique among databases sharing the bucket (a restored database, a second
    deployment, test runs), whose job ids repeat: their chunks would otherwise mix under one subject."""
    return f"export{job_id}c{int(created_at.timestamp() * 1_000_000)}a{attempt}"


async def _nats_error(exc: Any) -> None:
    log.debug("exports_nats_error", error=str(exc) or type(exc).__name__)


def exports_lifespan(
    settings: ControlPlaneSettings,
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """The app lifespan hook: an ExportWorker on ``app.state.exports`` while the app runs."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        worker = ExportWorker(settings)
        app.state.exports = worker
        await worker.start()
        try:
            yield
        finally:
            await worker.stop()

    return lifespan


__all__ = ["ExportWorker", "LeaseLost", "chunk_token", "exports_lifespan"]
