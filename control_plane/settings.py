"""Control-plane settings, from ``VLB_*`` environment variables (see shared.settings)."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from msgspec import Meta

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
    # Messages (up to 64 events each) fetched at once: a bigger fetch folds more of a call's events in
    # one transaction while a backlog drains (docs/performance.md "The events consumer at size").
    events_batch: int = 500
    events_ack_wait_s: float = 30.0
    # The longest range an analytics report may cover (GET /api/analytics/*), in days.
    analytics_max_range_days: int = 366

    # The live feed (WS /api/live, control_plane.live): seconds between stats messages, frames a
    # client may have queued before it is dropped (1013), seconds to send the token as a first
    # message, seconds a tenant's agent ids are cached for its stats.
    live_stats_interval_s: float = 2.0
    live_client_queue: int = 1000
    live_auth_timeout_s: float = 5.0
    live_agents_cache_s: float = 5.0

    # Exports (control_plane/exports): the JetStream object store that holds the asynchronous exports'
    # gzip files (every replica serves the download), how long a file is kept, the job lease (a job
    # whose control plane stops renewing it is run again by another), and how many streaming exports
    # one process serves at once (each holds one database connection of its own pool).
    exports_bucket: str = "vlb-exports"
    exports_ttl_s: int = 86_400
    exports_lease_s: float = 30.0
    exports_poll_s: float = 2.0
    exports_max_attempts: int = 3
    exports_gzip_level: int = 6
    exports_max_streams: int = 4

    # Retention (control_plane/retention): every replica runs the daily purge scheduler and one run
    # wins per day. The hour (UTC) the day's purge is due, rows deleted per transaction, how often a
    # replica checks whether the day's purge is done (a missed day runs at the first check after
    # start), the lock wait after which a batch gives up and is retried, and a pause between batches.
    purge_enabled: bool = True
    purge_hour_utc: Annotated[int, Meta(ge=0, le=23)] = 3
    purge_batch: Annotated[int, Meta(ge=1, le=50_000)] = 2000
    purge_check_s: float = 300.0
    purge_first_check_s: float = 30.0
    purge_lock_timeout_ms: int = 2000
    purge_pause_s: float = 0.0
    debug: bool = False


@lru_cache(maxsize=1)
def get_settings() -> ControlPlaneSettings:
    return load_settings(ControlPlaneSettings)
