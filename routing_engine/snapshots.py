"""Load, watch, validate and swap tenant snapshots from the JetStream KV bucket.

On start every key of the bucket is loaded (the bucket is created if missing), then the bucket is
watched. Each value is decoded and compiled off the hot path (in a worker thread) and the new
RoutingState replaces the old one with one reference assignment. Values that do not decode, carry a
newer schema, or are not newer than what is held are counted, logged and ignored; a deleted or purged
key removes its tenant. If NATS goes away the last state keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import msgspec
import structlog
from cryptography.fernet import Fernet
from nats.aio.client import Client as NATS
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NoKeysError
from nats.js.kv import KeyValue

from routing_engine import metrics
from routing_engine.rules import CompiledTenant, RoutingState, build_state, compile_tenant
from shared.cancellation import raise_if_cancelling
from shared.snapshot import SNAPSHOT_DECODER, SNAPSHOT_SCHEMA_VERSION

log = structlog.get_logger("routing_engine.snapshots")

KEY_PREFIX = "tenant."
RESTART_DELAY_S = 1.0


def tenant_of_key(key: str) -> int | None:
    if not key.startswith(KEY_PREFIX):
        return None
    try:
        return int(key[len(KEY_PREFIX) :])
    except ValueError:
        return None


class SnapshotStore:
    """Holds the current RoutingState; ``state`` is read by the hot path without locks."""

    def __init__(self, *, bucket: str, fernet: Fernet | None, replicas: int = 1) -> None:
        self.bucket = bucket
        self.replicas = replicas  # of the bucket, when this engine is the one creating it
        self.fernet = fernet
        self.state = RoutingState()
        self.loaded = False  # the whole bucket was read once
        self.last_applied_at: float | None = None
        self._tenants: dict[int, CompiledTenant] = {}
        self._task: asyncio.Task[None] | None = None
        self._applied = asyncio.Condition()

    # --- applying values (also used directly by tests and tools) ---

    async def apply(self, key: str, value: bytes | None, *, publish: bool = True) -> str:
        """Apply one KV entry (``None`` value = deleted). Returns what happened, as a short word."""
        tenant_id = tenant_of_key(key)
        if tenant_id is None:
            return "ignored"
        if value is None:
            if self._tenants.pop(tenant_id, None) is not None:
                metrics.forget_tenant(tenant_id)
                log.info("snapshot_removed", tenant_id=tenant_id)
                if publish:
                    await self._publish()
                return "removed"
            return "ignored"
        outcome, compiled = await asyncio.to_thread(self._compile, tenant_id, value)
        if compiled is None:
            if outcome != "unchanged":
                metrics.SNAPSHOTS_REJECTED.labels(outcome).inc()
            return outcome
        self._tenants[tenant_id] = compiled
        metrics.SNAPSHOT_VERSION.labels(str(tenant_id)).set(compiled.version)
        metrics.SNAPSHOT_COMPILED_AT.labels(str(tenant_id)).set(compiled.compiled_at)
        for problem in compiled.problems:
            log.warning("snapshot_problem", tenant_id=tenant_id, version=compiled.version, problem=problem)
        if publish:
            await self._publish()
        return "applied"

    def _compile(self, tenant_id: int, value: bytes) -> tuple[str, CompiledTenant | None]:
        try:
            snap = SNAPSHOT_DECODER.decode(value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("snapshot_undecodable", tenant_id=tenant_id, error=str(exc))
            return "undecodable", None
        if snap.schema_version > SNAPSHOT_SCHEMA_VERSION:
            log.warning(
                "snapshot_schema_too_new",
                tenant_id=tenant_id,
                schema_version=snap.schema_version,
                supported=SNAPSHOT_SCHEMA_VERSION,
            )
            return "schema_too_new", None
        if snap.tenant_id != tenant_id:
            log.warning("snapshot_key_mismatch", key_tenant=tenant_id, snapshot_tenant=snap.tenant_id)
            return "key_mismatch", None
        held = self._tenants.get(tenant_id)
        if held is not None and snap.version == held.version and snap.compiled_at == held.compiled_at:
            return "unchanged", None  # the same value read again (a resync after a reconnect)
        if held is not None and snap.version <= held.version:
            log.info("snapshot_not_newer", tenant_id=tenant_id, version=snap.version, held=held.version)
            return "not_newer", None
        try:
            return "applied", compile_tenant(snap, self.fernet)
        except Exception as exc:  # a pattern the grammar refuses, a bad value: keep the old one
            log.warning("snapshot_compile_failed", tenant_id=tenant_id, version=snap.version, error=str(exc))
            return "compile_error", None

    async def _publish(self) -> None:
        self.state = build_state(self._tenants)
        self.last_applied_at = time.time()
        async with self._applied:
            self._applied.notify_all()

    async def wait_loaded(self, within_s: float) -> bool:
        """Wait until the whole bucket was read once (a worker's first load); False when it was not
        within ``within_s``."""
        if self.loaded:
            return True
        async with self._applied:
            try:
                await asyncio.wait_for(self._applied.wait_for(lambda: self.loaded), within_s)
            except TimeoutError:
                return False
        return True

    async def wait_for(self, tenant_id: int, version: int | None, within_s: float = 5.0) -> bool:
        """Wait until ``tenant_id`` is applied at ``version`` or newer (None: until it is gone)."""

        def done() -> bool:
            held = self.state.tenants.get(tenant_id)
            if version is None:
                return held is None
            return held is not None and held.version >= version

        async with self._applied:
            try:
                await asyncio.wait_for(self._applied.wait_for(done), within_s)
            except TimeoutError:
                return False
        return True

    # --- the watch loop ---

    def start(self, nc: NATS) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(nc), name="vlb-snapshots")

    async def resync(self, nc: NATS) -> None:
        """Start the watch over (after a reconnect the server may have lost the watch's consumer);
        the whole bucket is read again and only what changed is applied."""
        await self.stop()
        self.start(nc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _bucket(self, nc: NATS) -> KeyValue:
        js = nc.jetstream()
        try:
            return await js.key_value(self.bucket)
        except BucketNotFoundError:
            log.info("snapshot_bucket_created", bucket=self.bucket)
            return await js.create_key_value(bucket=self.bucket, history=1, replicas=self.replicas)

    async def _run(self, nc: NATS) -> None:
        while True:
            raise_if_cancelling()
            try:
                await self._watch(nc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS gone or the watcher broke: keep serving, then resync
                raise_if_cancelling()
                metrics.NATS_ERRORS.labels("watch").inc()
                log.warning("snapshot_watch_failed", error=str(exc) or type(exc).__name__)
            await asyncio.sleep(RESTART_DELAY_S)

    async def _load_unseen(self, kv: KeyValue, seen: set[int]) -> None:
        try:
            keys = await kv.keys()
        except NoKeysError:
            return
        for key in keys:
            tenant_id = tenant_of_key(key)
            if tenant_id is None or tenant_id in seen:
                continue
            with contextlib.suppress(KeyNotFoundError):
                entry = await kv.get(key)
                seen.add(tenant_id)
                await self.apply(key, entry.value or b"", publish=False)

    async def _watch(self, nc: NATS) -> None:
        kv = await self._bucket(nc)
        watcher = await kv.watchall()
        seen: set[int] = set()
        initial = True
        try:
            while True:
                entry = await watcher.updates(timeout=None)  # type: ignore[no-untyped-call]
                if entry is None:
                    if initial:
                        # nats-py may mark the initial values done early under load: read what the
                        # bucket holds that the watch has not delivered yet.
                        await self._load_unseen(kv, seen)
                        # Tenants whose keys vanished while we were not watching.
                        for gone in set(self._tenants) - seen:
                            await self.apply(f"{KEY_PREFIX}{gone}", None, publish=False)
                        initial = False
                        await self._publish()
                        if not self.loaded:
                            log.info("snapshots_loaded", tenants=len(self._tenants))
                        self.loaded = True
                    continue
                if not isinstance(entry, KeyValue.Entry):
                    raise RuntimeError("snapshot watcher stopped")
                deleted = entry.operation in ("DEL", "PURGE")
                if initial:
                    tenant_id = tenant_of_key(entry.key)
                    if tenant_id is not None and not deleted:
                        seen.add(tenant_id)
                await self.apply(entry.key, None if deleted else (entry.value or b""), publish=not initial)
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
