"""A minimal pipelined Redis client for the balancer's script calls, on the measured hot path.

redis-py costs 40-70 µs of engine CPU per command here (connection pool, retry wrapper, command packing
through its encoder, observability hooks, a stream reader); this sends the already-encoded RESP
request with one ``transport.write`` and parses replies with hiredis in ``data_received`` (the parser
redis-py itself uses): about a fifth of the cost. It speaks only what the balancer needs: a command in,
its reply out, in order, on one connection, commands pipelined while earlier replies are outstanding.

Any trouble (refused connection, a closed socket, a reply later than its command's ``reply_within_s``) fails
every outstanding command with a ``ConnectionError`` (``TimeoutError`` for a late reply) and drops the
connection, so replies can never be matched to the wrong command; the next command reconnects.
Timeouts are watched by one timer for the whole client rather than one per command (``asyncio.timeout``
costs a timer handle, a task lookup and a cancellation per call: ~5% of the engine's work). Everything else (the admin commands, stats, resets) keeps using redis-py.

Against a Redis Cluster, :class:`ClusterScriptClient` keeps one such client per master and sends each
command to the master that owns its key's slot (a map from ``CLUSTER SLOTS``, read at the first
command and again whenever the cluster says it changed); the single-Redis path does not go through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from binascii import crc_hqx
from collections import deque
from collections.abc import Sequence
from typing import Protocol
from urllib.parse import quote, unquote, urlparse

import hiredis
import structlog
from redis.exceptions import ResponseError

CONNECT_TIMEOUT_S = 0.5

logger = structlog.get_logger(__name__)


class ScriptError(ResponseError):
    """Redis answered the command with an error reply (``NOSCRIPT ...``, ``READONLY ...``, ...); a
    redis-py ``ResponseError``, so code that handles redis-py's errors handles these too."""


class ConnectFailed(ConnectionError):
    """The connection could not be made: the command was certainly not sent."""


def _bulk(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%b\r\n" % (len(data), data)


def pack(*args: str | bytes) -> bytes:
    """One RESP command (an array of bulk strings)."""
    return b"*%d\r\n" % len(args) + b"".join(_bulk(a) for a in args)


class _Protocol(asyncio.Protocol):
    def __init__(self, client: ScriptClient) -> None:
        self._client = client
        self._reader = hiredis.Reader(replyError=ScriptError)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        pending = self._client._pending
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:  # a broken stream: nothing after it can be trusted
                self._client._fail(ConnectionError(f"redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if pending:
                future, _deadline = pending.popleft()
                if not future.done():
                    if isinstance(reply, ScriptError):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._client._fail(ConnectionError(f"redis connection lost: {exc or 'closed'}"))


class ScriptClient:
    """``await client.call("EVALSHA", sha, "1", key, ...)`` -> the reply (bytes, int, list, ...)."""

    def __init__(self, url: str, *, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in ("redis", ""):
            raise ValueError(f"the script client speaks plain redis:// only, not {parsed.scheme}://")
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or 6379
        self._db = int(parsed.path.lstrip("/") or 0)
        self._username = unquote(parsed.username) if parsed.username else None
        self._password = unquote(parsed.password) if parsed.password else None
        self._connect_timeout_s = connect_timeout_s
        self._transport: asyncio.Transport | None = None
        self._connecting: asyncio.Future[None] | None = None
        # Outstanding commands in order: (future, reply deadline on the loop's clock, inf for none).
        self._pending: deque[tuple[asyncio.Future[object], float]] = deque()
        self._watchdog: asyncio.TimerHandle | None = None
        self._watchdog_at = math.inf

    async def call(self, *args: str | bytes, reply_within_s: float | None = None) -> object:
        """Send one command and wait for its reply; ``reply_within_s``: TimeoutError if the reply is later."""
        if self._transport is None or self._transport.is_closing():
            await self._connect()
        transport = self._transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        deadline = math.inf
        if reply_within_s is not None:
            deadline = loop.time() + reply_within_s
            if deadline < self._watchdog_at:
                self._arm(loop, deadline)
        self._pending.append((future, deadline))
        transport.write(pack(*args))
        try:
            return await future
        except asyncio.CancelledError:
            # The reply may still come and would be taken for the next command's: start over.
            self._fail(ConnectionError("redis command abandoned"))
            raise

    async def call_asking(self, *args: str | bytes, reply_within_s: float | None = None) -> object:
        """``ASKING`` then the command, in one write (a cluster's ``ASK`` redirection): the reply to
        the command. Off the hot path: only while a slot migrates."""
        if self._transport is None or self._transport.is_closing():
            await self._connect()
        transport = self._transport
        assert transport is not None
        loop = asyncio.get_running_loop()
        asking: asyncio.Future[object] = loop.create_future()
        asking.add_done_callback(_retrieved)
        future: asyncio.Future[object] = loop.create_future()
        deadline = math.inf
        if reply_within_s is not None:
            deadline = loop.time() + reply_within_s
            if deadline < self._watchdog_at:
                self._arm(loop, deadline)
        self._pending.append((asking, deadline))
        self._pending.append((future, deadline))
        transport.write(pack("ASKING") + pack(*args))
        try:
            return await future
        except asyncio.CancelledError:
            self._fail(ConnectionError("redis command abandoned"))
            raise

    def _arm(self, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watchdog_at = deadline
        self._watchdog = loop.call_at(deadline, self._check_deadlines, loop)

    def _check_deadlines(self, loop: asyncio.AbstractEventLoop) -> None:
        """The watchdog: fail everything if a reply is overdue, else wait for the next deadline."""
        self._watchdog, self._watchdog_at = None, math.inf
        earliest = min((deadline for _future, deadline in self._pending), default=math.inf)
        if earliest <= loop.time():
            self._fail(TimeoutError("redis reply timed out"))
        elif earliest < math.inf:
            self._arm(loop, earliest)

    async def _connect(self) -> None:
        if self._connecting is not None:
            await asyncio.shield(self._connecting)
            return
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                transport, _protocol = await loop.create_connection(
                    lambda: _Protocol(self), self._host, self._port
                )
            self._transport = transport
            setup: list[tuple[str | bytes, ...]] = []
            if self._password is not None:
                auth = (
                    ("AUTH", self._username, self._password) if self._username else ("AUTH", self._password)
                )
                setup.append(auth)
            if self._db:
                setup.append(("SELECT", str(self._db)))
            for command in setup:
                await self.call(*command)
            self._connecting.set_result(None)
        except BaseException as exc:
            self._drop()
            error = (
                exc
                if isinstance(exc, ConnectFailed)
                else ConnectFailed(f"redis connect failed: {type(exc).__name__}: {exc}")
            )
            self._connecting.set_exception(error)
            self._connecting.exception()  # retrieved: no "never retrieved" warning when nobody waits
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise error from exc
        finally:
            self._connecting = None

    def _fail(self, exc: Exception) -> None:
        """Fail every outstanding command and drop the connection."""
        pending, self._pending = self._pending, deque()
        for future, _deadline in pending:
            if not future.done():
                future.set_exception(exc)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog, self._watchdog_at = None, math.inf
        self._drop()

    def _drop(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            with contextlib.suppress(Exception):
                transport.abort()

    async def aclose(self) -> None:
        self._fail(ConnectionError("redis client closed"))


def _retrieved(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()


class ScriptCaller(Protocol):
    """What the balancer and the ingest need of a hot-path client: either kind below."""

    async def call(self, *args: str | bytes, reply_within_s: float | None = None) -> object: ...

    async def aclose(self) -> None: ...


# --- Redis Cluster ----------------------------------------------------------------------------------

SLOTS = 16384
# Redirections followed for one command before giving up (a slot moving twice while it is in flight).
MAX_REDIRECTS = 5
# Without a reply deadline, how long a command waits for a failed master's replica to take over.
FAILOVER_WAIT_S = 2.0
# Between two reads of the slot map while a failed master's slots have no new owner yet.
REFRESH_PAUSE_S = 0.05
# Error replies that mean "not executed here, ask the cluster again": retried on the new owner.
_RETRYABLE = frozenset({"CLUSTERDOWN", "READONLY", "TRYAGAIN", "LOADING", "MASTERDOWN"})
# Commands safe to send again when the connection dropped after they were written: balancer.lua is
# idempotent per (session, stage) and its release frees a slot once; the rest only read.
_RESENDABLE = frozenset({"EVALSHA", "EVAL", "PING", "CLUSTER", "ECHO", "GET"})


def key_slot(key: str | bytes) -> int:
    """The cluster slot of ``key`` (CRC16 of its ``{hash tag}`` when it has one, as Redis does)."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return crc_hqx(data, 0) & (SLOTS - 1)


def _command_key(args: Sequence[str | bytes]) -> str | bytes | None:
    """The key a command is routed by: EVAL/EVALSHA's first key, else the first argument."""
    name = args[0]
    if name == "EVALSHA" or name == "EVAL":
        return args[3] if len(args) > 3 and args[2] not in ("0", b"0") else None
    upper = name.upper() if isinstance(name, str) else name.decode().upper()
    if upper in ("EVALSHA", "EVAL"):
        return args[3] if len(args) > 3 and args[2] not in ("0", b"0") else None
    if upper in ("SCRIPT", "PING", "ECHO", "CLUSTER", "TIME", "INFO", "ASKING") or len(args) < 2:
        return None
    return args[1]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ClusterScriptClient:
    """The lean client over a Redis Cluster: ``await client.call(...)`` like :class:`ScriptClient`.

    - One :class:`ScriptClient` (one pipelined connection) per master; a command goes to the master
      owning its key's slot, so a tenant's script calls stay pipelined and coalesced on that
      master's connection (every key of a tenant is in one slot).
    - ``MOVED``: the slot map is read again (``CLUSTER SLOTS``, one refresh at a time) and the
      command sent to the new owner. ``ASK``: ``ASKING`` + the command, once, on the named node.
    - A master that fails (connection refused or lost) or a cluster that says it is re-forming
      (``CLUSTERDOWN``, ``READONLY``, ...): the map is read from any other node, again every
      ``REFRESH_PAUSE_S`` until a replica owns the slot, and the command sent there, all within its
      reply deadline; past it the caller gets the ConnectionError (the balancer degrades, as with a
      single Redis). A command whose connection dropped after it was written is sent again only when
      that is safe (``_RESENDABLE``); the ingest's ``SET NX`` is not, and its caller goes on without it.
    - ``SCRIPT LOAD`` goes to every master: each one keeps its own script cache.
    """

    def __init__(
        self,
        seeds: Sequence[tuple[str, int]],
        *,
        username: str | None = None,
        password: str | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        if not seeds:
            raise ValueError("a Redis Cluster needs at least one seed node")
        self._seeds = [(host, int(port)) for host, port in seeds]
        self._username = username
        self._password = password
        self._connect_timeout_s = connect_timeout_s
        self._nodes: dict[tuple[str, int], ScriptClient] = {}
        self._slots: list[ScriptClient | None] = [None] * SLOTS
        self._masters: list[tuple[str, int]] = []
        # Nodes whose connection failed lately: asked for the map last (a dead host costs a connect
        # timeout; on a network that is the whole connect_timeout_s).
        self._suspects: set[ScriptClient] = set()
        self._refreshing: asyncio.Future[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.refreshes_total = 0
        self.moved_total = 0
        self.ask_total = 0
        self.retries_total = 0

    # -- routing -----------------------------------------------------------------------------------

    def _node(self, address: tuple[str, int]) -> ScriptClient:
        node = self._nodes.get(address)
        if node is None:
            host, port = address
            auth = ""
            if self._password is not None:
                user = quote(self._username, safe="") if self._username else ""
                auth = f"{user}:{quote(self._password, safe='')}@"
            url = f"redis://{auth}[{host}]:{port}/0" if ":" in host else f"redis://{auth}{host}:{port}/0"
            node = self._nodes[address] = ScriptClient(url, connect_timeout_s=self._connect_timeout_s)
        return node

    def counts(self) -> dict[str, int]:
        """Totals for the engine's metrics: map reads, redirections, retries after a failure."""
        return {
            "map_read": self.refreshes_total,
            "moved": self.moved_total,
            "ask": self.ask_total,
            "retry": self.retries_total,
        }

    def node_for_slot(self, slot: int) -> tuple[str, int] | None:
        """The address of the master this client sends ``slot``'s commands to (for tests, status)."""
        node = self._slots[slot]
        if node is None:
            return None
        return next((a for a, n in self._nodes.items() if n is node), None)

    async def call(self, *args: str | bytes, reply_within_s: float | None = None) -> object:
        """Send one command to the master owning its key's slot and wait for its reply."""
        key = _command_key(args)
        if key is None:
            return await self._keyless(args, reply_within_s)
        slot = key_slot(key)
        node = self._slots[slot]
        if node is not None:
            try:
                return await node.call(*args, reply_within_s=reply_within_s)
            except ScriptError as exc:
                return await self._recover(slot, args, reply_within_s, exc, node)
            except ConnectionError as exc:
                return await self._recover(slot, args, reply_within_s, exc, node)
        return await self._recover(slot, args, reply_within_s, None, None)

    async def _recover(
        self,
        slot: int,
        args: tuple[str | bytes, ...],
        reply_within_s: float | None,
        error: Exception | None,
        failed: ScriptClient | None,
    ) -> object:
        """Everything off the straight path: no map yet, a redirection, a master gone or a cluster
        re-forming. Loops until a reply, an error not worth retrying, or the reply deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (FAILOVER_WAIT_S if reply_within_s is None else reply_within_s)
        resendable = _text(args[0]).upper() in _RESENDABLE
        redirects = 0
        while True:
            if error is not None:
                kind = str(error).partition(" ")[0] if isinstance(error, ScriptError) else ""
                if kind == "MOVED" or kind == "ASK":
                    redirects += 1
                    if redirects > MAX_REDIRECTS:
                        raise error
                    where = str(error).split(" ")[2]
                    host, _, port = where.rpartition(":")
                    target = self._node((host or self._seeds[0][0], int(port)))
                    if kind == "ASK":  # this command only, this once: the slot is migrating
                        self.ask_total += 1
                        return await target.call_asking(*args, reply_within_s=_left(loop, deadline))
                    self.moved_total += 1
                    self._slots[slot] = target
                    self._refresh_soon()
                else:
                    lost = isinstance(error, ConnectionError)
                    retry = kind in _RETRYABLE or (lost and (resendable or isinstance(error, ConnectFailed)))
                    if not retry or loop.time() >= deadline:
                        raise error  # (a written SET NX may have run: its caller decides)
                    self.retries_total += 1
                    if lost and failed is not None:
                        self._suspects.add(failed)
                    with contextlib.suppress(ConnectionError, TimeoutError, ScriptError):
                        await self._refresh(exclude=failed if lost else None)
                    if self._slots[slot] is failed:  # no new owner yet: give the cluster a moment
                        if loop.time() + REFRESH_PAUSE_S >= deadline:
                            raise error
                        await asyncio.sleep(REFRESH_PAUSE_S)
            node = self._slots[slot]
            if node is None:
                await self._refresh()
                node = self._slots[slot]
                if node is None:
                    raise ConnectionError(f"no Redis Cluster node serves slot {slot}")
            remaining = None if reply_within_s is None else _left(loop, deadline)
            try:
                return await node.call(*args, reply_within_s=remaining)
            except (ScriptError, ConnectionError) as exc:
                error, failed = exc, node

    async def _keyless(self, args: tuple[str | bytes, ...], reply_within_s: float | None) -> object:
        """``SCRIPT ...`` to every master (each has its own script cache); anything else to one."""
        if not self._masters:
            await self._refresh()
        masters = [self._node(a) for a in self._masters]
        if _text(args[0]).upper() == "SCRIPT":
            # A master that is down misses it and gets it on its own NOSCRIPT later.
            replies = await asyncio.gather(
                *(m.call(*args, reply_within_s=reply_within_s) for m in masters), return_exceptions=True
            )
            errors = [r for r in replies if isinstance(r, BaseException)]
            if len(errors) == len(replies):
                raise errors[0]
            return next(r for r in replies if not isinstance(r, BaseException))
        return await masters[0].call(*args, reply_within_s=reply_within_s)

    # -- the slot map ------------------------------------------------------------------------------

    def read_map_soon(self) -> None:
        """Read the slot map in the background now (at engine start), not at the first call."""
        self._refresh_soon()

    def _refresh_soon(self) -> None:
        if self._refreshing is None:
            task = asyncio.get_running_loop().create_task(self._refresh_quietly())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _refresh_quietly(self) -> None:
        with contextlib.suppress(ConnectionError, ScriptError, TimeoutError):
            await self._refresh()

    async def _refresh(self, exclude: ScriptClient | None = None) -> None:
        """Read ``CLUSTER SLOTS`` from the first node that answers (known masters, then the seeds);
        concurrent callers share one read."""
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return
        loop = asyncio.get_running_loop()
        self._refreshing = loop.create_future()
        try:
            await self._read_map(exclude)
            self._refreshing.set_result(None)
        except BaseException as exc:
            self._refreshing.set_exception(exc)
            self._refreshing.exception()
            raise
        finally:
            self._refreshing = None

    async def _read_map(self, exclude: ScriptClient | None) -> None:
        candidates = list(dict.fromkeys([*self._masters, *self._seeds, *self._nodes]))
        nodes = [(address, self._node(address)) for address in candidates]
        nodes.sort(key=lambda pair: pair[1] in self._suspects)  # stable: suspects last
        errors: list[str] = []
        for address, node in nodes:
            if node is exclude:
                continue
            try:
                reply = await node.call("CLUSTER", "SLOTS", reply_within_s=self._connect_timeout_s)
            except (ConnectionError, TimeoutError, ScriptError) as exc:
                errors.append(f"{address[0]}:{address[1]}: {exc}")
                continue
            self._apply_map(reply, address[0])
            return
        raise ConnectionError("no Redis Cluster node answered CLUSTER SLOTS: " + "; ".join(errors))

    def _apply_map(self, reply: object, asked_host: str) -> None:
        slots: list[ScriptClient | None] = [None] * SLOTS
        masters: list[tuple[str, int]] = []
        assert isinstance(reply, list)
        for entry in reply:
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            host = _text(master[0]) or asked_host
            address = (host, int(master[1]))
            if address not in masters:
                masters.append(address)
            node = self._node(address)
            slots[start : end + 1] = [node] * (end - start + 1)
        self._slots = slots
        if set(masters) != set(self._masters):
            log = logger.info if not self._masters else logger.warning
            log("redis_cluster_masters", masters=[f"{h}:{p}" for h, p in masters], before=len(self._masters))
        self._masters = masters
        self.refreshes_total += 1
        # Connections to nodes that own nothing any more (a failed master, a drained one) go.
        for address in [a for a in self._nodes if a not in masters]:
            node = self._nodes.pop(address)
            self._suspects.discard(node)
            node._fail(ConnectionError("redis cluster node no longer a master"))

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        for node in self._nodes.values():
            await node.aclose()


def _left(loop: asyncio.AbstractEventLoop, deadline: float) -> float:
    return max(0.0, deadline - loop.time())


def script_client_from_settings(
    redis_url: str, cluster_nodes: Sequence[tuple[str, int]], *, connect_timeout_s: float
) -> ScriptCaller | None:
    """The engine's hot-path client: over a cluster when seed nodes are given, else one Redis;
    None when the URL needs more than it speaks (TLS, sockets): redis-py then serves the scripts."""
    if not redis_url.startswith("redis://"):
        return None
    if not cluster_nodes:
        return ScriptClient(redis_url, connect_timeout_s=connect_timeout_s)
    parsed = urlparse(redis_url)
    return ClusterScriptClient(
        cluster_nodes,
        username=unquote(parsed.username) if parsed.username else None,
        password=unquote(parsed.password) if parsed.password else None,
        connect_timeout_s=connect_timeout_s,
    )
