"""Schemathesis fuzzing of the control plane's API, from the committed OpenAPI document, against the
control plane served as in production (granian, a database of its own migrated by Alembic, the shared
Redis/NATS under this run's names), over HTTP.

Every operation but those that end the session in use (logout, password changes, deleting or editing
a user: one of the tokens' own), ``FUZZ_EXAMPLES`` examples each (``VLB_API_FUZZ_EXAMPLES`` raises it),
each request with the token of one of four users: an admin and a viewer of two tenants. Checks: no
5xx; the status code, content type and body of every answer are the ones the document states
(control_plane/openapi_responses.py); and no answer to one tenant's user holds the other tenant's
marker (a name on every resource each tenant owns).

The schema's limits come from control_plane/params.py and the body schemas; what the fuzzing found is
in docs/architecture.md ("Input bounds and fuzzing").
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.engine import make_url

from launcher.probes import free_port
from loadtests.faults.procs import healthy, wait_until
from tests.conftest import BASE_DATABASE_URL, _admin_conninfo

REPO = Path(__file__).resolve().parents[2]
SCHEMA = schemathesis.openapi.from_path(REPO / "schemas" / "control-plane.openapi.json")
FUZZ_EXAMPLES = int(os.environ.get("VLB_API_FUZZ_EXAMPLES", "20"))
# Operations that would end the session of the token in use, or take its user away.
EXCLUDED = {
    "POST /api/logout",
    "PUT /api/profile/password",
    "PUT /api/user/password",
    "DELETE /api/users/{user_id}",
    "PUT /api/users/{user_id}",
}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# examples run, per operation (printed at the end of the module with -s)
EXAMPLES: dict[str, int] = {}
OPERATIONS = {
    op.label: op for op in (r.ok() for r in SCHEMA.get_all_operations()) if op.label not in EXCLUDED
}


@dataclass
class User:
    tenant: str  # the tenant's marker
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Api:
    url: str
    users: list[User]
    markers: list[str]


def _register(client: httpx.Client, marker: str) -> list[User]:
    password = "correct horse battery"
    admin = client.post(
        "/api/register",
        json={
            "name": f"{marker} admin",
            "email": f"{marker}-admin@example.com",
            "password": password,
            "password_confirmation": password,
            "tenant_name": marker,
        },
    )
    admin.raise_for_status()
    headers = {"Authorization": f"Bearer {admin.json()['token']}"}
    viewer_email = f"{marker}-viewer@example.com"
    client.post(
        "/api/users",
        json={"name": f"{marker} viewer", "email": viewer_email, "password": password, "role": "viewer"},
        headers=headers,
    ).raise_for_status()
    viewer = client.post("/api/login", json={"email": viewer_email, "password": password})
    viewer.raise_for_status()
    # Something of each kind the tenant owns, named with its marker, for the fuzzed ids to find.
    agent = client.post(
        "/api/voice-agents",
        json={"name": f"{marker} agent", "provider": "vapi", "service_value": "+14155550100"},
        headers=headers,
    )
    agent.raise_for_status()
    group = client.post("/api/agent-groups", json={"name": f"{marker} group"}, headers=headers)
    group.raise_for_status()
    client.post(
        f"/api/agent-groups/{group.json()['id']}/members",
        json={"agent_id": agent.json()["id"]},
        headers=headers,
    )
    client.post("/api/trunks", json={"name": f"{marker} trunk", "cloudonix_trunk": "t"}, headers=headers)
    client.post("/api/domains", json={"name": f"{marker}.cloudonix.net".lower()}, headers=headers)
    return [
        User(tenant=marker, role="admin", token=admin.json()["token"]),
        User(tenant=marker, role="viewer", token=viewer.json()["token"]),
    ]


@pytest.fixture(scope="module")
def api(run_id: str, service_env: dict[str, str]) -> Iterator[Api]:
    """The control plane under granian on a free port, on a database of its own, with two tenants."""
    from control_plane.db.migrate import upgrade

    name = f"vlb_test_{run_id}_api_{uuid.uuid4().hex[:6]}"
    admin = _admin_conninfo(BASE_DATABASE_URL)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = make_url(BASE_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(database_url)
    port = free_port()
    suffix = uuid.uuid4().hex[:6]
    env = {
        **os.environ,
        **service_env,
        "VLB_DATABASE_URL": database_url,
        "VLB_REDIS_PREFIX": f"{service_env['VLB_REDIS_PREFIX']}api{suffix}",
        "VLB_CONFIG_BUCKET": f"{service_env['VLB_CONFIG_BUCKET']}-api{suffix}",
        "VLB_EVENTS_STREAM": f"{service_env['VLB_EVENTS_STREAM']}_API{suffix}",
        "VLB_EVENTS_SUBJECT_PREFIX": f"{service_env['VLB_EVENTS_SUBJECT_PREFIX']}api{suffix}",
        "VLB_HEARTBEAT_SUBJECT": f"{service_env['VLB_HEARTBEAT_SUBJECT']}api{suffix}",
        # the fuzzed logins must not lock the real ones out
        "VLB_LOGIN_MAX_ATTEMPTS": "1000000",
    }
    log_path = Path(f"/tmp/vlb-api-fuzz-{run_id}-{suffix}.log")
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "granian", "--interface", "asgi", "--factory"),
                *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
                "control_plane.app:create_app",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: healthy(url) or process.poll() is not None, 60, "the control plane up")
        assert process.poll() is None, log_path.read_text()[-3000:]
        markers = [f"Fuzz{uuid.uuid4().hex[:8]}", f"Fuzz{uuid.uuid4().hex[:8]}"]
        with httpx.Client(base_url=url, timeout=10.0) as client:
            users = _register(client, markers[0]) + _register(client, markers[1])
        yield Api(url=url, users=users, markers=markers)
        print(f"\nAPI fuzzing: {len(EXAMPLES)} operations, {sum(EXAMPLES.values())} examples")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        log_path.unlink(missing_ok=True)


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_operation_never_fails(api: Api, label: str) -> None:
    operation = OPERATIONS[label]

    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        case = data.draw(operation.as_strategy())
        user: User = data.draw(st.sampled_from(api.users))
        response = case.call(base_url=api.url, headers=user.headers)
        EXAMPLES[label] = EXAMPLES.get(label, 0) + 1
        case.validate_response(response, checks=CHECKS)
        other = next(m for m in api.markers if m != user.tenant)
        assert other not in response.text, f"{user.tenant}'s {user.role} read {other}'s data: {label}"

    run()
