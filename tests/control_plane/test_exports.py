"""Exports: streaming call records and CDRs in each format (200,000 generated rows parsed back and
counted), field selection, anonymisation, filters and 422s, viewers, tenants kept apart; asynchronous
jobs written into the NATS object store, downloaded and parsed back, re-run after their worker died, and
expired."""

from __future__ import annotations

import asyncio
import csv
import datetime
import gzip
import io
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import psycopg
import pytest
from nats.js.errors import NotFoundError
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from control_plane.analytics import aggregates
from control_plane.exports import objects
from control_plane.exports.worker import ExportWorker, chunk_token
from control_plane.settings import ControlPlaneSettings
from loadtests.export_rows import CALL_RECORDS_SQL, CDRS_SQL, seed_params
from tests.conftest import NATS_URL
from tests.control_plane.conftest import Account, register_account

BIG = 200_000
FULL_NUMBER = re.compile(r"\+1(415|212)\d{7}")


def conninfo(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def seed(database_url: str, tenant_id: int, count: int, *, records: bool = True, cdrs: bool = True) -> str:
    """``count`` call records and CDRs for the tenant; returns their session-token prefix."""
    prefix = f"x{uuid.uuid4().hex[:6]}-"
    params = seed_params(tenant_id, count, prefix=prefix, domain=f"t{tenant_id}.example")
    with psycopg.connect(conninfo(database_url), autocommit=True) as conn:
        if records:
            conn.execute(CALL_RECORDS_SQL, params)
        if cdrs:
            conn.execute(CDRS_SQL, params)
    return prefix


async def keep_aggregates(database_url: str, tenant_id: int) -> None:
    """The tenant's call_stats as the consumer would have kept them for the seeded records (the list's
    totals read them)."""
    engine = create_async_engine(database_url)
    try:
        async with AsyncSession(engine) as session, session.begin():
            await aggregates.rebuild(session, tenant_id)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
async def big(client: Any, database_url: str) -> tuple[Account, str]:
    """A tenant with 200,000 call records and as many CDRs (seeded once for the module)."""
    account = await register_account(client, "Big")
    prefix = seed(database_url, account.tenant_id, BIG)
    await keep_aggregates(database_url, account.tenant_id)
    return account, prefix


@pytest.fixture
async def small(account: Account, database_url: str) -> tuple[Account, str]:
    prefix = seed(database_url, account.tenant_id, 100)
    await keep_aggregates(database_url, account.tenant_id)
    return account, prefix


def parse(fmt: str, body: bytes) -> list[dict[str, Any]]:
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(body.decode(), newline="")))
    if fmt == "json":
        data = json.loads(body)
        assert isinstance(data, list)
        return data
    return [json.loads(line) for line in body.decode().split("\n") if line]


async def export(account: Account, path: str, **params: Any) -> Any:
    return await account.get(f"/api/exports/{path}", params=params)


@pytest.mark.parametrize("fmt", ["csv", "json", "ndjson"])
async def test_streaming_200k_call_records_parse_back(big: tuple[Account, str], fmt: str) -> None:
    account, prefix = big
    response = await export(account, "call-records", format=fmt)
    assert response.status_code == 200, response.text[:300]
    day = datetime.datetime.now(datetime.UTC).date().isoformat()
    assert response.headers["content-disposition"] == f'attachment; filename="call-records-{day}.{fmt}"'
    rows = parse(fmt, response.content)
    assert len(rows) == BIG
    first, seventh = rows[0], rows[6]  # oldest first: generated row 1, then 7 (g % 7 == 0: no name)
    assert first["session_token"] == f"{prefix}1"
    assert first["caller_name"] == 'Caller "1", Jr'
    assert rows[1]["caller_name"] == "Two\nlines 2"
    assert rows[2]["caller_name"] == "Back\\slash 3"
    assert rows[3]["caller_name"] == "Zoë Ünïcødé 4"
    assert rows[4]["caller_name"] == ""
    assert seventh["caller_name"] in ("", None)
    assert first["start_time"] == "2026-01-01T00:00:07+00:00"
    assert first["from_number"] == "+14150000001"
    if fmt == "csv":
        assert response.headers["content-type"].startswith("text/csv")
        assert response.content.startswith(b"id,session_token,direction,")
        assert response.content.endswith(b"\r\n")
        assert seventh["caller_name"] == ""
        assert rows[4]["caller_name"] == ""
        assert first["duration"] == "65"
    else:
        assert seventh["caller_name"] is None
        assert first["duration"] == 65
        assert first["agent_id"] == 2
    assert len({r["id"] for r in rows}) == BIG


@pytest.mark.parametrize("fmt", ["csv", "json", "ndjson"])
async def test_streaming_200k_cdrs_parse_back(big: tuple[Account, str], fmt: str) -> None:
    account, prefix = big
    response = await export(account, "cdr", format=fmt, fields="session_token,disposition,billsec")
    assert response.status_code == 200, response.text[:300]
    rows = parse(fmt, response.content)
    assert len(rows) == BIG
    assert set(rows[0]) == {"session_token", "disposition", "billsec"}
    assert rows[0]["session_token"] == f"{prefix}1"
    assert sum(1 for r in rows if r["disposition"] == "NOANSWER") == BIG // 4


async def test_fields_are_chosen_in_order_and_unknown_ones_are_422(small: tuple[Account, str]) -> None:
    account, _ = small
    response = await export(account, "call-records", fields="to_number,id")
    assert response.status_code == 200
    assert response.content.split(b"\r\n")[0] == b"to_number,id"
    for path in ("call-records", "cdr"):
        response = await export(account, path, fields="id,password_hash")
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "fields"
        assert "password_hash" in response.json()["errors"][0]["message"]
    response = await export(account, "call-records", format="xml")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "format"


async def test_list_filters_apply_and_bad_ones_are_422(small: tuple[Account, str]) -> None:
    account, prefix = small
    response = await export(account, "call-records", format="ndjson", status="no_answer", direction="inbound")
    rows = parse("ndjson", response.content)
    assert rows
    assert all(r["status"] == "no_answer" and r["direction"] == "inbound" for r in rows)
    listed = await account.get("/api/call-records", params={"status": "no_answer", "direction": "inbound"})
    assert len(rows) == listed.json()["meta"]["total"]
    response = await export(
        account, "call-records", format="json", start_date="2026-01-01", end_date="2026-01-01"
    )
    assert len(parse("json", response.content)) == 100  # all 100 started that day (UTC tenant)
    response = await export(account, "cdr", format="json", token=f"{prefix}1")  # 1, 10-19, 100
    assert sorted(r["session_token"] for r in parse("json", response.content)) == sorted(
        [f"{prefix}1", *(f"{prefix}{n}" for n in range(10, 20)), f"{prefix}100"]
    )
    for path, params, field in (
        ("call-records", {"status": "nope"}, "status"),
        ("call-records", {"start_date": "2026-02-01", "end_date": "2026-01-01"}, "end_date"),
        ("cdr", {"disposition": "MAYBE"}, "disposition"),
    ):
        response = await export(account, path, **params)
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == field


@pytest.mark.parametrize("fmt", ["csv", "json", "ndjson"])
async def test_anonymized_export_holds_no_full_number_nor_name(small: tuple[Account, str], fmt: str) -> None:
    account, _ = small
    response = await export(account, "call-records", format=fmt, anonymize="true")
    assert response.status_code == 200
    assert not FULL_NUMBER.search(response.text)
    rows = parse(fmt, response.content)
    assert rows[0]["from_number"] == "********0001"
    assert rows[0]["to_number"] == "********0001"
    assert all(r["caller_name"] in ("", None) for r in rows)
    assert "Caller" not in response.text
    cdr = await export(account, "cdr", format=fmt, anonymize="true")
    assert not FULL_NUMBER.search(cdr.text)
    assert parse(fmt, cdr.content)[0]["from_number"] == "********0001"
    plain = await export(account, "call-records", format=fmt)
    assert FULL_NUMBER.search(plain.text)


async def viewer_of(account: Account) -> Account:
    email = f"viewer-{uuid.uuid4().hex[:8]}@example.com"
    created = await account.post(
        "/api/users", json={"name": "Viewer", "email": email, "password": "viewer password", "role": "viewer"}
    )
    assert created.status_code == 201, created.text
    login = await account.client.post("/api/login", json={"email": email, "password": "viewer password"})
    return Account(
        client=account.client,
        token=login.json()["token"],
        user=login.json()["user"],
        email=email,
        password="viewer password",
    )


async def test_viewer_can_export_and_queue_an_export(small: tuple[Account, str]) -> None:
    account, _ = small
    viewer = await viewer_of(account)
    response = await export(viewer, "call-records", format="ndjson")
    assert response.status_code == 200
    assert len(parse("ndjson", response.content)) == 100
    queued = await viewer.post("/api/exports", json={"type": "cdr"})
    assert queued.status_code == 202, queued.text


async def test_another_tenants_rows_never_appear(small: tuple[Account, str], other_account: Account) -> None:
    account, prefix = small
    seed_other = await export(other_account, "call-records", format="json")
    assert parse("json", seed_other.content) == []
    response = await export(other_account, "cdr", format="ndjson")
    assert prefix.encode() not in response.content
    mine = await export(account, "call-records", format="json")
    assert len(parse("json", mine.content)) == 100


async def test_export_fields_route(account: Account) -> None:
    body = (await account.get("/api/exports/fields")).json()
    by_type = {t["type"]: t for t in body["data"]}
    assert by_type["call_records"]["fields"][:3] == ["id", "session_token", "direction"]
    assert "caller_name" in by_type["call_records"]["fields"]
    assert "disposition" in by_type["cdr"]["filters"]
    assert by_type["cdr"]["formats"] == ["csv", "json", "ndjson"]


# --- asynchronous exports ------------------------------------------------------------------------


async def wait_done(account: Account, export_id: int, within_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        body = (await account.get(f"/api/exports/{export_id}/status")).json()
        if body["status"] in ("done", "failed", "expired"):
            return dict(body)
        await asyncio.sleep(0.1)
    raise AssertionError(f"export {export_id} not done in {within_s} s: {body}")


async def download(account: Account, export_id: int) -> tuple[Any, bytes]:
    response = await account.get(f"/api/exports/{export_id}/download")
    assert response.status_code == 200, response.text[:300]
    return response, gzip.decompress(response.content)


async def test_async_export_of_200k_rows_is_downloaded_from_the_object_store(
    big: tuple[Account, str], cp_settings: ControlPlaneSettings
) -> None:
    account, prefix = big
    fmt = "csv"
    queued = await account.post("/api/exports", json={"type": "call_records", "format": fmt})
    assert queued.status_code == 202, queued.text
    assert queued.json()["status"] == "queued"
    job = await wait_done(account, queued.json()["id"])
    assert job["status"] == "done", job
    assert job["rows"] == BIG
    assert job["download_url"] == f"/api/exports/{job['id']}/download"
    assert job["expires_at"] is not None
    response, body = await download(account, job["id"])
    assert response.headers["content-type"] == "application/gzip"
    assert "content-encoding" not in response.headers
    assert response.headers["content-disposition"] == f'attachment; filename="{job["filename"]}"'
    assert job["filename"].endswith(f".{fmt}.gz")
    assert int(response.headers["content-length"]) == job["bytes"] == len(response.content)
    rows = parse(fmt, body)
    assert len(rows) == BIG
    assert rows[0]["session_token"] == f"{prefix}1"
    # The object is in the shared store: any replica (here nats-py itself) reads the same bytes.
    nc = await nats.connect(NATS_URL)
    try:
        store = await nc.jetstream().object_store(cp_settings.exports_bucket)
        infos = [i for i in await store.list() if i.name.startswith(f"t{account.tenant_id}/{job['id']}-")]
        assert len(infos) == 1
        assert (await store.get(infos[0].name)).data == response.content
    finally:
        await nc.close()


async def test_async_export_filters_fields_anonymize_and_422s(small: tuple[Account, str]) -> None:
    account, _ = small
    queued = await account.post(
        "/api/exports",
        json={
            "type": "cdr",
            "format": "ndjson",
            "fields": ["session_token", "from_number"],
            "filters": {"disposition": "NOANSWER"},
            "anonymize": True,
        },
    )
    assert queued.status_code == 202, queued.text
    assert queued.json()["filters"] == {"disposition": "NOANSWER"}
    job = await wait_done(account, queued.json()["id"])
    _, body = await download(account, job["id"])
    rows = parse("ndjson", body)
    assert len(rows) == 25 == job["rows"]
    assert all(set(r) == {"session_token", "from_number"} for r in rows)
    assert not FULL_NUMBER.search(body.decode())
    for payload, field in (
        ({"type": "cdr", "fields": ["nope"]}, "fields"),
        ({"type": "cdr", "filters": {"status": "completed"}}, "filters.status"),
        ({"type": "call_records", "filters": {"agent_id": "x"}}, "filters.agent_id"),
        (
            {"type": "call_records", "filters": {"end_date": "2025-01-01", "start_date": "2026-01-01"}},
            "filters.end_date",
        ),
        ({"type": "invoices"}, "type"),
        ({"type": "cdr", "format": "xml"}, "format"),
    ):
        response = await account.post("/api/exports", json=payload)
        assert response.status_code == 422, (payload, response.text)
        assert response.json()["errors"][0]["field"] == field, response.text


async def test_async_export_of_another_tenant_is_404(
    small: tuple[Account, str], other_account: Account
) -> None:
    account, _ = small
    queued = await account.post("/api/exports", json={"type": "call_records", "format": "json"})
    job = await wait_done(account, queued.json()["id"])
    assert job["status"] == "done"
    _, body = await download(account, job["id"])
    assert len(parse("json", body)) == 100
    for suffix in ("status", "download"):
        response = await other_account.get(f"/api/exports/{job['id']}/{suffix}")
        assert response.status_code == 404
    assert (await account.get(f"/api/exports/{job['id']}/download")).status_code == 200


@pytest.fixture
async def worker(cp_settings: ControlPlaneSettings) -> AsyncIterator[ExportWorker]:
    """A second worker (another replica), its loop not started: the test drives it."""
    w = ExportWorker(cp_settings)
    await w.start(run_jobs=False)
    try:
        yield w
    finally:
        await w.stop()


async def test_job_left_running_by_a_dead_worker_is_run_again(
    small: tuple[Account, str], worker: ExportWorker, database_url: str, cp_settings: ControlPlaneSettings
) -> None:
    """The dead worker's row: running, attempt 1, lease run out, half a file of chunks in the store."""
    account, _ = small
    queued = await account.post("/api/exports", json={"type": "call_records", "format": "csv"})
    job_id = queued.json()["id"]
    with psycopg.connect(conninfo(database_url), autocommit=True) as conn:
        # Take it back from the app's own worker (if it was quick) as a dead replica would hold it.
        conn.execute(
            "UPDATE export_jobs SET status = 'running', attempts = 1, lease_owner = 'dead-host:1:x',"
            " lease_expires_at = now() - interval '1 s', rows = NULL, bytes = NULL, object_name = NULL,"
            " expires_at = NULL, finished_at = NULL WHERE id = %s",
            (job_id,),
        )
    with psycopg.connect(conninfo(database_url), autocommit=True) as conn:
        created = conn.execute("SELECT created_at FROM export_jobs WHERE id = %s", (job_id,)).fetchone()
    assert created is not None
    dead_attempt = chunk_token(job_id, created[0], 1)
    js, _ = await worker.object_store()
    for _n in range(3):  # the dead attempt's chunks
        await js.publish(objects.chunk_subject(cp_settings.exports_bucket, dead_attempt), b"x" * 1000)
    # Whichever worker claims it (the app's or this one), it is run again as attempt 2.
    while await worker.run_next():
        pass
    job = await wait_done(account, job_id)
    assert job["status"] == "done", job
    assert job["attempts"] == 2
    assert job["rows"] == 100
    _, data = await download(account, job_id)
    assert len(parse("csv", data)) == 100
    # The dead attempt's chunks were purged.
    with pytest.raises(NotFoundError):
        await js.get_msg(
            f"OBJ_{cp_settings.exports_bucket}",
            seq=1,
            subject=objects.chunk_subject(cp_settings.exports_bucket, dead_attempt),
            next=True,
            direct=True,
        )


async def test_expired_export_is_deleted_and_answers_410(
    small: tuple[Account, str], worker: ExportWorker, database_url: str, cp_settings: ControlPlaneSettings
) -> None:
    account, _ = small
    queued = await account.post("/api/exports", json={"type": "cdr", "format": "json"})
    while await worker.run_next():  # whichever worker claims it (the app's or this one) runs it
        pass
    job = await wait_done(account, queued.json()["id"])
    assert job["status"] == "done"
    with psycopg.connect(conninfo(database_url), autocommit=True) as conn:
        name = conn.execute("SELECT object_name FROM export_jobs WHERE id = %s", (job["id"],)).fetchone()
        conn.execute("UPDATE export_jobs SET expires_at = now() - interval '1 s' WHERE id = %s", (job["id"],))
    assert name is not None
    assert name[0]
    # Past its time it reads as expired at once, before the sweep.
    assert (await account.get(f"/api/exports/{job['id']}/status")).json()["status"] == "expired"
    assert (await account.get(f"/api/exports/{job['id']}/download")).status_code == 410
    assert await worker.expire_due() >= 1
    _, store = await worker.object_store()
    assert await objects.object_info(store, name[0]) is None
    status = (await account.get(f"/api/exports/{job['id']}/status")).json()
    assert status["status"] == "expired"
    assert status["download_url"] is None
    with psycopg.connect(conninfo(database_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT status, object_name FROM export_jobs WHERE id = %s", (job["id"],)
        ).fetchone()
    assert row == ("expired", None)


async def test_streams_beyond_the_pool_answer_503(cp_settings: ControlPlaneSettings) -> None:
    import msgspec
    from litestar.exceptions import ServiceUnavailableException

    w = ExportWorker(msgspec.structs.replace(cp_settings, exports_max_streams=1))
    await w.start(run_jobs=False)
    try:
        held = await w.stream_connection()
        with pytest.raises(ServiceUnavailableException):
            await w.stream_connection()
        await held.close()
        await (await w.stream_connection()).close()
    finally:
        await w.stop()


async def test_a_stopping_worker_gives_its_job_back(
    big: tuple[Account, str], worker: ExportWorker, cp_app: Any, database_url: str
) -> None:
    """Stopped mid-job (a deploy), a worker puts the job back in the queue, its attempt not counted."""
    account, _ = big
    app_worker: ExportWorker = cp_app.state.exports
    # The app (and its worker's task) runs on the test client's portal loop, in another thread: stop
    # and start it there, never from this loop (a task cancelled or created across loops breaks it).
    portal = account.client.blocking_portal
    await asyncio.to_thread(portal.call, app_worker.stop)  # only the test's worker claims jobs meanwhile
    try:
        queued = await account.post("/api/exports", json={"type": "call_records", "format": "json"})
        job_id = queued.json()["id"]
        run = asyncio.get_running_loop().create_task(worker.run_next())
        deadline = time.monotonic() + 30
        while (await account.get(f"/api/exports/{job_id}/status")).json()["status"] != "running":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # mid-COPY
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        with psycopg.connect(conninfo(database_url), autocommit=True) as conn:
            row = conn.execute(
                "SELECT status, attempts, lease_owner FROM export_jobs WHERE id = %s", (job_id,)
            ).fetchone()
        assert row == ("queued", 0, None)
    finally:
        await asyncio.to_thread(portal.call, app_worker.start)
    job = await wait_done(account, job_id)  # the app's worker takes it up again
    assert job["status"] == "done"
    assert job["attempts"] == 1
    assert job["rows"] == BIG
