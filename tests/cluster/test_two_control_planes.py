"""Issue 14 part 3: two control-plane processes on one database and one NATS (the 3-node cluster,
replicas 3). Both serve the API (the tenant is built through both, alternately); both publish
snapshots (concurrent configuration writes through both APIs, then the engine runs the database's
latest version and the bucket holds it); both run the durable events consumer (each event written
once: rows counted against the events sent)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from launcher.process import ChildProcess
from loadtests.natscluster import NatsCluster
from shared.snapshot import SNAPSHOT_DECODER, snapshot_key
from tests.e2e.test_lifecycle_faults import (
    Rig,
    _quiet,
    counts,
    start_control_plane,
    tokens,
    wait_until,
)
from tests.routing_engine.harness import (
    asgi_client,
    engine_settings,
    load_fixture,
    new_session,
    running_engine,
)

pytestmark = pytest.mark.slow

INBOUND = load_fixture("application-inbound.json")
WRITES_PER_PLANE = 12
CALLS = 200


async def build_tenant(planes: list[httpx.AsyncClient]) -> tuple[int, str, str, int]:
    """Register and configure a tenant, alternating control planes; (tenant id, domain, key, group)."""
    a, b = planes
    email = f"ops-{uuid.uuid4().hex[:8]}@cluster.test"
    answer = await a.post(
        "/api/register",
        json={
            "name": "Ops",
            "email": email,
            "password": "s3cret-Passw0rd",
            "password_confirmation": "s3cret-Passw0rd",
        },
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    for client in planes:
        client.headers["Authorization"] = f"Bearer {body['token']}"
    tenant_id = int(body["user"]["tenant_id"])
    domain = f"two-{uuid.uuid4().hex[:8]}.cloudonix.net"
    created = (await b.post("/api/domains", json={"domain": domain})).json()
    key = created["webhook_key"]
    agents = []
    for i, client in enumerate(planes):
        made = await client.post(
            "/api/voice-agents",
            json={"name": f"agent {i}", "provider": "vapi", "service_value": f"+1415555010{i}"},
        )
        assert made.status_code == 201, made.text
        agents.append(int(made.json()["id"]))
    group = (await a.post("/api/agent-groups", json={"name": "support", "strategy": "round_robin"})).json()
    gid = int(group["id"])
    for agent in agents:
        added = await b.post(f"/api/agent-groups/{gid}/members", json={"agent_id": agent, "capacity": 0})
        assert added.status_code == 201, added.text
    rule = await a.post(
        "/api/inbound-routing-rules", json={"pattern": "*", "target_type": "group", "target_id": gid}
    )
    assert rule.status_code == 201, rule.text
    return tenant_id, domain, key, gid


async def db_version(db: Any, tenant_id: int) -> int:
    async with db.connect() as conn:
        return int(
            (
                await conn.execute(text("SELECT config_version FROM tenants WHERE id = :t"), {"t": tenant_id})
            ).scalar_one()
        )


async def one_call(client: httpx.AsyncClient, domain: str, key: str, session: str) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    inbound = dict(INBOUND, Session=session, CallSid=session, Domain=domain, AccountSid=domain)
    answer = await client.post(f"/api/voice/application/{domain}", json=inbound, headers=auth)
    assert answer.status_code == 200, answer.text
    assert b"<Dial" in answer.content, answer.text
    ended = load_fixture("session-updates-answered.json")
    update = dict(ended[-1] if isinstance(ended, list) else ended)  # type: ignore[index]
    update.update(token=session, domain=domain, eventId=f"{session}-answer", callIds=[f"{session}@c.example"])
    response = await client.post(f"/api/voice/session/update/{domain}", json=update, headers=auth)
    assert response.status_code == 204, response.text
    cdr = load_fixture("cdr-answered.json")
    cdr = dict(
        cdr,
        domain=domain,
        call_id=f"{session}@c.example",
        session=dict(cdr["session"], token=session, domain=domain),
    )
    response = await client.post(f"/api/voice/session/cdr/{domain}", json=cdr, headers=auth)
    assert response.status_code == 204, response.text


async def test_two_control_planes_share_consumer_and_publish_in_order(
    schema: str, nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    import nats

    db = create_async_engine(schema, pool_size=2)
    cp_env = {
        **os.environ,
        "VLB_NATS_URL": nats_cluster.url,
        "VLB_NATS_REPLICAS": "3",
        "VLB_LOG_LEVEL": "warning",
    }
    nc = await nats.connect(nats_cluster.urls, error_cb=_quiet)
    rig = Rig(nats=None, nc=nc, engine=None, tenant=None, db=db, cp_env=cp_env, logs=tmp_path)  # type: ignore[arg-type]
    children: list[ChildProcess] = []
    tenant_id = 0
    try:
        children.append(await start_control_plane(rig, "cp-a"))
        children.append(await start_control_plane(rig, "cp-b"))
        urls = [_url(c) for c in children]
        async with contextlib.AsyncExitStack() as stack:
            planes = [
                await stack.enter_async_context(httpx.AsyncClient(base_url=u, timeout=15.0)) for u in urls
            ]
            tenant_id, domain, key, gid = await build_tenant(planes)
            async with running_engine(
                engine_settings(nats_url=nats_cluster.url, nats_replicas="3")
            ) as engine:
                # Concurrent writes through both APIs: each bumps the tenant's config version.
                async def write(client: httpx.AsyncClient, n: int) -> None:
                    answer = await client.patch(f"/api/agent-groups/{gid}", json={"name": f"support {n}"})
                    assert answer.status_code == 200, answer.text

                await asyncio.gather(*(write(planes[n % 2], n) for n in range(2 * WRITES_PER_PLANE)))
                latest = await db_version(db, tenant_id)
                assert latest >= 2 * WRITES_PER_PLANE
                assert await engine.store.wait_for(tenant_id, latest, within_s=30.0), (
                    f"the engine never ran the database's latest version {latest}"
                )
                kv = await nc.jetstream().key_value(os.environ["VLB_CONFIG_BUCKET"])
                entry = await kv.get(snapshot_key(tenant_id))
                assert entry.value is not None
                in_bucket = SNAPSHOT_DECODER.decode(entry.value)
                assert in_bucket.version == latest, f"bucket holds v{in_bucket.version}, database v{latest}"
                last_name = {g.name for g in in_bucket.groups}
                async with db.connect() as conn:
                    db_name = (
                        await conn.execute(text("SELECT name FROM agent_groups WHERE id = :g"), {"g": gid})
                    ).scalar_one()
                assert last_name == {db_name}, "the bucket's snapshot is not the database's last write"
                # Calls through the engine: both planes' consumers share the durable, each event once.
                sessions = [new_session() for _ in range(CALLS)]
                gate = asyncio.Semaphore(16)

                async def bounded(session: str) -> None:
                    async with gate:
                        await one_call(client, domain, key, session)

                async with asgi_client(engine) as client:
                    await asyncio.gather(*(bounded(s) for s in sessions))

                async def stored_all() -> bool:
                    c = await counts(db, tenant_id)
                    return c.records >= CALLS and c.cdrs >= CALLS and c.events >= 3 * CALLS

                await wait_until(stored_all, 60.0, "both consumers stored every call")
                await asyncio.sleep(2.0)  # a duplicate written late would show now
                c = await counts(db, tenant_id)
                records = await tokens(db, "call_records", tenant_id)
                listed = [
                    (await p.get("/api/call-records", params={"per_page": 1})).json()["meta"]["total"]
                    for p in planes
                ]
                print(
                    f"\ntwo control planes: {2 * WRITES_PER_PLANE} concurrent writes -> config version {latest}, "
                    f"engine runs v{latest}; {CALLS} calls, {3 * CALLS} events sent -> {c.records} records, "
                    f"{c.cdrs} CDRs, {c.events} events ({c.distinct_events} distinct); records listed by "
                    f"each plane {listed}"
                )
                assert sorted(records) == sorted(sessions)
                assert c.cdrs == CALLS
                assert c.events == c.distinct_events == 3 * CALLS
                assert listed == [CALLS, CALLS]
                # Round robin over two agents without capacity limits, calls spread over two planes'
                # writes and one engine: the split is within one call.
                stats = (await planes[1].get(f"/api/agent-groups/{gid}/stats")).json()
                spread = [m["window_calls"] for m in stats["members"]]
                print(f"round robin window calls per agent: {spread}")
                assert sum(spread) == CALLS
                assert max(spread) - min(spread) <= 1, spread
                assert engine.events.dropped == 0
    finally:
        for child in reversed(children):
            child.stop(grace_s=5.0)
        with contextlib.suppress(Exception):
            await nc.close()
        if tenant_id:
            with contextlib.suppress(Exception):
                async with db.begin() as conn:
                    await conn.execute(text("DELETE FROM tenants WHERE id = :id"), {"id": tenant_id})
        await db.dispose()


def _url(child: ChildProcess) -> str:
    argv = list(child.process.args)  # type: ignore[arg-type]
    return f"http://127.0.0.1:{argv[argv.index('--port') + 1]}"
