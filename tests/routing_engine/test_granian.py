"""The engine as it runs in production: a real granian process with two workers, fed a snapshot
through the shared KV bucket, answering calls over HTTP and merging metrics across workers."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import httpx
import pytest
from nats.js.kv import KeyValue

from routing_engine import simulate
from tests.routing_engine.harness import (
    demo_tenant,
    granian_engine,
    load_fixture,
    new_session,
    put_snapshot,
)

INBOUND = load_fixture("application-inbound.json")


@pytest.fixture
def engine_url() -> Iterator[str]:
    with granian_engine(workers=2) as url:
        yield url


async def test_two_worker_granian_routes_calls(
    engine_url: str, kv: KeyValue, capsys: pytest.CaptureFixture[str]
) -> None:
    config = demo_tenant()
    await put_snapshot(kv, config.snapshot)
    url = f"/api/voice/application/{config.domain}"
    limits = httpx.Limits(max_connections=8)
    async with httpx.AsyncClient(base_url=engine_url, limits=limits, timeout=5) as client:
        # Both workers must have applied the snapshot: wait for a run of successes on fresh connections.
        ok = 0
        for _ in range(200):
            r = await client.post(url, json=dict(INBOUND, Session=new_session()), headers=config.auth)
            ok = ok + 1 if r.status_code == 200 else 0
            if ok >= 10:
                break
            await asyncio.sleep(0.05)
        assert ok >= 10
        sessions = [new_session() for _ in range(40)]
        answers = await asyncio.gather(
            *(client.post(url, json=dict(INBOUND, Session=s), headers=config.auth) for s in sessions)
        )
        repeats = await asyncio.gather(
            *(client.post(url, json=dict(INBOUND, Session=s), headers=config.auth) for s in sessions)
        )
        for first, again in zip(answers, repeats, strict=True):
            assert first.status_code == 200
            assert ET.fromstring(first.content).find("Dial/Service") is not None
            assert again.text == first.text  # idempotent across workers
        ready = (await client.get("/ready")).json()
        assert ready["status"] == "ready"
        text = (await client.get("/metrics")).text
        assert "vlb_engine_idempotent_replays_total" in text
        assert 'vlb_engine_requests_total{outcome="routed",path="application"}' in text

        # The simulator (what `vlb simulate` wraps) drives a whole failing-then-answered call.
        argv = [
            "--url",
            engine_url,
            "--domain",
            config.domain,
            "--key",
            config.key,
            "--shape",
            "form",
            "--dial-status",
            "no-answer",
            "--dial-status",
            "completed",
        ]
        assert await asyncio.to_thread(simulate.main, argv) == 0
        out = capsys.readouterr().out
        assert 'provider="vapi"' in out
        assert 'provider="synthflow"' in out
        assert "<Hangup/>" in out
