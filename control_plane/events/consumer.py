"""The durable JetStream pull consumer that writes the engines' CallEvents to PostgreSQL (DESIGN §4).

It fetches up to ``events_batch`` messages at a time (each a batch of CallEvents from one engine,
see shared.events), writes all their events in ONE transaction
(control_plane.events.writer) and acknowledges them only after the commit, so a crash in between
means a redelivery, which the writer's unique keys turn into a no-op. A message that does not decode
(or that the database refuses on its own) is logged, counted and terminated so it never stalls the
stream; a database or NATS outage leaves the messages unacknowledged and is retried with a back-off.
Starting never waits for NATS: connecting happens in the background task.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec
import psycopg
import structlog
from litestar import Litestar
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from control_plane.events import metrics
from control_plane.events.writer import WriteResult, problem, write_events
from control_plane.nats_connection import connect_nats
from control_plane.settings import ControlPlaneSettings
from shared.cancellation import raise_if_cancelling
from shared.events import CallEvent, decode_events_leniently

log = structlog.get_logger("control_plane.events")

DUPLICATE_WINDOW_S = 120.0
FETCH_TIMEOUT_S = 0.5
FETCH_GRACE_S = 5.0
STOP_WAIT_S = 5.0
LAG_EVERY_S = 2.0
MAX_RETRY_DELAY_S = 15.0
# Bigger transactions cost less per event (a call's events folded together, each aggregate row and
# record written once for more events, fewer round trips); a fetch of VLB_EVENTS_BATCH messages while
# a backlog drains holds ~8,000 events, two transactions.
EVENTS_PER_TRANSACTION = 5000
# Transactions written at once (each on a connection of its own): while PostgreSQL works on one, the
# consumer's Python prepares the next.
PARALLEL_TRANSACTIONS = 2
# Database errors that say "try again later" rather than "this data is bad": SQLAlchemy's wrappers and
# psycopg's own (the writer talks to psycopg directly), whose OperationalError covers a full disk
# (53100), too many connections, a deadlock, a cancelled statement and a server shutting down.
TRANSIENT_DB = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    OSError,
    TimeoutError,
)


class EventConsumer:
    """Owned by the app's lifespan: ``await start()`` / ``await stop()``."""

    def __init__(
        self,
        settings: ControlPlaneSettings,
        *,
        durable: str | None = None,
        batch: int | None = None,
        ack_wait_s: float | None = None,
        connect_timeout_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self.durable = durable or settings.events_durable
        self.batch = max(1, batch or settings.events_batch)
        self.ack_wait_s = ack_wait_s or settings.events_ack_wait_s
        self.connect_timeout_s = connect_timeout_s
        self.subject = f"{settings.events_subject_prefix}.>"
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._nc: NATS | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._inflight: list[Msg] = []
        self._lag_at = 0.0
        self.failures = 0
        # Totals since start (for tests and logs).
        self.persisted = 0
        self.duplicates = 0
        self.poison = 0
        self.batches = 0

    # --- lifecycle ---

    async def start(self) -> None:
        self._stopping = False
        self._engine = create_async_engine(
            self.settings.database_url, pool_size=PARALLEL_TRANSACTIONS, pool_pre_ping=True
        )
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="vlb-events-consumer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._stopping = True  # ends the loop even if a library swallows the cancellation below
        if task is not None:
            task.cancel()
            _done, pending = await asyncio.wait({task}, timeout=STOP_WAIT_S)
            if pending:
                # nats-py's fetch can sit on its internal queue through a cancellation (seen under
                # load): closing the connection fails what it waits on, so the task ends.
                log.warning("events_consumer_slow_stop", waited_s=STOP_WAIT_S)
                await self._drop_connection()
                await asyncio.wait({task}, timeout=STOP_WAIT_S)
        # What was fetched but not acknowledged comes back at once rather than after ack_wait.
        for msg in self._inflight:
            with contextlib.suppress(Exception):
                await msg.nak()
        self._inflight = []
        await self._drop_connection()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # --- the loop ---

    async def _run(self) -> None:
        while not self._stopping:
            raise_if_cancelling()
            try:
                sub = await self._subscription()
                processed = await self.poll(sub)
                self.failures = 0
                if processed == 0 or time.monotonic() - self._lag_at >= LAG_EVERY_S:
                    await self._report_lag(sub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS or the database away: retry with a back-off
                raise_if_cancelling()
                self.failures += 1
                metrics.ERRORS.labels("loop").inc()
                log.warning(
                    "events_consumer_failed",
                    error=str(exc) or type(exc).__name__,
                    failures=self.failures,
                )
                await self._release_inflight()
                if self._nc is None or not self._nc.is_connected:
                    await self._drop_connection()
                await asyncio.sleep(min(MAX_RETRY_DELAY_S, 0.25 * 2 ** min(self.failures, 8)))

    async def poll(self, sub: JetStreamContext.PullSubscription) -> int:
        """Fetch one batch of messages and write their events; returns how many messages it handled."""
        try:
            # Our own bound around nats-py's: a fetch must never wait forever.
            async with asyncio.timeout(FETCH_TIMEOUT_S + FETCH_GRACE_S):
                msgs = await sub.fetch(self.batch, timeout=FETCH_TIMEOUT_S)
        except (NatsTimeoutError, TimeoutError):  # nothing to fetch within the timeout
            return 0
        self._inflight = list(msgs)
        events: list[CallEvent] = []
        handled: list[Msg] = []
        for msg in msgs:
            try:
                decoded, problems = decode_events_leniently(msg.data)
            except msgspec.DecodeError as exc:
                await self._terminate(msg, f"undecodable: {exc}")
                continue
            for undecodable in problems:
                self._poison(msg, f"undecodable event: {undecodable}")
            valid: list[CallEvent] = []
            for event in decoded:
                refused = problem(event)
                if refused is None:
                    valid.append(event)
                else:
                    self._poison(msg, f"event {event.event_id[:80]}: {refused}")
            if not valid:
                await self._terminate(msg, None)
                continue
            events.extend(valid)
            handled.append(msg)
        await self._store_all(events)
        # Acknowledged only after the commit (or after its bad events were logged and counted).
        for msg in handled:
            await msg.ack()
        self._inflight = []
        return len(msgs)

    async def _store_all(self, events: list[CallEvent]) -> None:
        """Write the events in transactions of at most EVENTS_PER_TRANSACTION, PARALLEL_TRANSACTIONS at a
        time. The events of one call always go to the same transaction (split by session token), so
        concurrent transactions of this consumer never wait for one another's call records."""
        if not events:
            return
        parts = max(PARALLEL_TRANSACTIONS, -(-len(events) // EVENTS_PER_TRANSACTION))
        if len(events) < 2 * PARALLEL_TRANSACTIONS * 50:  # too few to be worth a second connection
            parts = 1
        chunks: list[list[CallEvent]] = [[] for _ in range(parts)]
        for event in events:
            chunks[hash((event.tenant_id, event.session_token[:255])) % parts].append(event)
        limit = asyncio.Semaphore(PARALLEL_TRANSACTIONS)

        async def store(chunk: list[CallEvent]) -> None:
            async with limit:
                await self._store(chunk)

        # Every transaction runs to its end (a TaskGroup would cancel this task when one fails, and a
        # cancellation must only ever mean "stop"); then the first failure, if any, is raised.
        results = await asyncio.gather(*(store(c) for c in chunks if c), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _store(self, events: list[CallEvent]) -> None:
        try:
            await self._write(events)
        except TRANSIENT_DB:
            raise
        except Exception as exc:  # the database (or the writer) refused something in this batch
            reason = str(exc.orig) if isinstance(exc, DBAPIError) else f"{type(exc).__name__}: {exc}"
            if len(events) == 1:
                self._poison(None, f"event {events[0].event_id[:80]} refused: {reason}")
                return
            # One bad event must not hold the others back: write them one by one.
            log.warning("events_batch_refused", error=reason[:200], size=len(events))
            for one in events:
                await self._store([one])

    async def _write(self, events: list[CallEvent]) -> WriteResult:
        assert self._sessions is not None
        started = time.perf_counter()
        async with self._sessions() as session, session.begin():
            result = await write_events(session, events)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        self.batches += 1
        for kind, count in result.by_kind.items():
            metrics.PERSISTED.labels(kind).inc(count)
        metrics.DUPLICATES.inc(result.duplicates)
        metrics.ORPHANS.inc(result.orphans)
        self.persisted += result.written
        self.duplicates += result.duplicates
        if result.orphans:
            log.info("events_orphaned", count=result.orphans)
        return result

    def _poison(self, msg: Msg | None, reason: str) -> None:
        """An event (or message) that can never be stored: logged and counted, then dropped."""
        self.poison += 1
        metrics.POISON.inc()
        log.error(
            "event_poison",
            subject=msg.subject if msg is not None else None,
            reason=" ".join(reason.split())[:300],
            size=len(msg.data) if msg is not None else None,
        )

    async def _terminate(self, msg: Msg, reason: str | None) -> None:
        """Stop redelivering a message none of whose events can be stored (``reason``: not yet logged)."""
        if reason is not None:
            self._poison(msg, reason)
        with contextlib.suppress(Exception):
            await msg.term()
        with contextlib.suppress(ValueError):
            self._inflight.remove(msg)

    async def _release_inflight(self) -> None:
        msgs, self._inflight = self._inflight, []
        for msg in msgs:
            with contextlib.suppress(Exception):
                await msg.nak(delay=1.0)

    async def _report_lag(self, sub: JetStreamContext.PullSubscription) -> None:
        now = time.monotonic()
        if now - self._lag_at < LAG_EVERY_S / 4:
            return
        self._lag_at = now
        try:
            info = await sub.consumer_info()
        except Exception as exc:
            metrics.ERRORS.labels("lag").inc()
            log.debug("events_lag_unavailable", error=str(exc) or type(exc).__name__)
            return
        metrics.CONSUMER_LAG.set(info.num_pending or 0)
        metrics.ACK_PENDING.set(info.num_ack_pending or 0)

    # --- NATS ---

    async def _subscription(self) -> JetStreamContext.PullSubscription:
        if self._sub is not None and self._nc is not None and self._nc.is_connected:
            return self._sub
        await self._drop_connection()
        nc = await connect_nats(
            self.settings.nats_servers,
            name="vlb-control-plane-events",
            timeout_s=self.connect_timeout_s,
            error_cb=_nats_error,
        )
        self._nc = nc
        js = nc.jetstream(timeout=self.connect_timeout_s)
        await ensure_stream(js, self.settings.events_stream, self.subject, self.settings.nats_replicas)
        self._sub = await js.pull_subscribe(
            self.subject,
            durable=self.durable,
            stream=self.settings.events_stream,
            config=ConsumerConfig(
                durable_name=self.durable,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self.ack_wait_s,
                max_ack_pending=max(1000, self.batch * 4),
            ),
        )
        log.info("events_consumer_ready", stream=self.settings.events_stream, durable=self.durable)
        return self._sub

    async def _drop_connection(self) -> None:
        nc, self._nc, self._sub = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()


async def ensure_stream(js: JetStreamContext, name: str, subject: str, replicas: int = 1) -> None:
    """Create the events stream when it is missing (the engines may have created it already)."""
    try:
        await js.stream_info(name)
    except NotFoundError:
        try:
            await js.add_stream(
                name=name, subjects=[subject], duplicate_window=DUPLICATE_WINDOW_S, num_replicas=replicas
            )
            log.info("events_stream_created", stream=name, subjects=subject)
        except Exception:  # an engine won the race: it exists now
            await js.stream_info(name)


async def _nats_error(exc: Any) -> None:
    metrics.ERRORS.labels("nats").inc()
    log.debug("events_nats_error", error=str(exc) or type(exc).__name__)


def events_lifespan(
    settings: ControlPlaneSettings,
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """The app lifespan hook: an EventConsumer on ``app.state.event_consumer`` while the app runs."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        consumer = EventConsumer(settings)
        app.state.event_consumer = consumer
        await consumer.start()
        try:
            yield
        finally:
            await consumer.stop()

    return lifespan
