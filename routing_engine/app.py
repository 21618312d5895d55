"""The routing engine's app: a tiny router, the webhook handlers and the lifespan, served through
granian's own interface (RSGI) and, for anything else that speaks it (tests, other servers), ASGI.

Run it with ``granian --interface rsgi --loop uvloop --factory routing_engine.app:create_app``.
No framework on purpose: the whole request path is a few dict lookups, one Redis script call and a
string join, and a framework's routing/middleware layers would cost more than the engine's own work.
RSGI, because the interface is a large part of what a request costs here: a trivial app answers
1.5-2x more requests per second through it than through ASGI, the engine ~13% more (no scope dict, no
message dicts, one call to answer; docs/performance.md). Both interfaces reach the handlers through
one small ``Exchange``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import hmac
import os
import socket
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import msgspec
import nats
import structlog
from cryptography.fernet import Fernet
from nats.aio.client import Client as NATS
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from routing_engine import metrics
from routing_engine.balancer import Balancer, OutlierNote
from routing_engine.cxml import DEFAULT_FALLBACK, escape
from routing_engine.decide import Decider, Decision
from routing_engine.events import EventPublisher
from routing_engine.heartbeat import HeartbeatPublisher
from routing_engine.ingest import Cdr, Ingestor, Rejection, SessionUpdate, parse
from routing_engine.rules import CompiledDomain, CompiledTenant
from routing_engine.script_client import ClusterScriptClient, script_client_from_settings
from routing_engine.settings import EngineSettings, get_engine_settings
from routing_engine.snapshots import SnapshotStore
from routing_engine.webhooks import ParseError, VoiceRequest, parse_voice_request
from shared.cancellation import raise_if_cancelling
from shared.client_address import TrustedProxies, parse_address
from shared.enums import EventKind
from shared.events import CallEvent
from shared.logging import HotLog, configure_logging, flush_logs
from shared.metrics_files import forget_dead_workers
from shared.ops_access import OPS_REALM, ops_allowed
from shared.redis_client import RedisClient, cluster_nodes, redis_from_settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[str, str]]

log = structlog.get_logger("routing_engine")
# The one line per webhook (shared.logging.HotLog: the same JSON line, a third of structlog's cost).
webhook_log = HotLog("routing_engine")

APPLICATION_PREFIX = "/api/voice/application/"
DIAL_STATUS_SUFFIX = "/dial-status"
SESSION_PREFIX = "/api/voice/session/"
INGEST_KINDS = {"update": EventKind.SESSION_UPDATE, "cdr": EventKind.CDR}
XML_HEADERS: Headers = [("content-type", "application/xml; charset=utf-8")]
TEXT_HEADERS: Headers = [("content-type", "text/plain; charset=utf-8")]
JSON_HEADERS: Headers = [("content-type", "application/json")]
NATS_RETRY_S = 1.0
REDIS_TIMEOUT_S = 0.5
# SPEC §3: a repeated session update or CDR is dropped for at least 24 h, even when the idempotency
# TTL of the voice-application answers is set lower.
DEDUPE_MIN_TTL_S = 86400

_JSON = msgspec.json.Encoder()


class BodyTooLarge(Exception):
    pass


def _declared_length(headers: dict[str, str], limit: int) -> int | None:
    """The Content-Length a request declares (None when it declares none); BodyTooLarge past ``limit``."""
    declared = headers.get("content-length")
    if declared is None or not declared.isdigit():
        return None
    length = int(declared)
    if length > limit:
        raise BodyTooLarge
    return length


async def _joined(chunks: AsyncIterable[bytes], limit: int) -> bytes:
    """A body's chunks joined; BodyTooLarge as soon as they pass ``limit`` bytes (the rest unread)."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        parts.append(chunk)
    return b"".join(parts)


class Exchange(abc.ABC):
    """One HTTP request and its answer, whichever interface brought it: what the handlers see.
    ``headers`` has lower-cased names; ``client`` is the peer's address ("" when unknown), ``server``
    the local "host:port" ("" when unknown)."""

    __slots__ = ("client", "headers", "method", "path", "query", "scheme", "server")

    method: str
    path: str
    query: bytes
    headers: dict[str, str]
    scheme: str
    client: str
    server: str

    @abc.abstractmethod
    async def body(self, limit: int) -> bytes:
        """The whole body; BodyTooLarge when it is (or says it is) longer than ``limit`` bytes."""

    @abc.abstractmethod
    async def reply(self, status: int, body: bytes, headers: Headers = TEXT_HEADERS) -> None:
        """The whole answer (Content-Length is added)."""


class RsgiExchange(Exchange):
    """granian's RSGI: the scope's attributes, ``await proto()`` for the body, one call to answer."""

    __slots__ = ("_proto",)

    def __init__(self, scope: Any, proto: Any) -> None:
        self._proto = proto
        self.method = scope.method
        self.path = scope.path
        query: str = scope.query_string
        self.query = query.encode() if query else b""
        self.headers = dict(scope.headers.items())
        self.scheme = scope.scheme
        client: str = scope.client or ""
        # "203.0.113.7:40000" or "[2001:db8::1]:40000"
        self.client = client[1 : client.find("]")] if client[:1] == "[" else client.rpartition(":")[0]
        self.server = scope.server or ""

    async def body(self, limit: int) -> bytes:
        if _declared_length(self.headers, limit) is not None:
            # framed by its Content-Length, which the server holds it to
            body: bytes = await self._proto()
            return body
        return await _joined(self._proto, limit)

    async def reply(self, status: int, body: bytes, headers: Headers = TEXT_HEADERS) -> None:
        if body:
            self._proto.response_bytes(status, headers, body)
        else:
            self._proto.response_empty(status, headers)


class AsgiExchange(Exchange):
    """ASGI: the scope dict, ``receive`` for the body, two ``send`` messages to answer."""

    __slots__ = ("_receive", "_send")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self.method = scope["method"]
        self.path = scope["path"]
        self.query = scope.get("query_string", b"")
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.scheme = str(scope.get("scheme") or "http")
        client = scope.get("client")
        self.client = client[0] if client else ""
        server = scope.get("server")
        self.server = f"{server[0]}:{server[1]}" if server else ""

    async def body(self, limit: int) -> bytes:
        _declared_length(self.headers, limit)
        return await _joined(self._chunks(), limit)

    async def _chunks(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._receive()
            if message["type"] != "http.request":
                return
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return

    async def reply(self, status: int, body: bytes, headers: Headers = TEXT_HEADERS) -> None:
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        if status != 204:
            raw.append((b"content-length", str(len(body)).encode()))
        await self._send({"type": "http.response.start", "status": status, "headers": raw})
        await self._send({"type": "http.response.body", "body": body})


class RateLimiter:
    """Per-domain requests-per-second ceiling, per replica, in memory (fixed one-second windows)."""

    def __init__(self) -> None:
        self._windows: dict[str, list[float]] = {}

    def allow(self, key: str, limit: float) -> bool:
        now = time.monotonic()
        window = self._windows.get(key)
        if window is None or now - window[0] >= 1.0:
            self._windows[key] = [now, 1.0]
            return limit >= 1.0
        window[1] += 1.0
        return window[1] <= limit


class EngineApp:
    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.engine_id = f"{socket.gethostname()}:{os.getpid()}"
        fernet = Fernet(settings.snapshot_key.encode()) if settings.snapshot_key else None
        self.store = SnapshotStore(
            bucket=settings.config_bucket, fernet=fernet, replicas=settings.nats_replicas
        )
        self.events = EventPublisher(
            stream=settings.events_stream,
            subject_prefix=settings.events_subject_prefix,
            capacity=settings.events_buffer_size,
            linger_s=settings.events_linger_ms / 1000,
            engine_id=self.engine_id,
            replicas=settings.nats_replicas,
        )
        # A single Redis or a Redis Cluster (VLB_REDIS_CLUSTER_NODES): shared/redis_client.py.
        self.redis: RedisClient = redis_from_settings(
            settings,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            socket_timeout=REDIS_TIMEOUT_S,
            # redis-py's default retries 10 times with backoff (~4.4 s against a dead server);
            # the balancer has its own local fallback, so fail fast instead.
            retry=Retry(NoBackoff(), 1),
        )
        # The balancer's script calls take the lean client (routing_engine/script_client.py; one
        # connection per master on a cluster) unless the URL needs more than it speaks (TLS, sockets):
        # then redis-py serves them too.
        self.scripts = script_client_from_settings(
            settings.redis_url, cluster_nodes(settings), connect_timeout_s=REDIS_TIMEOUT_S
        )
        self.balancer = Balancer(
            self.redis,
            scripts=self.scripts,
            prefix=settings.redis_prefix,
            idempotency_ttl_s=settings.idempotency_ttl_s,
            active_slot_ttl_s=settings.active_slot_ttl_s,
            coalesce=settings.balancer_coalesce,
            in_flight=settings.balancer_in_flight,
        )
        self.balancer.outlier_sink = self._outlier_note
        self.decider = Decider(self.balancer)
        self.ingestor = Ingestor(
            self.redis,
            self.balancer,
            self.events,
            dedupe_ttl_s=max(settings.idempotency_ttl_s, DEDUPE_MIN_TTL_S),
            engine_id=self.engine_id,
            scripts=self.scripts,
        )
        self.heartbeat = HeartbeatPublisher(
            subject=settings.heartbeat_subject,
            interval_s=settings.heartbeat_interval_s,
            engine_id=self.engine_id,
            versions=lambda: {t.tenant_id: t.version for t in self.store.state.tenants.values()},
        )
        self.limiter = RateLimiter()
        self.proxies = TrustedProxies.from_setting(
            settings.trusted_proxies, legacy_trust_proxy=settings.trust_proxy
        )
        self.public_url = settings.engine_public_url.rstrip("/")
        self.nc: NATS | None = None
        self._connector: asyncio.Task[None] | None = None
        self._metrics_timer: asyncio.TimerHandle | None = None
        self._started = False
        self._redis_errors_seen = 0
        self._cluster_seen: dict[str, int] = {}

    def _outlier_note(self, tenant_id: int, session: str, note: OutlierNote) -> None:
        """An agent ejected from (or back in) a group's selection: counted, and told to the control
        plane as an event of the call whose failure (or success) did it (its timeline, the live feed)."""
        if note.kind == "ejected":
            trigger, _, failure = note.reason.partition(":")
            metrics.inc(metrics.OUTLIER_EJECTIONS, trigger, failure)
            metrics.outlier_ejected(tenant_id, note.group_id, note.agent_id, note.until_ms / 1000)
        else:
            metrics.inc(metrics.OUTLIER_RETURNS)
            metrics.outlier_ejected(tenant_id, note.group_id, note.agent_id, None)
        log.info(
            "agent_" + note.kind,
            tenant_id=tenant_id,
            session=session,
            group_id=note.group_id,
            agent_id=note.agent_id,
            reason=note.reason,
            ejections=note.ejections,
            backoff_s=note.backoff_s,
        )
        self.events.publish(
            CallEvent(
                event_id=f"{tenant_id}:{session}:outlier:{note.kind}:{note.group_id}:{note.agent_id}:{note.ejections}",
                kind=EventKind.OUTLIER,
                tenant_id=tenant_id,
                domain="",
                session_token=session,
                occurred_at=time.time(),
                engine_id=self.engine_id,
                group_id=note.group_id,
                agent_id=note.agent_id,
                outcome=note.kind,
                status=note.reason,
                payload={
                    "until_ms": note.until_ms,
                    "ejections": note.ejections,
                    "backoff_s": note.backoff_s,
                    "reason": note.reason,
                },
            )
        )

    # --- lifespan ---

    async def startup(self) -> None:
        if self._started:
            return
        self._started = True
        forget_dead_workers()  # a respawned worker: its predecessor's live gauges stop counting
        loop = asyncio.get_running_loop()
        self._connector = loop.create_task(self._connect_nats(), name="vlb-nats")
        if isinstance(self.scripts, ClusterScriptClient):
            self.scripts.read_map_soon()
        self._metrics_timer = loop.call_later(metrics.FLUSH_INTERVAL_S, self._flush_metrics)

    def _flush_metrics(self) -> None:
        metrics.flush()
        self._metrics_timer = asyncio.get_running_loop().call_later(
            metrics.FLUSH_INTERVAL_S, self._flush_metrics
        )

    async def _connect_nats(self) -> None:
        while True:
            raise_if_cancelling()
            try:
                nc = await nats.connect(
                    self.settings.nats_servers,
                    name=f"vlb-engine {self.engine_id}",
                    connect_timeout=2,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    error_cb=self._nats_error,
                    reconnected_cb=self._nats_reconnected,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()
                metrics.NATS_ERRORS.labels("connect").inc()
                log.warning("nats_unavailable", error=str(exc) or type(exc).__name__)
                await asyncio.sleep(NATS_RETRY_S)
                continue
            self.nc = nc
            self.store.start(nc)
            self.events.start(nc)
            self.heartbeat.start(nc)
            return

    async def _nats_reconnected(self) -> None:
        log.info("nats_reconnected")
        if self.nc is not None:
            await self.store.resync(self.nc)

    async def _nats_error(self, exc: Exception) -> None:
        metrics.NATS_ERRORS.labels("connection").inc()

    async def shutdown(self) -> None:
        if self._metrics_timer is not None:
            self._metrics_timer.cancel()
            self._metrics_timer = None
        metrics.flush()
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        await self.heartbeat.stop()
        await self.events.stop()
        await self.store.stop()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        await self.balancer.aclose()
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        if self.scripts is not None:
            await self.scripts.aclose()
        flush_logs()
        self._started = False

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- entry points (RSGI, ASGI) and the router ---

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        """granian calls this in each worker before it serves (the loop is not running yet). A worker
        waits (bounded) for its first snapshot load, so one that granian respawns under traffic does
        not take webhooks it cannot route yet; without NATS it serves after the wait (answers 503
        until the load)."""
        loop.run_until_complete(self.startup())
        loaded = loop.run_until_complete(self.store.wait_loaded(self.settings.startup_load_wait_s))
        if not loaded:
            log.warning("snapshots_not_loaded_at_start", waited_s=self.settings.startup_load_wait_s)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.shutdown())

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.proto == "http":
            await self._route(RsgiExchange(scope, proto))
        else:  # no websockets here
            proto.close(404)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._route(AsgiExchange(scope, receive, send))
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _route(self, ex: Exchange) -> None:
        path = ex.path
        method = ex.method
        if path.startswith(APPLICATION_PREFIX):
            rest = path[len(APPLICATION_PREFIX) :].rstrip("/")
            is_dial = rest.endswith(DIAL_STATUS_SUFFIX)
            domain = rest[: -len(DIAL_STATUS_SUFFIX)] if is_dial else rest
            if not domain or "/" in domain:
                await ex.reply(404, b"not found\n")
                return
            if method not in ("GET", "POST"):
                await ex.reply(405, b"method not allowed\n", [*TEXT_HEADERS, ("allow", "GET, POST")])
                return
            await self._voice(ex, domain, is_dial)
        elif path.startswith(SESSION_PREFIX):
            kind_name, _, domain = path[len(SESSION_PREFIX) :].rstrip("/").partition("/")
            ingest_kind = INGEST_KINDS.get(kind_name)
            if ingest_kind is None or "/" in domain:
                await ex.reply(404, b"not found\n")
                return
            if method != "POST":
                await ex.reply(405, b"method not allowed\n", [*TEXT_HEADERS, ("allow", "POST")])
                return
            await self._ingest(ex, ingest_kind, domain or None)
        elif path == "/health":
            await ex.reply(200, b'{"status":"ok"}', JSON_HEADERS)
        elif path == "/ready":
            await self._ready(ex)
        elif path == "/status":
            if await self._ops_refused(ex):
                return
            await self._status(ex)
        elif path == "/metrics":
            if await self._ops_refused(ex):
                return
            self._sync_balancer_metrics()
            body, ctype = metrics.render_latest()
            await ex.reply(200, body, [("content-type", ctype)])
        else:
            await ex.reply(404, b"not found\n")

    # --- service endpoints ---

    async def _ops_refused(self, ex: Exchange) -> bool:
        """/metrics and /status tell every tenant id and the traffic: only for the ops token (or, without
        one, a client on this host no proxy forwarded). True when refused (answered)."""
        if ops_allowed(ex.headers, ex.client, self.settings.ops_token, self.proxies):
            return False
        metrics.inc(metrics.AUTH_FAILURES, "ops")
        await ex.reply(401, b"ops token required\n", [*TEXT_HEADERS, ("www-authenticate", OPS_REALM)])
        return True

    def _sync_balancer_metrics(self) -> None:
        # The balancer keeps plain int counters (no prometheus import on its path); fold them in here.
        errors = self.balancer.redis_errors_total
        if errors > self._redis_errors_seen:
            metrics.REDIS_ERRORS.inc(errors - self._redis_errors_seen)
            self._redis_errors_seen = errors
        if isinstance(self.scripts, ClusterScriptClient):
            for kind, total in self.scripts.counts().items():
                seen = self._cluster_seen.get(kind, 0)
                if total > seen:
                    metrics.REDIS_CLUSTER_EVENTS.labels(kind).inc(total - seen)
                    self._cluster_seen[kind] = total

    async def redis_ok(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), REDIS_TIMEOUT_S))
        except Exception:
            metrics.REDIS_ERRORS.inc()
            return False

    async def _ready(self, ex: Exchange) -> None:
        # Redis down is "degraded", not "not ready": every replica shares it, and taking them all out
        # of rotation would drop calls the local fallback could still answer.
        loaded = self.store.loaded
        redis_up = await self.redis_ok()
        nats_up = self.nc is not None and self.nc.is_connected
        status = "ready" if loaded and redis_up else ("degraded" if loaded else "not_ready")
        body = _JSON.encode(
            {
                "status": status,
                "snapshots_loaded": loaded,
                "redis": redis_up,
                "nats": nats_up,
                "tenants": len(self.store.state.tenants),
            }
        )
        await ex.reply(200 if loaded else 503, body, JSON_HEADERS)

    async def _status(self, ex: Exchange) -> None:
        tenants = {
            str(t.tenant_id): {"version": t.version, "compiled_at": t.compiled_at, "applied_at": t.applied_at}
            for t in self.store.state.tenants.values()
        }
        body = _JSON.encode(
            {"engine_id": self.engine_id, "snapshots_loaded": self.store.loaded, "tenants": tenants}
        )
        await ex.reply(200, body, JSON_HEADERS)

    # --- the voice-application webhooks ---

    async def _voice(self, ex: Exchange, domain_name: str, is_dial: bool) -> None:
        path_kind = "dial_status" if is_dial else "application"
        headers = ex.headers
        found = await self._admit(ex, path_kind, domain_name)
        if found is None:
            return
        tenant, domain = found
        try:
            body = await ex.body(self.settings.max_body_bytes)
        except BodyTooLarge:
            metrics.inc(metrics.REQUESTS, path_kind, "too_large")
            await ex.reply(413, b"request body too large\n")
            return

        started = time.perf_counter()
        parsed = parse_voice_request(ex.method, headers.get("content-type", ""), ex.query, body, headers)
        if isinstance(parsed, ParseError):
            await self._bad_input(ex, path_kind, tenant, domain, parsed)
            return
        if is_dial and not parsed.dial_call_status:
            await self._bad_input(
                ex,
                path_kind,
                tenant,
                domain,
                ParseError(status=400, reason="missing DialCallStatus", session=parsed.session),
            )
            return

        base_url = self.public_url or _request_base(ex, self.proxies)
        decision: Decision | None = None
        try:
            if is_dial:
                decision = await self.decider.dial_status(tenant, domain, parsed, base_url)
            else:
                decision = await self.decider.voice(tenant, domain, parsed, base_url)
            answer = decision.cxml
            outcome = decision.outcome
        except Exception:
            # Never a 5xx to Cloudonix: the tenant's fallback answer, counted and logged.
            metrics.FALLBACKS.inc()
            log.exception("decision_failed", tenant_id=tenant.tenant_id, session=parsed.session)
            answer = tenant.fallback or DEFAULT_FALLBACK
            outcome = "fallback"
        elapsed = time.perf_counter() - started
        await ex.reply(200, answer.encode(), XML_HEADERS)

        # Off the response path from here on: metrics, the log line, the event.
        metrics.observe_decision(elapsed)
        metrics.inc(metrics.REQUESTS, path_kind, outcome)
        strategy = decision.strategy if decision is not None else ""
        metrics.inc(metrics.DECISIONS, strategy or "none", outcome)
        if decision is not None:
            if decision.replay:
                metrics.inc(metrics.REPLAYS)
            if decision.degraded:
                metrics.inc(metrics.DEGRADED)
            if decision.trace is not None:
                metrics.note_trace(decision.trace)
        latency_us = int(elapsed * 1_000_000)
        webhook_log.info(
            "webhook",
            path=path_kind,
            session=parsed.session,
            tenant_id=tenant.tenant_id,
            domain=domain.name,
            decision=outcome,
            agent_id=decision.agent_id if decision else None,
            attempt=decision.attempt if decision else None,
            replay=decision.replay if decision else False,
            latency_us=latency_us,
        )
        self._publish(tenant, domain, parsed, decision, outcome, is_dial, latency_us)

    def _publish(
        self,
        tenant: CompiledTenant,
        domain: CompiledDomain,
        req: VoiceRequest,
        decision: Decision | None,
        outcome: str,
        is_dial: bool,
        latency_us: int,
    ) -> None:
        stage = decision.stage if decision is not None else ("dial" if is_dial else "app")
        if is_dial and decision is None:
            stage = f"dial-{req.attempt}"
        kind = EventKind.DIAL_STATUS if is_dial else EventKind.ROUTED
        self.events.publish(
            CallEvent(
                event_id=f"{tenant.tenant_id}:{req.session}:{stage}",
                kind=kind,
                tenant_id=tenant.tenant_id,
                domain=domain.name,
                session_token=req.session,
                occurred_at=time.time(),
                engine_id=self.engine_id,
                direction=req.direction or None,
                from_number=req.from_number or None,
                to_number=req.to_number or None,
                caller_name=req.caller_name,
                rule_id=decision.rule_id if decision else None,
                group_id=decision.group_id if decision else None,
                agent_id=decision.agent_id if decision else req.agent_id,
                attempt=decision.attempt if decision else None,
                split_target=decision.split_target if decision else None,
                overflow_step=(
                    f"{decision.overflow_index}:{decision.overflow_step}"
                    if decision is not None and decision.overflow_step
                    else None
                ),
                decision=decision.trace if decision is not None else None,
                outcome=outcome,
                status=req.dial_call_status,
                snapshot_version=tenant.version,
                latency_us=latency_us,
                payload=msgspec.structs.asdict(req),
            )
        )

    async def _admit(
        self, ex: Exchange, path_kind: str, domain_name: str
    ) -> tuple[CompiledTenant, CompiledDomain] | None:
        """The checks every webhook passes (domain, key, networks, rate); None when refused (answered)."""
        found = self.store.state.find_domain(domain_name)
        if found is None and not self.store.loaded:
            # A worker just started: the bucket has not been read yet, so "unknown" means "not yet".
            if await self.store.wait_loaded(self.settings.unloaded_request_wait_s):
                found = self.store.state.find_domain(domain_name)
            else:
                metrics.inc(metrics.REQUESTS, path_kind, "not_loaded")
                await ex.reply(
                    503, b"routing configuration not loaded yet\n", [*TEXT_HEADERS, ("retry-after", "1")]
                )
                return None
        if found is None:
            await self._refuse(ex, path_kind, 404, "unknown domain", "unknown_domain")
            return None
        _tenant, domain = found
        if not _key_matches(ex.headers, domain.key_hash):
            await self._refuse(ex, path_kind, 401, "missing or invalid webhook key", "bad_key")
            return None
        if domain.networks and not self._client_allowed(ex, domain):
            await self._refuse(ex, path_kind, 403, "source address not allowed", "network")
            return None
        limit = domain.max_requests_per_second
        # Session updates and CDRs have their own windows: a burst of them never costs a call its answer.
        limit_key = (
            domain.name if path_kind in ("application", "dial_status") else f"{domain.name}#{path_kind}"
        )
        if limit is not None and not self.limiter.allow(limit_key, limit):
            await self._refuse(ex, path_kind, 429, "too many requests", "rate_limit")
            return None
        return found

    # --- the session-update and CDR webhooks ---

    async def _ingest(self, ex: Exchange, kind: EventKind, domain_name: str | None) -> None:
        path_kind = kind.value
        headers = ex.headers
        found: tuple[CompiledTenant, CompiledDomain] | None = None
        if domain_name is not None:
            found = await self._admit(ex, path_kind, domain_name)
            if found is None:
                return
        try:
            body = await ex.body(self.settings.max_body_bytes)
        except BodyTooLarge:
            metrics.inc(metrics.REQUESTS, path_kind, "too_large")
            reason = f"request body larger than {self.settings.max_body_bytes} bytes"
            if found is not None:
                tenant, domain = found
                self.ingestor.rejected(
                    tenant.tenant_id,
                    domain.name,
                    kind,
                    Rejection(status=413, reason=reason),
                    b"",
                    tenant.version,
                )
            await ex.reply(413, reason.encode() + b"\n")
            return

        started = time.perf_counter()
        parsed = parse(kind, headers.get("content-type", ""), body)
        if found is None:
            # /api/voice/session/update and /cdr: the domain is in the body (or X-CX-Domain).
            named = parsed.domain or headers.get("x-cx-domain", "").strip()
            if not named:
                metrics.inc(metrics.REQUESTS, path_kind, "bad_input")
                reason = parsed.reason if isinstance(parsed, Rejection) else "missing domain"
                await ex.reply(400, reason.encode() + b"\n")
                return
            found = await self._admit(ex, path_kind, named)
            if found is None:
                return
        tenant, domain = found
        if isinstance(parsed, Rejection):
            _count_rejected(path_kind, tenant, domain, parsed.token, parsed.reason)
            await ex.reply(parsed.status, parsed.reason.encode() + b"\n")
            self.ingestor.rejected(tenant.tenant_id, domain.name, kind, parsed, body, tenant.version)
            return
        # Cloudonix only needs to know it was received; dedupe, release and the event follow the answer.
        await ex.reply(204, b"", [])
        outcome = await self.ingestor.apply(tenant.tenant_id, domain.name, parsed, tenant.version)
        metrics.inc(metrics.REQUESTS, path_kind, outcome)
        webhook_log.info(
            "webhook",
            path=path_kind,
            session=parsed.token,
            tenant_id=tenant.tenant_id,
            domain=domain.name,
            status=parsed.status,
            disposition=parsed.disposition.value if isinstance(parsed, Cdr) and parsed.disposition else None,
            terminal=parsed.terminal if isinstance(parsed, SessionUpdate) else True,
            decision=outcome,
            latency_us=int((time.perf_counter() - started) * 1_000_000),
        )

    async def _refuse(self, ex: Exchange, path_kind: str, status: int, reason: str, metric: str) -> None:
        metrics.inc(metrics.AUTH_FAILURES, metric)
        metrics.inc(metrics.REQUESTS, path_kind, metric)
        await ex.reply(status, reason.encode() + b"\n")

    async def _bad_input(
        self, ex: Exchange, path_kind: str, tenant: CompiledTenant, domain: CompiledDomain, error: ParseError
    ) -> None:
        _count_rejected(path_kind, tenant, domain, error.session, error.reason)
        if error.session is None:
            await ex.reply(error.status, error.reason.encode() + b"\n")
            return
        # The call is known: answer it with valid CXML rather than leaving the caller in silence.
        await ex.reply(200, tenant.no_agent.encode(), XML_HEADERS)
        self.events.publish(
            CallEvent(
                event_id=f"{tenant.tenant_id}:{error.session}:rejected:{path_kind}",
                kind=EventKind.REJECTED,
                tenant_id=tenant.tenant_id,
                domain=domain.name,
                session_token=error.session,
                occurred_at=time.time(),
                engine_id=self.engine_id,
                outcome="bad_input",
                snapshot_version=tenant.version,
                payload={"reason": error.reason},
            )
        )

    def _client_allowed(self, ex: Exchange, domain: CompiledDomain) -> bool:
        """Only for a domain with an allowlist: X-Forwarded-For is read (and only believed from a trusted
        proxy, shared/client_address.py) on this path alone, so other requests pay nothing for it."""
        address = ex.client
        if self.proxies.enabled:
            address = self.proxies.client(address, ex.headers.get("x-forwarded-for"))
        ip = parse_address(address)
        return ip is not None and any(ip in net for net in domain.networks)


# key hash -> the plaintext key that matched it last. A key that matches the cached one (compared in
# constant time) skips the sha256; anything else is hashed and compared as before.
_VERIFIED_KEYS: dict[str, str] = {}
VERIFIED_KEYS_KEPT = 10_000


def _key_matches(headers: dict[str, str], key_hash: str) -> bool:
    auth = headers.get("authorization", "")
    key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    # Both headers are checked: Cloudonix may send the domain key in either one.
    ok = False
    for candidate in (key, headers.get("x-cx-apikey", "").strip()):
        if not candidate:
            continue
        known = _VERIFIED_KEYS.get(key_hash)
        if known is not None and hmac.compare_digest(candidate.encode(), known.encode()):
            ok = True
            continue
        if hmac.compare_digest(hashlib.sha256(candidate.encode()).hexdigest(), key_hash):
            if len(_VERIFIED_KEYS) >= VERIFIED_KEYS_KEPT:
                _VERIFIED_KEYS.clear()
            _VERIFIED_KEYS[key_hash] = candidate
            ok = True
    return ok


def _request_base(ex: Exchange, proxies: TrustedProxies) -> str:
    """The engine's own base URL as the caller reached it (only without VLB_ENGINE_PUBLIC_URL); the
    X-Forwarded-Proto/-Host of a trusted proxy win."""
    scheme = ex.scheme
    headers = ex.headers
    host = headers.get("host", "")
    if proxies.enabled and proxies.trusts_peer(ex.client):
        scheme = headers.get("x-forwarded-proto", scheme).split(",", 1)[0].strip() or scheme
        host = headers.get("x-forwarded-host", host).split(",", 1)[0].strip() or host
    return escape(f"{scheme}://{host or ex.server or 'localhost'}")


def _count_rejected(
    path_kind: str, tenant: CompiledTenant, domain: CompiledDomain, session: str | None, reason: str
) -> None:
    """A webhook refused for its content (after auth): one metric and one log line, on every path."""
    metrics.inc(metrics.REQUESTS, path_kind, "bad_input")
    log.info(
        "webhook_rejected",
        path=path_kind,
        tenant_id=tenant.tenant_id,
        domain=domain.name,
        session=session,
        reason=reason,
    )


def create_app(settings: EngineSettings | None = None) -> EngineApp:
    """The app factory granian calls (``--factory routing_engine.app:create_app``)."""
    settings = settings or get_engine_settings()
    configure_logging(settings.log_format, settings.log_level, settings.log_buffer_ms)
    if settings.trust_proxy and not settings.trusted_proxies:
        log.warning(
            "deprecated_setting",
            setting="VLB_TRUST_PROXY",
            detail="X-Forwarded-For is believed from any peer; list the proxies in VLB_TRUSTED_PROXIES",
        )
    return EngineApp(settings)
