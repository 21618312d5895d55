"""The dashboard in a real browser: the control plane served over HTTP by granian (as ``make run`` does)
on the run's database, Redis and NATS, and Debian's ``chromium`` driven by Playwright (its own browser
download is not reachable from these machines, so it is pointed at the system one).

Without a browser the tests fail in CI (``CI`` set) and are skipped, saying why, elsewhere;
``make test`` installs the browser when it runs as root or in CI (launcher/testrun.py)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from launcher.planes import CONTROL_PLANE_TARGET, granian_argv
from tests.control_plane.conftest import create_schema
from tests.routing_engine.harness import free_port, granian_engine

ROOT = Path(__file__).resolve().parents[2]
BROWSER_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SCREENSHOTS = Path(os.environ.get("VLB_TEST_OUTPUT", ROOT / ".vlb" / "test-output")) / "screenshots"
VIEWPORT = {"width": 1360, "height": 900}
STEP_TIMEOUT_MS = 10_000
# Assertions wait as long as actions: CI machines are shared and slow at times.
expect.set_options(timeout=STEP_TIMEOUT_MS)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def find_browser() -> str | None:
    """``VLB_CHROMIUM`` when set, else the first system Chromium on PATH."""
    chosen = os.environ.get("VLB_CHROMIUM")
    if chosen:
        return chosen if Path(chosen).is_file() else None
    for name in BROWSER_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def browser_path() -> str:
    path = find_browser()
    if path is None:
        message = (
            "no Chromium for the dashboard tests: install Debian's `chromium` (apt-get install -y chromium; "
            "`make test` does it when run as root or in CI) or set VLB_CHROMIUM"
        )
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


# Module scope: the server (with its snapshot publisher and event consumer on the run's NATS names)
# stops before the next module's tests, which may run their own consumer.
@pytest.fixture(scope="module")
def dashboard_url(database_url: str, service_env: dict[str, str]) -> Iterator[str]:
    """The control plane as ``make run`` starts it (granian, one worker) on a free port."""
    create_schema(database_url)
    port = free_port()
    log_dir = Path(os.environ.get("VLB_TEST_OUTPUT", ROOT / ".vlb" / "test-output"))
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **service_env, "VLB_LOG_LEVEL": "warning"}
    with (log_dir / "dashboard-control-plane.log").open("wb") as log:
        proc = subprocess.Popen(
            granian_argv(CONTROL_PLANE_TARGET, "127.0.0.1", port, workers=1),
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the control plane did not start; see {log_dir}/dashboard-control-plane.log"
                )
            time.sleep(0.1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # granian and its worker only
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def engine_url(service_env: dict[str, str]) -> Iterator[str]:
    """A routing engine as production runs it (granian, RSGI) on the run's NATS names and Redis prefix:
    it loads the snapshots the control plane publishes and its events feed the live page and records."""
    with granian_engine(workers=1, env={**os.environ, **service_env}) as url:
        yield url


@pytest.fixture(scope="module")
async def browser(browser_path: str) -> AsyncIterator[Browser]:
    """One headless Chromium for the module."""
    async with async_playwright() as pw:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox cannot start.
        # --disable-dev-shm-usage: containers often give /dev/shm 64 MB, where Chromium's tabs crash.
        launched = await pw.chromium.launch(
            executable_path=browser_path, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield launched
        finally:
            await launched.close()


async def new_page(browser: Browser, base_url: str, **options: Any) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(base_url=base_url, viewport=VIEWPORT, **options)
    context.set_default_timeout(STEP_TIMEOUT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: errors.append(msg.text) if msg.type == "error" and not expected_noise(msg.text) else None,
    )
    page.js_errors = errors  # type: ignore[attr-defined]
    # Everything the page loads must come from the control plane itself (nothing from the internet).
    foreign: list[str] = []
    origin = base_url.rstrip("/")
    ws_origin = origin.replace("http://", "ws://", 1)
    page.on(
        "request",
        lambda req: None if req.url.startswith((origin, ws_origin, "data:")) else foreign.append(req.url),
    )
    page.foreign_requests = foreign  # type: ignore[attr-defined]
    return context, page


def expected_noise(text: str) -> bool:
    """Console errors the browser logs for answers the app expects: 4xx bodies it shows next to their
    field, and the live feed's WebSocket when a connection drops (the page reconnects)."""
    return text.startswith("Failed to load resource") or "WebSocket" in text


async def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.evaluate("document.getElementById('toasts')?.replaceChildren()")  # notices of earlier steps
    await page.screenshot(path=str(path), full_page=full_page)
    return path
