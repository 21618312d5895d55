"""Exports from the control plane as a real granian process: the serving worker's peak memory (VmHWM)
does not grow with the rows exported (20,000 then 200,000, each format, read over HTTP and parsed
back), and an asynchronous export left running by a control plane killed with SIGKILL is finished by
the next one. Figures are printed (``pytest -s``)."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import io
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from control_plane.settings import ControlPlaneSettings
from launcher.planes import granian_argv
from launcher.process import ChildProcess, log_tail, spawn
from tests.control_plane.test_exports import conninfo, seed
from tests.routing_engine.harness import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SMALL = 20_000
LARGE = 200_000
# Allowed growth of the worker's peak RSS from the 20k exports to the 200k ones. The 200k JSON file
# alone is ~100 MB: an export that buffered it would grow by more than that.
FLAT_MB = 16


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    out.append(int(child))
                    out.extend(descendants(int(child)))
    return out


def copies_running(database_url: str) -> int:
    with psycopg.connect(conninfo(database_url), autocommit=True) as conn:
        row: Any = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND query LIKE 'COPY (SELECT%%' AND state <> 'idle' AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0])


def status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"{key} missing for {pid}")


@contextlib.asynccontextmanager
async def control_plane(
    env: dict[str, str], logs: Path, name: str
) -> AsyncIterator[tuple[ChildProcess, str]]:
    port = free_port()
    child = spawn(
        name,
        granian_argv("control_plane.app:create_app", "127.0.0.1", port, workers=1),
        logs / f"{name}.log",
        env=env,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30.0
        async with httpx.AsyncClient(base_url=url, timeout=1.0) as client:
            while True:
                if not child.running():
                    raise AssertionError(f"{name} exited: {log_tail(child.log_path)}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/health")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise AssertionError(f"{name} not ready: {log_tail(child.log_path)}")
                await asyncio.sleep(0.1)
        yield child, url
    finally:
        child.stop()


async def register(client: httpx.AsyncClient, name: str) -> tuple[dict[str, str], int]:
    email = f"{name}-{os.urandom(4).hex()}@example.com"
    response = await client.post(
        "/api/register",
        json={
            "name": name,
            "email": email,
            "password": "correct horse battery",
            "password_confirmation": "correct horse battery",
            "tenant_name": name,
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return {"Authorization": f"Bearer {body['token']}"}, int(body["user"]["tenant_id"])


def count_rows(fmt: str, body: bytes) -> int:
    if fmt == "csv":
        return sum(1 for _ in csv.reader(io.StringIO(body.decode(), newline=""))) - 1
    if fmt == "json":
        return len(json.loads(body))
    return sum(1 for line in body.split(b"\n") if line and json.loads(line))


async def stream_export(
    client: httpx.AsyncClient, headers: dict[str, str], fmt: str
) -> tuple[int, int, float]:
    """Rows parsed back, bytes and seconds of one streaming export read over HTTP."""
    started = time.perf_counter()
    chunks: list[bytes] = []
    async with client.stream(
        "GET", "/api/exports/call-records", params={"format": fmt}, headers=headers
    ) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
    seconds = time.perf_counter() - started
    body = b"".join(chunks)
    return count_rows(fmt, body), len(body), seconds


@pytest.fixture
def env(cp_settings: ControlPlaneSettings, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "VLB_EXPORTS_LEASE_S": "2", "VLB_EXPORTS_POLL_S": "0.5", "VLB_LOG_LEVEL": "warning"}


async def test_streaming_export_memory_is_flat_in_a_granian_process(
    env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    async with (
        control_plane(env, tmp_path, "cp-exports") as (child, url),
        httpx.AsyncClient(base_url=url, timeout=120.0) as client,
    ):
        small_headers, small_tenant = await register(client, "small")
        large_headers, large_tenant = await register(client, "large")
        seed(database_url, small_tenant, SMALL, cdrs=False)
        seed(database_url, large_tenant, LARGE, cdrs=False)
        workers = descendants(child.pid)
        assert workers, "granian started no worker"

        def peak_mb() -> float:
            return max(status_kb(pid, "VmHWM") for pid in workers) / 1024

        for fmt in ("csv", "json", "ndjson"):
            assert (await stream_export(client, small_headers, fmt))[0] == SMALL
        after_small = peak_mb()
        figures = []
        for fmt in ("csv", "json", "ndjson"):
            rows, size, seconds = await stream_export(client, large_headers, fmt)
            assert rows == LARGE
            figures.append(f"{fmt}: {LARGE / seconds:,.0f} rows/s, {size / 1e6:.0f} MB")
        after_large = peak_mb()
        # A client that leaves after the first chunk: the server ends the COPY and frees the connection.
        async with client.stream(
            "GET", "/api/exports/call-records", params={"format": "json"}, headers=large_headers
        ) as response:
            async for _chunk in response.aiter_raw():
                break
        deadline = time.monotonic() + 10
        while copies_running(database_url):
            assert time.monotonic() < deadline, "the COPY of an abandoned export is still running"
            await asyncio.sleep(0.1)
    print(
        f"\nexport peak RSS of the granian worker: {after_small:.1f} MB after 3x{SMALL:,} rows, "
        f"{after_large:.1f} MB after 3x{LARGE:,} rows ({'; '.join(figures)})"
    )
    assert after_large - after_small < FLAT_MB


async def test_async_export_left_running_by_a_killed_control_plane_is_finished_by_the_next(
    env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    async with control_plane(env, tmp_path, "cp-first") as (child, url):
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:
            headers, tenant = await register(client, "restart")
            seed(database_url, tenant, LARGE, cdrs=False)
            queued = await client.post(
                "/api/exports", json={"type": "call_records", "format": "ndjson"}, headers=headers
            )
            assert queued.status_code == 202, queued.text
            export_id = queued.json()["id"]
            deadline = time.monotonic() + 30
            while (await client.get(f"/api/exports/{export_id}/status", headers=headers)).json()[
                "status"
            ] != "running":
                assert time.monotonic() < deadline, "the job never started"
                await asyncio.sleep(0.02)
        os.killpg(child.pid, signal.SIGKILL)
        child.process.wait(10)
    with psycopg.connect(conninfo(database_url)) as conn:
        row: Any = conn.execute(
            "SELECT status, attempts, lease_owner FROM export_jobs WHERE id = %s", (export_id,)
        ).fetchone()
    assert row[0] == "running", row  # died half-way: still leased to the dead process
    assert row[1] == 1
    started = time.monotonic()
    async with (
        control_plane(env, tmp_path, "cp-second") as (_, url),
        httpx.AsyncClient(base_url=url, timeout=60.0) as client,
    ):
        while True:
            job = (await client.get(f"/api/exports/{export_id}/status", headers=headers)).json()
            if job["status"] in ("done", "failed"):
                break
            assert time.monotonic() - started < 90, job
            await asyncio.sleep(0.2)
        assert job["status"] == "done", job
        assert job["attempts"] == 2
        assert job["rows"] == LARGE
        response = await client.get(f"/api/exports/{export_id}/download", headers=headers)
        assert response.status_code == 200
        assert count_rows("ndjson", gzip.decompress(response.content)) == LARGE
    print(f"\nkilled mid-export; the next control plane finished it in {time.monotonic() - started:.1f} s")
