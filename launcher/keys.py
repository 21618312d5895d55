"""The two Fernet keys a local run needs (``VLB_SECRET_KEY``, ``VLB_SNAPSHOT_KEY``): taken from the
environment when set, otherwise generated once and kept in ``<data_dir>/secrets.env`` (mode 600) so
data encrypted by one run can be read by the next."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import structlog
from cryptography.fernet import Fernet

from shared.settings import read_dotenv

log = structlog.get_logger("launcher.keys")

KEY_NAMES = ("VLB_SECRET_KEY", "VLB_SNAPSHOT_KEY")
SECRETS_FILE = "secrets.env"


def load_or_create_keys(data_dir: Path, env: Mapping[str, str]) -> dict[str, str]:
    path = data_dir / SECRETS_FILE
    stored = read_dotenv(path)
    keys: dict[str, str] = {}
    missing: list[str] = []
    for name in KEY_NAMES:
        value = env.get(name) or stored.get(name)
        if value:
            keys[name] = value
        else:
            missing.append(name)
    if missing:
        for name in missing:
            keys[name] = stored[name] = Fernet.generate_key().decode()
        _write_private(path, "".join(f"{name}={value}\n" for name, value in sorted(stored.items())))
        log.info("keys.generated", names=missing, path=str(path))
    return keys


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)  # an older file may have been created with wider permissions
