"""The live feed's fan-out, one per control-plane worker (DESIGN §4): the tenant's call events come
from ONE core NATS subscription per tenant per worker, ``<events prefix>.<tenant>.>``, taken when the
tenant's first client joins and dropped when its last leaves; the stats are computed once per interval
per tenant per worker. Workers share nothing but NATS and Redis, so any worker can serve any client.

The NATS callback never waits: it encodes each event once and appends the text to every client's
bounded queue. A client whose queue is full (it does not read, or it is gone and the socket backs up)
is ended with 1013 there and then; its own send loop is the only thing that ever waits on its socket,
so nothing it does can hold back NATS, the other clients or the events consumer (a separate
connection and a JetStream pull consumer). While NATS is away the clients stay connected (stats go on,
they come from Redis); nats-py reconnects and subscribes again by itself, and a connection that was
never made or was closed is made again and every tenant subscribed on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from control_plane.auth.context import authenticate
from control_plane.live import metrics
from control_plane.live.messages import Stats, call_frame, encode_text
from control_plane.live.stats import tenant_agent_ids, tenant_stats
from control_plane.nats_connection import connect_nats
from control_plane.settings import ControlPlaneSettings
from shared.cancellation import raise_if_cancelling
from shared.events import decode_events_leniently
from shared.redis_keys import TenantKeys

log = structlog.get_logger("control_plane.live")

CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_SLOW = 1013
CLOSE_GOING_AWAY = 1001
CONNECT_TIMEOUT_S = 2.0
MAX_RETRY_DELAY_S = 10.0
STOP_WAIT_S = 2.0


class LiveClient:
    """One websocket's side of the hub: a bounded queue of frames (text, already encoded) and the
    close code once it has been ended (1013 too slow, 1001 shutting down)."""

    __slots__ = ("close_code", "ended", "limit", "queue", "tenant_id", "wake")

    def __init__(self, tenant_id: int, limit: int) -> None:
        self.tenant_id = tenant_id
        self.limit = max(1, limit)
        self.queue: deque[str] = deque()
        self.wake = asyncio.Event()
        self.ended = asyncio.Event()
        self.close_code: int | None = None

    def offer(self, frame: str) -> None:
        """Queue a frame; never waits. A full queue ends the client with 1013."""
        if self.close_code is not None:
            return
        if len(self.queue) >= self.limit:
            metrics.DROPPED.inc()
            self.end(CLOSE_TOO_SLOW)
            return
        self.queue.append(frame)
        self.wake.set()

    def end(self, code: int) -> None:
        if self.close_code is None:
            self.close_code = code
            self.queue.clear()
            self.ended.set()
            self.wake.set()


class TenantFeed:
    """A tenant's clients on this worker, its NATS subscription and its stats loop."""

    def __init__(self, hub: LiveHub, tenant_id: int) -> None:
        self.hub = hub
        self.tenant_id = tenant_id
        self.subject = f"{hub.settings.events_subject_prefix}.{tenant_id}.>"
        self.keys = TenantKeys(hub.settings.redis_prefix, tenant_id)
        self.clients: set[LiveClient] = set()
        self.last_stats: str | None = None
        self.wake = asyncio.Event()
        self._sub: Subscription | None = None
        self._sub_conn: NATS | None = None
        self._agent_ids: list[int] = []
        self._agents_at = float("-inf")
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"vlb-live-{tenant_id}")

    # --- events ---

    async def _on_message(self, msg: Msg) -> None:
        """nats-py awaits this for each message in turn: it must never wait."""
        try:
            events, problems = decode_events_leniently(msg.data)
        except msgspec.DecodeError:
            metrics.ERRORS.labels("decode").inc()
            return
        if problems:
            metrics.ERRORS.labels("decode").inc(len(problems))
        frames: list[tuple[str, str]] = []
        for event in events:
            if event.tenant_id != self.tenant_id:  # the subject said otherwise: never another's
                continue
            frame = call_frame(event)
            if frame is not None:
                frames.append((frame.type, encode_text(frame)))
        if not frames:
            return
        clients = tuple(self.clients)
        for kind, text in frames:
            for client in clients:
                client.offer(text)
            metrics.FRAMES.labels(kind).inc(len(clients))

    async def _subscribe(self) -> None:
        nc = self.hub.nc
        if nc is None or nc.is_closed or (self._sub is not None and self._sub_conn is nc):
            return
        self._sub = await nc.subscribe(self.subject, cb=self._on_message)
        self._sub_conn = nc
        # The server has the subscription before the first stats go out (so a client that saw them
        # misses no event published after).
        with contextlib.suppress(Exception):
            await nc.flush(timeout=1)
        log.debug("live_subscribed", tenant_id=self.tenant_id)

    async def _unsubscribe(self) -> None:
        sub, self._sub, self._sub_conn = self._sub, None, None
        if sub is not None:
            with contextlib.suppress(Exception):  # a closed connection has dropped it already
                await sub.unsubscribe()

    # --- stats ---

    async def _agents(self) -> list[int]:
        now = time.monotonic()
        if now - self._agents_at >= self.hub.settings.live_agents_cache_s:
            async with self.hub.sessions() as session:
                self._agent_ids = await tenant_agent_ids(session, self.tenant_id)
            self._agents_at = now
        return self._agent_ids

    async def _stats(self) -> None:
        stats: Stats = await tenant_stats(self.hub.redis, self.keys, await self._agents())
        text = self.last_stats = encode_text(stats)
        clients = tuple(self.clients)
        for client in clients:
            client.offer(text)
        metrics.FRAMES.labels("stats").inc(len(clients))

    # --- the loop ---

    async def _run(self) -> None:
        interval = self.hub.settings.live_stats_interval_s
        next_stats = time.monotonic()
        try:
            while True:
                raise_if_cancelling()
                self.wake.clear()  # before subscribing: a new connection's wake is not missed
                try:
                    await self._subscribe()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # NATS away: the next wake or interval tries again
                    raise_if_cancelling()
                    metrics.ERRORS.labels("subscribe").inc()
                    log.warning("live_subscribe_failed", tenant_id=self.tenant_id, error=_text(exc))
                now = time.monotonic()
                if now >= next_stats:
                    next_stats = max(next_stats + interval, now)
                    try:
                        await self._stats()
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # Redis or the database away: skip this round
                        raise_if_cancelling()
                        metrics.ERRORS.labels("stats").inc()
                        log.warning("live_stats_failed", tenant_id=self.tenant_id, error=_text(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), max(0.0, next_stats - time.monotonic()))
        finally:
            await self._unsubscribe()


class LiveHub:
    """Owned by the app's lifespan (``app.state.live_hub``): ``await start()`` / ``await stop()``."""

    def __init__(self, settings: ControlPlaneSettings, redis: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.nc: NATS | None = None
        self.feeds: dict[int, TenantFeed] = {}
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._task: asyncio.Task[None] | None = None
        self._ending: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()  # set when the last client of the worker leaves
        self.stopping = False

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        assert self._sessions is not None, "LiveHub not started"
        return self._sessions

    async def start(self) -> None:
        self._engine = create_async_engine(self.settings.database_url, pool_size=2, pool_pre_ping=True)
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)
        self._task = asyncio.get_running_loop().create_task(self._connect_loop(), name="vlb-live-nats")

    async def stop(self) -> None:
        """Close every client with 1001, then drop the subscriptions and the connection."""
        self.stopping = True
        for feed in list(self.feeds.values()):
            for client in list(feed.clients):
                client.end(CLOSE_GOING_AWAY)
        if self.feeds:  # their handlers close and leave
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), STOP_WAIT_S)
        tasks = [feed.task for feed in self.feeds.values()] + list(self._ending)
        if self._task is not None:
            tasks.append(self._task)
        self.feeds.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_WAIT_S)
        self._task = None
        nc, self.nc = self.nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    # --- clients ---

    async def tenant_of(self, token: str | None) -> int | None:
        """The tenant of a valid API token (the same check as every HTTP route's), else None."""
        if not token:
            return None
        async with self.sessions() as session, session.begin():
            found = await authenticate(session, token)
        return None if found is None else found[0].tenant_id

    def join(self, tenant_id: int) -> LiveClient:
        """A new client of ``tenant_id``; it starts with the tenant's latest stats, when there are any."""
        client = LiveClient(tenant_id, self.settings.live_client_queue)
        feed = self.feeds.get(tenant_id)
        if feed is None:
            feed = self.feeds[tenant_id] = TenantFeed(self, tenant_id)
            metrics.TENANTS.inc()
        feed.clients.add(client)
        metrics.CLIENTS.inc()
        if self.stopping:
            client.end(CLOSE_GOING_AWAY)
        elif feed.last_stats is not None:
            client.offer(feed.last_stats)
        return client

    def leave(self, client: LiveClient) -> None:
        metrics.CLIENTS.dec()
        feed = self.feeds.get(client.tenant_id)
        if feed is None:
            return
        feed.clients.discard(client)
        if not feed.clients:  # the tenant's last client on this worker: unsubscribe
            del self.feeds[client.tenant_id]
            metrics.TENANTS.dec()
            feed.task.cancel()
            self._ending.add(feed.task)
            feed.task.add_done_callback(self._ending.discard)
            if not self.feeds:
                self._idle.set()

    # --- NATS ---

    async def _connect_loop(self) -> None:
        """Connect (retrying while NATS is away); once connected nats-py reconnects and resubscribes
        on its own, and this loop only watches for a connection that was closed for good."""
        failures = 0
        while True:
            raise_if_cancelling()
            if self.nc is not None and not self.nc.is_closed:
                await asyncio.sleep(1.0)
                continue
            try:
                self.nc = await connect_nats(
                    self.settings.nats_servers,
                    name="vlb-control-plane-live",
                    timeout_s=CONNECT_TIMEOUT_S,
                    error_cb=_nats_error,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()
                failures += 1
                metrics.ERRORS.labels("connect").inc()
                log.warning("live_nats_connect_failed", error=_text(exc), failures=failures)
                await asyncio.sleep(min(MAX_RETRY_DELAY_S, 0.25 * 2 ** min(failures, 8)))
                continue
            failures = 0
            for feed in self.feeds.values():
                feed.wake.set()  # subscribe on the new connection now


async def _nats_error(exc: Any) -> None:
    metrics.ERRORS.labels("nats").inc()
    log.debug("live_nats_error", error=_text(exc))


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
