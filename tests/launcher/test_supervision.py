"""``vlb run`` supervises both planes: started as a user starts it (real processes on free ports, the
shared services under this run's names, a database of its own), then ``kill -9`` of the control
plane's worker (granian respawns it), of its master (``vlb run`` starts the plane again, the engine
untouched), and of one engine worker while webhooks flow (respawned; every webhook answered), then of
the engine's master (started again). Ctrl-C stops everything it started. Plus the back-off alone, on a
process that keeps failing."""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from launcher.process import ChildProcess, spawn
from launcher.supervise import FIRST_BACKOFF_S, Plane, Supervisor
from loadtests.faults.procs import (
    CONTROL_PLANE_TARGET,
    ENGINE_TARGET,
    VlbRun,
    alive,
    healthy,
    vlb_run,
    wait_until,
)
from routing_engine.simulate import inbound_payload
from tests.conftest import BASE_DATABASE_URL, _admin_conninfo


@pytest.fixture
def run_env(run_id: str, service_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The services of the test run under names of this test's own (a fresh database; bucket, stream
    and Redis prefix that carry the run id, so the run's clean-up removes them)."""
    name = f"vlb_test_{run_id}_sup_{uuid.uuid4().hex[:6]}"
    admin = _admin_conninfo(BASE_DATABASE_URL)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    suffix = uuid.uuid4().hex[:6]
    env = {
        **os.environ,
        **service_env,
        "VLB_DATABASE_URL": make_url(BASE_DATABASE_URL)
        .set(database=name)
        .render_as_string(hide_password=False),
        "VLB_REDIS_PREFIX": f"{service_env['VLB_REDIS_PREFIX']}sup{suffix}",
        "VLB_CONFIG_BUCKET": f"{service_env['VLB_CONFIG_BUCKET']}-sup{suffix}",
        "VLB_EVENTS_STREAM": f"{service_env['VLB_EVENTS_STREAM']}_SUP{suffix}",
        "VLB_EVENTS_SUBJECT_PREFIX": f"{service_env['VLB_EVENTS_SUBJECT_PREFIX']}sup{suffix}",
        "VLB_HEARTBEAT_SUBJECT": f"{service_env['VLB_HEARTBEAT_SUBJECT']}sup{suffix}",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    yield env
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class WebhookLoad:
    """Voice-application webhooks to the engine from a thread, a new connection each (as the Cloudonix
    side may use any of its connections); a connection refused or reset is retried once, as Cloudonix
    retries a webhook, and counted."""

    def __init__(self, run: VlbRun) -> None:
        demo = run.demo()
        self.url = f"{run.engine_url}/api/voice/application/{demo['domain']}"
        self.domain = demo["domain"]
        self.headers = {"Authorization": f"Bearer {demo['webhook_key']}"}
        self.sent = self.answered = self.retried = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _one(self) -> httpx.Response:
        session = uuid.uuid4().hex
        body = inbound_payload(session, self.domain, "+12125550199", "+14155550100", "inbound")
        with httpx.Client(timeout=5.0) as client:
            return client.post(self.url, json=body, headers=self.headers)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sent += 1
            try:
                try:
                    response = self._one()
                except httpx.TransportError:
                    self.retried += 1
                    response = self._one()
            except httpx.HTTPError as exc:
                self.failures.append(type(exc).__name__)
                continue
            if response.status_code == 200 and "<Response" in response.text:
                self.answered += 1
            else:
                self.failures.append(f"{response.status_code}: {response.text[:80]}")
            time.sleep(0.01)

    def __enter__(self) -> WebhookLoad:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_vlb_run_brings_each_plane_back_and_never_stops_the_engine(
    tmp_path: Path, run_env: dict[str, str]
) -> None:
    with vlb_run(tmp_path / "data", run_env) as run:
        engine_master = run.master(ENGINE_TARGET)
        cp_master = run.master(CONTROL_PLANE_TARGET)
        assert engine_master is not None
        assert cp_master is not None
        wait_until(lambda: len(run.workers(ENGINE_TARGET)) == 2, 30, "two engine workers")
        engine_workers = run.workers(ENGINE_TARGET)

        with WebhookLoad(run) as load:
            # 1. The control plane's worker: granian respawns it under the same master.
            (cp_worker,) = run.workers(CONTROL_PLANE_TARGET)
            os.kill(cp_worker, signal.SIGKILL)
            wait_until(
                lambda: (
                    [w for w in run.workers(CONTROL_PLANE_TARGET) if w != cp_worker]
                    and healthy(run.control_plane_url)
                ),
                60,
                "the control plane's worker respawned and healthy",
            )
            assert run.master(CONTROL_PLANE_TARGET) == cp_master

            # 2. The control plane's master: vlb run starts the plane again; the engine is untouched.
            os.kill(cp_master, signal.SIGKILL)
            wait_until(lambda: run.log_events("plane.restarted"), 30, "vlb run restarted the control plane")
            wait_until(
                lambda: (
                    run.master(CONTROL_PLANE_TARGET) not in (None, cp_master)
                    and healthy(run.control_plane_url)
                ),
                90,
                "the control plane back and healthy",
            )
            assert not alive(cp_worker)
            assert run.master(ENGINE_TARGET) == engine_master
            assert run.workers(ENGINE_TARGET) == engine_workers

            # 3. One engine worker: granian respawns it; the other answered meanwhile.
            answered_before = load.answered
            os.kill(engine_workers[0], signal.SIGKILL)
            wait_until(
                lambda: (
                    len(run.workers(ENGINE_TARGET)) == 2
                    and engine_workers[0] not in run.workers(ENGINE_TARGET)
                ),
                60,
                "the engine worker respawned",
            )
            time.sleep(2.0)  # webhooks to both workers again
            assert load.answered > answered_before

        assert run.master(ENGINE_TARGET) == engine_master
        assert load.failures == [], load.failures
        assert load.answered == load.sent > 50
        exited = run.log_events("plane.exited")
        assert [e["name"] for e in exited] == ["control-plane"], exited
        restarted = run.log_events("plane.restarted")
        assert [e["name"] for e in restarted] == ["control-plane"]
        print(f"webhooks sent {load.sent}, answered {load.answered}, retried once {load.retried}")

        # 4. The engine's master: vlb run starts the engine again (the control plane untouched).
        cp_master = run.master(CONTROL_PLANE_TARGET)
        os.kill(engine_master, signal.SIGKILL)
        wait_until(
            lambda: (
                run.master(ENGINE_TARGET) not in (None, engine_master)
                and len(run.workers(ENGINE_TARGET)) == 2
                and healthy(run.engine_url)
            ),
            90,
            "the engine back with two workers",
        )
        assert not any(alive(w) for w in engine_workers[1:])  # the orphaned worker was cleared
        assert run.master(CONTROL_PLANE_TARGET) == cp_master
        assert [e["name"] for e in run.log_events("plane.restarted")] == ["control-plane", "engine"]
        wait_until(lambda: len(run.log_events("plane.ready")) == 2, 10, "both restarts logged ready")

        planes = [p for p in (run.master(CONTROL_PLANE_TARGET), run.master(ENGINE_TARGET)) if p is not None]
        workers = run.workers(CONTROL_PLANE_TARGET) + run.workers(ENGINE_TARGET)
        run.process.send_signal(signal.SIGINT)
        assert run.process.wait(timeout=60) == 0
    # Ctrl-C stopped every process it started.
    for pid in planes + workers:
        wait_until(lambda pid=pid: not alive(pid), 10, f"pid {pid} gone")


def test_a_plane_that_keeps_failing_is_restarted_with_growing_back_off(tmp_path: Path) -> None:
    starts: list[float] = []

    def spawn_failing() -> ChildProcess:
        starts.append(time.monotonic())
        return spawn("failing", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "failing.log")

    plane = Plane("failing", spawn=spawn_failing, healthy=lambda: False, child=spawn_failing())
    supervisor = Supervisor([plane])
    supervisor.run(until=lambda: plane.restarts >= 3)
    assert plane.child.process.wait(timeout=10) == 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # 1 s, 2 s, 4 s (give or take a tick and the start of the interpreter)
    for gap, backoff in zip(gaps, (FIRST_BACKOFF_S, 2 * FIRST_BACKOFF_S, 4 * FIRST_BACKOFF_S), strict=True):
        assert backoff <= gap < backoff + 1.0, gaps
    assert plane.backoff_s == 8 * FIRST_BACKOFF_S
