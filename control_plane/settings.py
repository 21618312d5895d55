"""Control-plane settings, from ``VLB_*`` environment variables (see shared.settings)."""

from __future__ import annotations

from functools import lru_cache

from shared.settings import CommonSettings, load_settings


class ControlPlaneSettings(CommonSettings, kw_only=True, frozen=True):
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/vlb"
    db_pool_size: int = 10
    # Fernet key (urlsafe base64 of 32 bytes) that encrypts agent credentials at rest.
    secret_key: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    # Failed logins per e-mail and client address (shared/client_address.py) before 429, and the window.
    login_max_attempts: int = 5
    login_window_s: int = 300
    # Largest API request body; a longer one answers 413 before it is read in full.
    api_max_body_bytes: int = 1_048_576
    snapshot_republish_s: int = 30
    # The durable JetStream consumer that writes call events to the database (control_plane.events).
    events_durable: str = "vlb-control-plane"
    events_batch: int = 200
    events_ack_wait_s: float = 30.0
    debug: bool = False


@lru_cache(maxsize=1)
def get_settings() -> ControlPlaneSettings:
    return load_settings(ControlPlaneSettings)
