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
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from urllib.parse import unquote, urlparse

import hiredis
from redis.exceptions import ResponseError

CONNECT_TIMEOUT_S = 0.5


class ScriptError(ResponseError):
    """Redis answered the command with an error reply (``NOSCRIPT ...``, ``READONLY ...``, ...); a
    redis-py ``ResponseError``, so code that handles redis-py's errors handles these too."""


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
                if isinstance(exc, ConnectionError)
                else ConnectionError(f"redis connect failed: {type(exc).__name__}: {exc}")
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
