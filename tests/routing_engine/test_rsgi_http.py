"""The engine over granian's RSGI interface, the way production runs it, through real HTTP: every part
of the request the handlers read (method, path, query, headers, body framing, peer address, host) and
every kind of answer they give. The rest of the suite drives the same handlers through ASGI in-process;
this is where the RSGI side of ``routing_engine.app.Exchange`` is held to the same behaviour."""

from __future__ import annotations

import asyncio
import os
import socket
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from nats.js.kv import KeyValue

from tests.routing_engine.harness import (
    TenantConfig,
    demo_tenant,
    granian_engine,
    load_fixture,
    new_session,
    put_snapshot,
)
from tests.routing_engine.test_ingest import cdr_body, session_updates

INBOUND = load_fixture("application-inbound.json")
DIAL_NOANSWER = load_fixture("application-dial-status-noanswer.json")


@pytest.fixture
def rsgi_engine() -> Iterator[str]:
    # No VLB_ENGINE_PUBLIC_URL: action URLs come from the request's host.
    env = {k: v for k, v in os.environ.items() if k != "VLB_ENGINE_PUBLIC_URL"}
    with granian_engine(workers=1, env=env) as url:
        yield url


@pytest.fixture
async def http(rsgi_engine: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=rsgi_engine, timeout=5) as client:
        yield client


async def _serving(http: httpx.AsyncClient, kv: KeyValue, config: TenantConfig) -> None:
    """Publish the tenant and wait until the engine answers for it."""
    await put_snapshot(kv, config.snapshot)
    for _ in range(200):
        status = (await http.get("/status")).json()
        if status["tenants"].get(str(config.tenant_id), {}).get("version") == config.snapshot.version:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the engine did not apply the snapshot")


def _dial(response: httpx.Response) -> ET.Element:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    dial = ET.fromstring(response.content).find("Dial")
    assert dial is not None, response.text
    return dial


async def test_voice_webhooks_in_every_shape(http: httpx.AsyncClient, kv: KeyValue, rsgi_engine: str) -> None:
    config = demo_tenant()
    await _serving(http, kv, config)
    url = f"/api/voice/application/{config.domain}"

    # POST JSON; the action URL is built from the request's own host (no public URL configured).
    session = new_session()
    dial = _dial(await http.post(url, json=dict(INBOUND, Session=session), headers=config.auth))
    action = urlsplit(dial.attrib["action"])
    assert f"{action.scheme}://{action.netloc}" == rsgi_engine
    assert action.path == f"{url}/dial-status"
    assert parse_qs(action.query)["attempt"] == ["1"]
    assert dial.attrib["callerId"] == INBOUND["From"]

    # A replay over another connection: the same answer.
    async with httpx.AsyncClient(base_url=rsgi_engine, timeout=5) as other:
        again = await other.post(url, json=dict(INBOUND, Session=session), headers=config.auth)
    assert again.text == (await http.post(url, json=dict(INBOUND, Session=session), headers=config.auth)).text

    # GET with the fields in the query string, the key in X-CX-APIKey.
    query = {"Session": new_session(), "To": INBOUND["To"], "From": INBOUND["From"], "Direction": "inbound"}
    _dial(await http.get(url, params=query, headers={"X-CX-APIKey": config.key}))

    # POST form.
    form = {k: v for k, v in INBOUND.items() if isinstance(v, str)} | {"Session": new_session()}
    _dial(await http.post(url, data=form, headers=config.auth))

    # dial-status: no answer from attempt 1 moves the call on to attempt 2.
    agent = parse_qs(action.query)["agent"][0]
    status = dict(DIAL_NOANSWER, Session=session, To=INBOUND["To"], From=INBOUND["From"])
    retry = _dial(
        await http.post(f"{url}/dial-status?attempt=1&agent={agent}", json=status, headers=config.auth)
    )
    assert parse_qs(urlsplit(retry.attrib["action"]).query)["attempt"] == ["2"]

    # Broken JSON: the call is known from X-CX-Session, so it still gets a valid CXML answer; without
    # any session it is a plain 400.
    known = await http.post(
        url,
        content=b"{not json",
        headers={**config.auth, "Content-Type": "application/json", "X-CX-Session": new_session()},
    )
    assert known.status_code == 200
    assert ET.fromstring(known.content).tag == "Response"
    unknown = await http.post(
        url, content=b"{not json", headers={**config.auth, "Content-Type": "application/json"}
    )
    assert unknown.status_code == 400


async def test_refusals_and_body_limits(http: httpx.AsyncClient, kv: KeyValue, rsgi_engine: str) -> None:
    config = demo_tenant()
    await _serving(http, kv, config)
    url = f"/api/voice/application/{config.domain}"
    body = dict(INBOUND, Session=new_session())

    assert (await http.post("/api/voice/application/nobody.example", json=body)).status_code == 404
    assert (await http.post(url, json=body)).status_code == 401
    assert (await http.post(url, json=body, headers={"Authorization": "Bearer nope"})).status_code == 401
    put = await http.put(url, json=body, headers=config.auth)
    assert put.status_code == 405
    assert put.headers["allow"] == "GET, POST"
    assert (await http.get("/nowhere")).status_code == 404

    # Over the 1 MB limit, on a raw connection (so the client never races the early answer): a
    # Content-Length past the limit is refused before any body is read; a chunked body is refused as
    # soon as it passes the limit, without waiting for its end.
    host, port = rsgi_engine.removeprefix("http://").split(":")
    head = (
        f"POST {url} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {config.key}\r\n"
        "Content-Type: application/json\r\n"
    )
    declared = await _raw_exchange(host, int(port), head + "Content-Length: 2000000\r\n\r\n", [])
    assert declared.startswith(b"HTTP/1.1 413"), declared[:80]
    piece = b"x" * 65536
    chunk = b"%x\r\n%b\r\n" % (len(piece), piece)
    chunked = await _raw_exchange(host, int(port), head + "Transfer-Encoding: chunked\r\n\r\n", [chunk] * 17)
    assert chunked.startswith(b"HTTP/1.1 413"), chunked[:80]
    # The engine goes on: the next call is answered.
    _dial(await http.post(url, json=dict(INBOUND, Session=new_session()), headers=config.auth))


async def _raw_exchange(host: str, port: int, head: str, body: list[bytes]) -> bytes:
    """Send a request head and body pieces (never finishing a chunked body), then read the answer."""
    return await asyncio.to_thread(_raw_exchange_blocking, host, port, head.encode(), body)


def _raw_exchange_blocking(host: str, port: int, head: bytes, body: list[bytes]) -> bytes:
    # A plain socket, not asyncio streams: when the engine answers early and closes while the body is
    # still being sent, the kernel may reset the connection, and asyncio's reader then raises the reset
    # before handing over the answer it already holds (seen on a loaded machine); recv() returns the
    # queued answer first.
    with socket.create_connection((host, port), timeout=5) as sock:
        try:
            sock.sendall(head)
            for piece in body:
                sock.sendall(piece)
        except OSError:
            pass  # answered and closed before the body's end: the answer is read below
        answer = b""
        while b"\r\n\r\n" not in answer:
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            answer += data
        return answer


async def test_allowed_networks_see_the_peer_address(http: httpx.AsyncClient, kv: KeyValue) -> None:
    blocked = demo_tenant(allowed_networks=["10.0.0.0/8"])
    allowed = demo_tenant(allowed_networks=["127.0.0.0/8"])
    await _serving(http, kv, blocked)
    await _serving(http, kv, allowed)
    for config, expected in ((blocked, 403), (allowed, 200)):
        r = await http.post(
            f"/api/voice/application/{config.domain}",
            json=dict(INBOUND, Session=new_session()),
            headers=config.auth,
        )
        assert r.status_code == expected


async def test_session_updates_cdrs_and_service_endpoints(http: httpx.AsyncClient, kv: KeyValue) -> None:
    config = demo_tenant()
    await _serving(http, kv, config)
    token = new_session()
    _dial(
        await http.post(
            f"/api/voice/application/{config.domain}",
            json=dict(INBOUND, Session=token),
            headers=config.auth,
        )
    )
    for update in session_updates(config, token):
        r = await http.post(f"/api/voice/session/update/{config.domain}", json=update, headers=config.auth)
        assert r.status_code == 204
        assert r.content == b""
    r = await http.post(
        f"/api/voice/session/cdr/{config.domain}", json=cdr_body(config, token), headers=config.auth
    )
    assert r.status_code == 204
    bad = await http.post(
        f"/api/voice/session/cdr/{config.domain}",
        content=b"[]",
        headers={**config.auth, "Content-Type": "application/json"},
    )
    assert bad.status_code == 400

    assert (await http.get("/health")).json() == {"status": "ok"}
    ready = await http.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    metrics = await http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'vlb_engine_requests_total{outcome="routed",path="application"}' in metrics.text
