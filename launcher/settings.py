"""Launcher settings: the service URLs to use or replace, where local data lives, and where the planes
listen, all from ``VLB_*`` variables (see shared.settings)."""

from __future__ import annotations

from pathlib import Path

from shared.settings import CommonSettings, load_settings


class LauncherSettings(CommonSettings, kw_only=True, frozen=True):
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/vlb"
    secret_key: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    engine_host: str = "127.0.0.1"
    engine_port: int = 8080
    engine_workers: int = 2

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()


def get_launcher_settings(env: dict[str, str] | None = None) -> LauncherSettings:
    return load_settings(LauncherSettings, env=env)
