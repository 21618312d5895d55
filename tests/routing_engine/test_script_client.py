"""The balancer's lean Redis client against real redis-servers of its own: replies in order under
pipelining, error replies, a dead or restarted server, abandoned commands, AUTH and SELECT."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess

import pytest
import redis.asyncio as aioredis

from routing_engine.script_client import ScriptClient, ScriptError, pack
from tests.routing_engine.harness import PrivateServer, free_port

SLOW_SCRIPT = (  # busy for a full second of Redis time, then replies
    "local t = redis.call('TIME') while true do "
    "local n = redis.call('TIME') "
    "if (n[1] - t[1]) * 1000000 + n[2] - t[2] >= 1000000 then break end end "
    "return 'late'"
)


def test_pack_is_resp() -> None:
    assert pack("GET", b"k\r\n") == b"*2\r\n$3\r\nGET\r\n$3\r\nk\r\n\r\n"


async def test_pipelined_replies_come_back_in_order(private_redis: PrivateServer) -> None:
    client = ScriptClient(private_redis.url)
    try:
        replies = await asyncio.gather(*(client.call("ECHO", f"m{i}") for i in range(500)))
        assert replies == [f"m{i}".encode() for i in range(500)]
        assert await client.call("EVAL", "return {1, 'two', {3}}", "0") == [1, b"two", [3]]
    finally:
        await client.aclose()


async def test_an_error_reply_fails_only_its_command(private_redis: PrivateServer) -> None:
    client = ScriptClient(private_redis.url)
    try:
        bad, good = await asyncio.gather(
            client.call("EVALSHA", "0" * 40, "0"), client.call("PING"), return_exceptions=True
        )
        assert isinstance(bad, ScriptError)
        assert str(bad).startswith("NOSCRIPT")
        assert good == b"PONG"
    finally:
        await client.aclose()


async def test_a_dead_server_fails_fast_and_a_new_one_is_used(private_redis: PrivateServer) -> None:
    client = ScriptClient(private_redis.url, connect_timeout_s=0.5)
    try:
        assert await client.call("PING") == b"PONG"
        blocked = asyncio.ensure_future(client.call("BLPOP", "never", "5"))
        await asyncio.sleep(0.1)
        private_redis.stop()
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(blocked, 2)
        with pytest.raises(ConnectionError):
            await client.call("PING")  # refused: nothing listens
        private_redis.start()
        assert await client.call("PING") == b"PONG"  # reconnects by itself
    finally:
        await client.aclose()


async def test_an_abandoned_command_never_answers_the_next_one(private_redis: PrivateServer) -> None:
    client = ScriptClient(private_redis.url)
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await client.call("EVAL", SLOW_SCRIPT, "0")
        # The late reply went with the dropped connection: this one gets its own answer.
        assert await client.call("ECHO", "mine") == b"mine"
    finally:
        await client.aclose()


async def test_a_late_reply_times_out_every_pending_command(private_redis: PrivateServer) -> None:
    client = ScriptClient(private_redis.url)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        # A command with no deadline, then two with deadlines (the later one given first): the
        # watchdog fires at the earliest deadline and fails all three (their replies could no longer
        # be matched once one is given up).
        results = await asyncio.gather(
            client.call("EVAL", SLOW_SCRIPT, "0"),
            client.call("ECHO", "a", reply_within_s=5.0),
            client.call("ECHO", "b", reply_within_s=0.2),
            return_exceptions=True,
        )
        elapsed = loop.time() - started
        assert all(isinstance(r, TimeoutError) for r in results), results
        assert 0.2 <= elapsed < 0.9
        # The late reply went with the dropped connection: this one gets its own answer, in time.
        assert await client.call("ECHO", "mine", reply_within_s=2.0) == b"mine"
    finally:
        await client.aclose()


async def test_replies_in_time_leave_nothing_armed(private_redis: PrivateServer) -> None:
    client = ScriptClient(private_redis.url)
    try:
        replies = await asyncio.gather(*(client.call("ECHO", f"m{i}", reply_within_s=0.3) for i in range(50)))
        assert replies == [f"m{i}".encode() for i in range(50)]
        await asyncio.sleep(0.4)  # the watchdog fires, finds nothing overdue, and stops
        assert client._watchdog is None
        assert await client.call("PING", reply_within_s=0.3) == b"PONG"
    finally:
        await client.aclose()


def _redis_with_password(port: int, directory: str) -> subprocess.Popen[bytes]:
    server = PrivateServer("redis")
    argv = [*server.command()[:-4], "--dir", directory, "--requirepass", "s3cret"]
    argv[argv.index("--port") + 1] = str(port)
    server.cleanup()
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_auth_and_database_from_the_url(tmp_path: object) -> None:
    port = free_port()
    proc = _redis_with_password(port, str(tmp_path))
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.05)
        client = ScriptClient(f"redis://:s3cret@127.0.0.1:{port}/3")
        try:
            await client.call("SET", "where", "db3")
        finally:
            await client.aclose()
        check = aioredis.Redis(host="127.0.0.1", port=port, password="s3cret", db=3)
        assert await check.get("where") == b"db3"
        await check.aclose()
        wrong = ScriptClient(f"redis://:wrong@127.0.0.1:{port}/0")
        try:
            with pytest.raises(ConnectionError, match="WRONGPASS"):  # the balancer degrades on it
                await wrong.call("PING")
        finally:
            await wrong.aclose()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_only_plain_redis_urls() -> None:
    with pytest.raises(ValueError, match="rediss"):
        ScriptClient("rediss://127.0.0.1:6380/0")
