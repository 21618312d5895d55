"""Fault drill: whole calls through a ``vlb run`` system while its planes are killed.

Starts ``vlb run`` (a data folder, free ports and a database of its own; the PostgreSQL, Redis and NATS
at the ``VLB_*`` URLs under names of its own), then drives ``--calls`` whole calls, ``--concurrency``
at a time, the way Cloudonix does: the voice-application request (the simulator's payload,
routing_engine/simulate.py), the session updates of an answered call (new, processing, ringing,
connected, answer) and its CDR. At call ``--kill-control-plane-at`` the control plane's granian worker
gets ``kill -9``; at call ``--kill-engine-at`` one engine worker; with ``--kill-control-plane-master``
the control plane's master too. A webhook that finds nothing listening is retried (up to 5 times,
0.5 s apart, as Cloudonix retries), counted.

Then it waits for the control plane to record the calls and asks the API (as the demo admin) for each
call: recorded = the call has its routing decision and its CDR. Prints, and exits non-zero unless
lost is 0:

    sent / answered / recorded / lost, webhook retries, the planes' restarts

    .venv/bin/python -m loadtests.faults.kill_planes [--calls 300] [--concurrency 8]
        [--kill-control-plane-at 100] [--kill-engine-at 200] [--kill-control-plane-master]

Stops everything it started and drops its database, streams and Redis keys.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import nats
import psycopg
import redis
from sqlalchemy.engine import make_url

from loadtests.faults.procs import CONTROL_PLANE_TARGET, ENGINE_TARGET, VlbRun, vlb_run
from routing_engine.simulate import inbound_payload

_REPO = Path(__file__).resolve().parents[2]
RETRIES = 5
RETRY_WAIT_S = 0.5


def fixture(name: str) -> Any:
    path = _REPO.parent / "shared" / "fixtures" / "cloudonix" / name
    if not path.is_file():
        path = _REPO / "tests" / "fixtures" / "cloudonix" / name
    return json.loads(path.read_text())


UPDATES: list[dict[str, Any]] = fixture("session-updates-answered.json")
CDR: dict[str, Any] = fixture("cdr-answered.json")


class Drill:
    def __init__(self, run: VlbRun, args: argparse.Namespace) -> None:
        self.run = run
        self.args = args
        demo = run.demo()
        self.domain = demo["domain"]
        self.demo = demo
        self.auth = {"Authorization": f"Bearer {demo['webhook_key']}"}
        self.sent = 0
        self.answered: list[str] = []
        self.failed: list[tuple[str, str]] = []
        self.retries = 0
        self.kills: list[str] = []

    async def _post(
        self, client: httpx.AsyncClient, path: str, body: dict[str, Any], expect: int
    ) -> httpx.Response:
        url = f"{self.run.engine_url}{path}"
        for attempt in range(RETRIES + 1):
            try:
                response = await client.post(url, json=body, headers=self.auth)
            except httpx.TransportError:
                if attempt == RETRIES:
                    raise
                self.retries += 1
                await asyncio.sleep(RETRY_WAIT_S)
                continue
            if response.status_code != expect:
                raise RuntimeError(f"{path}: HTTP {response.status_code} {response.text[:120]}")
            return response
        raise AssertionError("not reached")

    async def call(self, client: httpx.AsyncClient, number: int) -> None:
        self.sent += 1
        self._maybe_kill(number)
        token = uuid.uuid4().hex
        try:
            body = inbound_payload(token, self.domain, "+12125550199", "+14155550100", "inbound")
            answer = await self._post(client, f"/api/voice/application/{self.domain}", body, 200)
            if "<Dial" not in answer.text:
                raise RuntimeError(f"no agent dialled: {answer.text[:120]}")
            for update in UPDATES:
                item = copy.deepcopy(update)
                item.update(token=token, domain=self.domain, eventId=f"{token}-{item['status']}")
                await self._post(client, f"/api/voice/session/update/{self.domain}", item, 204)
            cdr = copy.deepcopy(CDR)
            cdr["domain"] = self.domain
            cdr["owner"]["domain"]["name"] = self.domain
            cdr["session"].update(token=token, domain=self.domain)
            await self._post(client, f"/api/voice/session/cdr/{self.domain}", cdr, 204)
        except (httpx.HTTPError, RuntimeError) as exc:
            self.failed.append((token, str(exc) or type(exc).__name__))
            return
        self.answered.append(token)

    def _maybe_kill(self, number: int) -> None:
        if number == self.args.kill_control_plane_at:
            workers = self.run.workers(CONTROL_PLANE_TARGET)
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                self.kills.append(f"call {number}: control plane worker {workers[0]}")
            if self.args.kill_control_plane_master:
                master = self.run.master(CONTROL_PLANE_TARGET)
                if master:
                    os.kill(master, signal.SIGKILL)
                    self.kills.append(f"call {number}: control plane master {master}")
        if number == self.args.kill_engine_at:
            workers = self.run.workers(ENGINE_TARGET)
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                self.kills.append(f"call {number}: engine worker {workers[0]}")

    async def drive(self) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for number in range(1, self.args.calls + 1):
            queue.put_nowait(number)
        limits = httpx.Limits(max_connections=self.args.concurrency)
        async with httpx.AsyncClient(timeout=10.0, limits=limits) as client:

            async def worker() -> None:
                while not queue.empty():
                    await self.call(client, queue.get_nowait())

            await asyncio.gather(*(worker() for _ in range(self.args.concurrency)))

    async def recorded(self, within_s: float) -> list[str]:
        """The answered calls the API shows with their routing decision and their CDR."""
        base = self.run.control_plane_url
        deadline = time.monotonic() + within_s
        found: set[str] = set()
        async with httpx.AsyncClient(base_url=base, timeout=10.0) as client:
            token = None
            while time.monotonic() < deadline:
                try:
                    if token is None:
                        login = await client.post(
                            "/api/login",
                            json={"email": self.demo["email"], "password": self.demo["password"]},
                        )
                        login.raise_for_status()
                        token = login.json()["token"]
                    headers = {"Authorization": f"Bearer {token}"}
                    for session in self.answered:
                        if session in found:
                            continue
                        r = await client.get(f"/api/calls/{session}", headers=headers)
                        if r.status_code == 200:
                            kinds = {entry["kind"] for entry in r.json()["timeline"]}
                            if {"routed", "cdr"} <= kinds:
                                found.add(session)
                except httpx.HTTPError:
                    pass  # the control plane may be restarting
                if len(found) == len(self.answered):
                    break
                await asyncio.sleep(1.0)
        return sorted(found)


def _drop_leftovers(env: dict[str, str], admin: str, database: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    client = redis.Redis.from_url(env["VLB_REDIS_URL"])
    try:
        keys = list(client.scan_iter(match=f"{env['VLB_REDIS_PREFIX']}*", count=1000))
        for i in range(0, len(keys), 1000):
            client.unlink(*keys[i : i + 1000])
    finally:
        client.close()

    async def drop_streams() -> None:
        nc = await nats.connect(env["VLB_NATS_URL"], connect_timeout=2, allow_reconnect=False)
        try:
            js = nc.jetstream()
            for name in (f"KV_{env['VLB_CONFIG_BUCKET']}", env["VLB_EVENTS_STREAM"]):
                with contextlib.suppress(Exception):
                    await js.delete_stream(name)
        finally:
            await nc.close()

    asyncio.run(drop_streams())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--kill-control-plane-at", type=int, default=100)
    parser.add_argument("--kill-engine-at", type=int, default=200)
    parser.add_argument("--kill-control-plane-master", action="store_true")
    parser.add_argument("--record-within", type=float, default=120.0, help="seconds to wait for the records")
    args = parser.parse_args(argv)

    drill_id = uuid.uuid4().hex[:8]
    base_db = os.environ.get("VLB_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    database = f"vlb_drill_{drill_id}"
    admin = (
        make_url(base_db)
        .set(drivername="postgresql", database="postgres")
        .render_as_string(hide_password=False)
    )
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("VLB_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(
        VLB_DATABASE_URL=make_url(base_db).set(database=database).render_as_string(hide_password=False),
        VLB_REDIS_URL=os.environ.get("VLB_REDIS_URL", "redis://127.0.0.1:6379/0"),
        VLB_NATS_URL=os.environ.get("VLB_NATS_URL", "nats://127.0.0.1:4222"),
        VLB_REDIS_PREFIX=f"vlbdrill{drill_id}",
        VLB_CONFIG_BUCKET=f"vlb-config-drill-{drill_id}",
        VLB_EVENTS_STREAM=f"VLB_EVENTS_DRILL_{drill_id}",
        VLB_EVENTS_SUBJECT_PREFIX=f"vlbdrill{drill_id}.events",
        VLB_HEARTBEAT_SUBJECT=f"vlbdrill{drill_id}.engines.heartbeat",
    )
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    data_dir = Path(tempfile.mkdtemp(prefix="vlb-drill-"))
    try:
        with vlb_run(data_dir, env) as run:
            drill = Drill(run, args)
            started = time.monotonic()
            asyncio.run(drill.drive())
            drive_s = time.monotonic() - started
            recorded = asyncio.run(drill.recorded(args.record_within))
            restarts = [e.get("name") for e in run.log_events("plane.restarted")]
        lost = args.calls - len(recorded)
        print(f"kill_planes drill: {args.calls} calls, {args.concurrency} in flight, {drive_s:.1f} s")
        for kill in drill.kills:
            print(f"  killed      {kill}")
        print(f"  sent        {drill.sent}")
        print(f"  answered    {len(drill.answered)}   (every webhook of the call answered as expected)")
        print(f"  recorded    {len(recorded)}   (GET /api/calls/<token>: routed and cdr in its timeline)")
        print(f"  lost        {lost}")
        print(f"  retried     {drill.retries} webhooks (connection refused/reset, retried as Cloudonix does)")
        print(f"  vlb run restarted: {', '.join(str(r) for r in restarts) or 'nothing'}")
        for token, reason in drill.failed[:10]:
            print(f"  failed      {token}: {reason}")
        return 0 if lost == 0 else 1
    finally:
        _drop_leftovers(env, admin, database)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
