"""Fernet keys for a local run: generated once into a private file, then reused; the environment wins."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography.fernet import Fernet

from launcher.keys import SECRETS_FILE, load_or_create_keys


def test_keys_are_generated_once_into_a_private_file_and_reused(tmp_path: Path) -> None:
    first = load_or_create_keys(tmp_path, {})
    assert set(first) == {"VLB_SECRET_KEY", "VLB_SNAPSHOT_KEY"}
    assert first["VLB_SECRET_KEY"] != first["VLB_SNAPSHOT_KEY"]
    for key in first.values():
        assert Fernet(key).decrypt(Fernet(key).encrypt(b"x")) == b"x"
    assert stat.S_IMODE((tmp_path / SECRETS_FILE).stat().st_mode) == 0o600
    assert load_or_create_keys(tmp_path, {}) == first


def test_keys_from_the_environment_win_and_are_not_written(tmp_path: Path) -> None:
    mine = Fernet.generate_key().decode()
    keys = load_or_create_keys(tmp_path, {"VLB_SECRET_KEY": mine})
    assert keys["VLB_SECRET_KEY"] == mine
    assert "VLB_SECRET_KEY" not in (tmp_path / SECRETS_FILE).read_text()
    assert load_or_create_keys(tmp_path, {})["VLB_SNAPSHOT_KEY"] == keys["VLB_SNAPSHOT_KEY"]
