"""Publish committed config changes to the engines' JetStream KV bucket (DESIGN §2).

``TenantScope.config_changed()`` bumps the tenant's ``config_version`` and writes a ``snapshot_outbox``
row in the request's transaction, and notes the tenant in ``session.info["config_changed"]``. An
``after_commit`` session hook wakes the publisher for those tenants; it compiles each one's snapshot
from committed data, puts it under ``tenant.<id>`` with a compare-and-set on the key's revision (a
version never overwrites a newer one, even with several control-plane replicas) and marks the outbox
rows up to that version published.

On start and every ``snapshot_republish_s`` it publishes every tenant that still has unpublished outbox
rows, so a crash (or NATS outage) between commit and publish heals itself; on start it also republishes
tenants whose key is missing or older than the database, and deletes keys of tenants that no longer
exist. NATS being down never fails an API request: the publisher logs, counts and retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec
import structlog
from litestar import Litestar
from nats.aio.client import Client as NATS
from nats.js.errors import (
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
)
from nats.js.kv import KeyValue
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import delete, event, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from control_plane.db.models import SnapshotOutbox, Tenant
from control_plane.nats_connection import connect_nats
from control_plane.settings import ControlPlaneSettings
from control_plane.snapshots.compile import compile_snapshot
from shared.cancellation import raise_if_cancelling
from shared.snapshot import SNAPSHOT_ENCODER, snapshot_key

log = structlog.get_logger("control_plane.snapshots")

KEY_PREFIX = "tenant."
# Where advanced-alchemy's Litestar plugin keeps the app's AsyncEngine (its default key).
APP_ENGINE_KEY = "db_engine"
CAS_RETRIES = 5
MAX_RETRY_DELAY_S = 30.0
# Published outbox rows are kept this long (to see what was published when), then pruned.
OUTBOX_KEEP = datetime.timedelta(hours=24)

PUBLISHED = Counter(
    "vlb_cp_snapshot_publish_total", "Snapshot KV writes by outcome", ["outcome"]
)  # published | not_newer | deleted
PUBLISH_ERRORS = Counter("vlb_cp_snapshot_publish_errors_total", "Snapshot publishes that failed", ["stage"])
OUTBOX_PENDING = Gauge("vlb_cp_snapshot_outbox_pending", "Outbox rows not yet published")
OUTBOX_LAG = Gauge("vlb_cp_snapshot_outbox_lag_seconds", "Age of the oldest unpublished outbox row")
COMMIT_TO_PUBLISH = Histogram(
    "vlb_cp_snapshot_commit_to_publish_seconds",
    "From the outbox row's creation to the KV write",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


class _Version(msgspec.Struct):
    """Just the version of a stored snapshot (the rest of the value is skipped when decoding)."""

    version: int = 0


_VERSION_DECODER = msgspec.msgpack.Decoder(_Version)


def tenant_of_key(key: str) -> int | None:
    if not key.startswith(KEY_PREFIX):
        return None
    try:
        return int(key[len(KEY_PREFIX) :])
    except ValueError:
        return None


def stored_version(value: bytes | None) -> int:
    if not value:
        return 0
    try:
        return _VERSION_DECODER.decode(value).version
    except (msgspec.DecodeError, msgspec.ValidationError):
        return 0  # garbage under our key: any real snapshot replaces it


class SnapshotPublisher:
    """Owned by the app's lifespan: ``await start()`` / ``await stop()``."""

    def __init__(
        self,
        settings: ControlPlaneSettings,
        *,
        connect_timeout_s: float = 2.0,
        app_engine: Callable[[], AsyncEngine | None] | None = None,
    ) -> None:
        self.settings = settings
        # The app's own engine: commits of other apps in the same process (tests) are not ours.
        self._app_engine = app_engine
        self.connect_timeout_s = connect_timeout_s
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._nc: NATS | None = None
        self._kv: KeyValue | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._dirty: set[int] = set()
        self._reconciled = False
        self.failures = 0  # consecutive failed rounds; drives the retry back-off
        self.published_versions: dict[int, int] = {}  # tenant → last version this process wrote or saw

    # --- lifecycle ---

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._engine = create_async_engine(self.settings.database_url, pool_size=2, pool_pre_ping=True)
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)
        event.listen(Session, "after_commit", self._after_commit)
        event.listen(Session, "after_rollback", self._after_rollback)
        self._task = self._loop.create_task(self._run(), name="vlb-snapshot-publisher")

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            event.remove(Session, "after_commit", self._after_commit)
            event.remove(Session, "after_rollback", self._after_rollback)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None
            self._kv = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    # --- the commit hook ---

    def _owns(self, session: Session) -> bool:
        engine = self._app_engine() if self._app_engine is not None else None
        if engine is None:
            return True
        try:
            return session.get_bind() is engine.sync_engine
        except Exception:  # an unbound session: not the app's
            return False

    def _after_commit(self, session: Session) -> None:
        if "config_changed" in session.info and self._owns(session):
            self.notify(session.info.pop("config_changed"))

    def _after_rollback(self, session: Session) -> None:
        if "config_changed" in session.info and self._owns(session):
            session.info.pop("config_changed", None)

    def notify(self, tenant_ids: Iterable[int]) -> None:
        """Ask for these tenants to be published soon (safe from any thread)."""
        ids = set(tenant_ids)
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._mark(ids)
        else:
            loop.call_soon_threadsafe(self._mark, ids)

    def _mark(self, ids: set[int]) -> None:
        self._dirty |= ids
        self._wake.set()

    # --- the loop ---

    async def _run(self) -> None:
        next_sweep = 0.0  # sweep the outbox at once on start
        while True:
            raise_if_cancelling()
            now = time.monotonic()
            sweep = now >= next_sweep
            tenants, self._dirty = self._dirty, set()
            try:
                await self.publish_round(tenants, sweep=sweep)
                self.failures = 0
                if sweep:
                    next_sweep = now + self.settings.snapshot_republish_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS or the DB is down: keep the tenants, retry with back-off
                raise_if_cancelling()
                self._dirty |= tenants
                self.failures += 1
                PUBLISH_ERRORS.labels("round").inc()
                log.warning(
                    "snapshot_publish_failed",
                    error=str(exc) or type(exc).__name__,
                    tenants=sorted(tenants)[:20],
                    failures=self.failures,
                )
                await self._drop_connection()
            if self.failures:
                delay = min(
                    MAX_RETRY_DELAY_S, self.settings.snapshot_republish_s, 0.5 * 2 ** (self.failures - 1)
                )
                next_sweep = min(next_sweep, time.monotonic() + delay)  # the retry sweeps the outbox too
            else:
                delay = max(0.0, next_sweep - time.monotonic())
            self._wake.clear()
            if self._dirty and not self.failures:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def publish_round(self, tenants: set[int], *, sweep: bool) -> None:
        """Publish ``tenants``; with ``sweep`` also every tenant that has unpublished outbox rows."""
        if sweep:
            tenants = tenants | set(await self._pending_tenants())
        if not tenants and not (sweep and not self._reconciled):
            return
        kv = await self._bucket()
        if sweep and not self._reconciled:
            tenants |= await self._reconcile(kv)
            self._reconciled = True
        for tenant_id in sorted(tenants):
            await self.publish_tenant(kv, tenant_id)
        if sweep:
            await self._update_outbox_metrics()

    async def publish_tenant(self, kv: KeyValue, tenant_id: int) -> None:
        assert self._sessions is not None
        key = snapshot_key(tenant_id)
        async with self._sessions() as session:
            snap = await compile_snapshot(
                session,
                tenant_id,
                secret_key=self.settings.secret_key,
                snapshot_key=self.settings.snapshot_key,
            )
            oldest = await session.scalar(
                select(func.min(SnapshotOutbox.created_at)).where(
                    SnapshotOutbox.tenant_id == tenant_id, SnapshotOutbox.published_at.is_(None)
                )
            )
        if snap is None:
            with contextlib.suppress(KeyNotFoundError):
                await kv.delete(key)
            self.published_versions.pop(tenant_id, None)
            PUBLISHED.labels("deleted").inc()
            log.info("snapshot_deleted", tenant_id=tenant_id)
            return
        value = SNAPSHOT_ENCODER.encode(snap)
        outcome = "published"
        for _ in range(CAS_RETRIES):
            try:
                entry = await kv.get(key)
                revision: int | None = entry.revision
                held = stored_version(entry.value)
            except KeyNotFoundError:  # also a deleted key
                revision, held = None, 0
            if held >= snap.version:
                outcome = "not_newer"
                break
            try:
                if revision is None:
                    await kv.create(key, value)
                else:
                    await kv.update(key, value, last=revision)
                break
            except KeyWrongLastSequenceError:
                continue  # another publisher wrote in between: look again
        else:
            raise RuntimeError(f"tenant {tenant_id}: the KV key kept changing under the publisher")
        PUBLISHED.labels(outcome).inc()
        if outcome == "published" and oldest is not None:
            COMMIT_TO_PUBLISH.observe(
                max(0.0, (datetime.datetime.now(datetime.UTC) - oldest).total_seconds())
            )
        self.published_versions[tenant_id] = max(snap.version, self.published_versions.get(tenant_id, 0))
        await self._mark_published(tenant_id, snap.version)
        log.info("snapshot_published", tenant_id=tenant_id, version=snap.version, outcome=outcome)

    # --- database helpers ---

    async def _pending_tenants(self) -> list[int]:
        assert self._sessions is not None
        async with self._sessions() as session:
            rows = await session.scalars(
                select(SnapshotOutbox.tenant_id).where(SnapshotOutbox.published_at.is_(None)).distinct()
            )
            return [int(t) for t in rows]

    async def _mark_published(self, tenant_id: int, version: int) -> None:
        assert self._sessions is not None
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(SnapshotOutbox)
                .where(
                    SnapshotOutbox.tenant_id == tenant_id,
                    SnapshotOutbox.version <= version,
                    SnapshotOutbox.published_at.is_(None),
                )
                .values(published_at=datetime.datetime.now(datetime.UTC))
            )

    async def _update_outbox_metrics(self) -> None:
        assert self._sessions is not None
        now = datetime.datetime.now(datetime.UTC)
        async with self._sessions() as session, session.begin():
            count, oldest = (
                await session.execute(
                    select(func.count(), func.min(SnapshotOutbox.created_at)).where(
                        SnapshotOutbox.published_at.is_(None)
                    )
                )
            ).one()
            OUTBOX_PENDING.set(count or 0)
            OUTBOX_LAG.set((now - oldest).total_seconds() if oldest is not None else 0.0)
            old = (
                select(SnapshotOutbox.id)
                .where(SnapshotOutbox.published_at < now - OUTBOX_KEEP)
                .limit(1000)
                .scalar_subquery()
            )
            await session.execute(delete(SnapshotOutbox).where(SnapshotOutbox.id.in_(old)))

    async def _reconcile(self, kv: KeyValue) -> set[int]:
        """On start: tenants whose key is missing or older than the DB, and keys of deleted tenants."""
        assert self._sessions is not None
        async with self._sessions() as session:
            versions = {
                int(t): int(v)
                for t, v in (await session.execute(select(Tenant.id, Tenant.config_version))).all()
            }
        try:
            keys = await kv.keys()
        except NoKeysError:
            keys = []
        stale: set[int] = set()
        held: dict[int, int] = {}
        for key in keys:
            tenant_id = tenant_of_key(key)
            if tenant_id is None:
                continue
            if tenant_id not in versions:
                stale.add(tenant_id)  # publish_tenant finds it gone and deletes the key
                continue
            with contextlib.suppress(KeyNotFoundError):
                held[tenant_id] = stored_version((await kv.get(key)).value)
        stale |= {t for t, v in versions.items() if v > 0 and held.get(t, 0) < v}
        return stale

    # --- NATS ---

    async def _bucket(self) -> KeyValue:
        if self._kv is not None and self._nc is not None and self._nc.is_connected:
            return self._kv
        await self._drop_connection()
        nc = await connect_nats(
            self.settings.nats_servers,
            name="vlb-control-plane-snapshots",
            timeout_s=self.connect_timeout_s,
            error_cb=_nats_error,
        )
        self._nc = nc
        js = nc.jetstream(timeout=self.connect_timeout_s)
        try:
            self._kv = await js.key_value(self.settings.config_bucket)
        except BucketNotFoundError:
            log.info("snapshot_bucket_created", bucket=self.settings.config_bucket)
            self._kv = await js.create_key_value(
                bucket=self.settings.config_bucket, history=1, replicas=self.settings.nats_replicas
            )
        return self._kv

    async def _drop_connection(self) -> None:
        nc, self._nc, self._kv = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()


async def _nats_error(exc: Any) -> None:
    PUBLISH_ERRORS.labels("nats").inc()
    log.debug("snapshot_nats_error", error=str(exc) or type(exc).__name__)


def snapshot_lifespan(
    settings: ControlPlaneSettings,
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """The app lifespan hook: a SnapshotPublisher on ``app.state.snapshot_publisher`` while it runs."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        publisher = SnapshotPublisher(settings, app_engine=lambda: app.state.get(APP_ENGINE_KEY))
        app.state.snapshot_publisher = publisher
        await publisher.start()
        try:
            yield
        finally:
            await publisher.stop()

    return lifespan
