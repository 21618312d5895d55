"""The two planes as granian processes: the control plane (Litestar) and the routing engine (bare ASGI,
uvloop, several workers). Their settings reach them as ``VLB_*`` variables."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Mapping

import httpx

from launcher.process import ChildProcess, spawn
from launcher.services import ServiceUrls
from launcher.settings import LauncherSettings

CONTROL_PLANE_TARGET = "control_plane.app:create_app"
ENGINE_TARGET = "routing_engine.app:create_app"
READY_TIMEOUT_S = 60.0
# granian starts a worker again when one exits unexpectedly (a crash, an OOM kill, kill -9) instead of
# shutting the whole server down; the other workers serve meanwhile.
RESPAWN_INTERVAL_S = 1.0


def granian_argv(
    target: str, host: str, port: int, workers: int, loop: str = "auto", interface: str = "asgi"
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "granian",
        "--interface",
        interface,
        "--factory",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        loop,
        "--respawn-failed-workers",
        "--respawn-interval",
        str(RESPAWN_INTERVAL_S),
        target,
    ]


def control_plane_argv(settings: LauncherSettings) -> list[str]:
    return granian_argv(CONTROL_PLANE_TARGET, settings.host, settings.port, workers=1)


def engine_argv(settings: LauncherSettings) -> list[str]:
    return granian_argv(
        ENGINE_TARGET,
        settings.engine_host,
        settings.engine_port,
        settings.engine_workers,
        loop="uvloop",
        interface="rsgi",  # granian's own interface: the engine's fastest (routing_engine/app.py)
    )


def engine_available() -> bool:
    """The routing engine's module exists (it is written alongside the launcher)."""
    return importlib.util.find_spec("routing_engine.app") is not None


def base_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # a wildcard bind is reached via loopback
    return f"http://{shown}:{port}"


def plane_env(
    settings: LauncherSettings, urls: ServiceUrls, keys: Mapping[str, str], base: Mapping[str, str]
) -> dict[str, str]:
    """The environment both planes run with: ours, plus the URLs actually in use and the keys."""
    env = dict(base)
    env.update(urls.as_env())
    env.update(keys)
    env["VLB_DATA_DIR"] = str(settings.data_path)
    env.setdefault("VLB_ENGINE_PUBLIC_URL", base_url(settings.engine_host, settings.engine_port))
    return env


def _health(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def spawn_control_plane(settings: LauncherSettings, env: Mapping[str, str]) -> ChildProcess:
    return spawn(
        "control-plane",
        control_plane_argv(settings),
        settings.data_path / "logs" / "control-plane.log",
        env=env,
    )


def control_plane_healthy(settings: LauncherSettings) -> bool:
    return _health(base_url(settings.host, settings.port))


def start_control_plane(settings: LauncherSettings, env: Mapping[str, str]) -> ChildProcess:
    child = spawn_control_plane(settings, env)
    child.wait_ready(lambda: control_plane_healthy(settings), READY_TIMEOUT_S)
    return child


def engine_env(settings: LauncherSettings, env: Mapping[str, str]) -> dict[str, str]:
    """Each granian worker is a process; prometheus-client merges their metrics through a folder that
    must start empty. A folder chosen by the deployment (``PROMETHEUS_MULTIPROC_DIR``) is left alone."""
    if env.get("PROMETHEUS_MULTIPROC_DIR"):
        return dict(env)
    metrics_dir = settings.data_path / "prometheus-engine"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    return {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}


def spawn_engine(settings: LauncherSettings, env: Mapping[str, str]) -> ChildProcess:
    return spawn(
        "engine",
        engine_argv(settings),
        settings.data_path / "logs" / "engine.log",
        env=engine_env(settings, env),
    )


def engine_healthy(settings: LauncherSettings) -> bool:
    return _health(base_url(settings.engine_host, settings.engine_port))


def start_engine(settings: LauncherSettings, env: Mapping[str, str]) -> ChildProcess:
    child = spawn_engine(settings, env)
    child.wait_ready(lambda: engine_healthy(settings), READY_TIMEOUT_S)
    return child


def exec_granian(argv: list[str], env: Mapping[str, str]) -> None:
    """Replace this process with granian (``vlb control-plane`` / ``vlb engine``): signals go to it."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, dict(env))  # noqa: S606 - argv is fixed by the launcher
