"""`vlb simulate` fills the engine URL, domain and key from the demo `vlb run` saved."""

from __future__ import annotations

import json
from pathlib import Path

from launcher.cli import simulate_argv
from launcher.settings import LauncherSettings
from shared.settings import load_settings


def test_simulate_defaults_come_from_the_saved_demo(tmp_path: Path) -> None:
    (tmp_path / "demo.json").write_text(json.dumps({"domain": "demo.cloudonix.net", "webhook_key": "k123"}))
    settings = load_settings(LauncherSettings, env={"VLB_DATA_DIR": str(tmp_path), "VLB_ENGINE_PORT": "8181"})
    argv = simulate_argv(settings, ["--to", "+15551234567"])
    assert argv == [
        "--to", "+15551234567",
        "--url", "http://127.0.0.1:8181",
        "--domain", "demo.cloudonix.net",
        "--key", "k123",
    ]  # fmt: skip


def test_simulate_keeps_what_the_user_gave(tmp_path: Path) -> None:
    settings = load_settings(LauncherSettings, env={"VLB_DATA_DIR": str(tmp_path)})
    argv = simulate_argv(settings, ["--url=http://engine:9", "--domain", "a.example", "--key", "s"])
    assert argv == ["--url=http://engine:9", "--domain", "a.example", "--key", "s"]
