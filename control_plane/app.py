"""create_app(): plugins, routes and lifespan; nothing else."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin

from control_plane.auth.context import provide_auth
from control_plane.dashboard.routes import asset_router, dashboard_index
from control_plane.db.session import sqlalchemy_config
from control_plane.errors import EXCEPTION_HANDLERS
from control_plane.events.consumer import events_lifespan
from control_plane.exports.worker import exports_lifespan
from control_plane.live.controllers import live_lifespan
from control_plane.openapi_responses import document_responses
from control_plane.ops import (
    HealthController,
    MetricsController,
    prometheus_config,
    request_context_middleware,
)
from control_plane.retention.scheduler import retention_lifespan
from control_plane.routes import ROUTE_HANDLERS
from control_plane.settings import ControlPlaneSettings, get_settings
from control_plane.snapshots.publisher import snapshot_lifespan
from shared.client_address import TrustedProxies
from shared.logging import configure_logging
from shared.metrics_files import forget_dead_workers
from shared.redis_client import redis_from_settings


def create_app(settings: ControlPlaneSettings | None = None) -> Litestar:
    settings = settings or get_settings()
    configure_logging(settings.log_format, settings.log_level)
    proxies = TrustedProxies.from_setting(settings.trusted_proxies)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # A single Redis or a Redis Cluster (VLB_REDIS_CLUSTER_NODES): shared/redis_client.py.
        app.state.redis = redis_from_settings(settings)
        app.state.settings = settings
        forget_dead_workers()  # a respawned worker: its predecessor's live gauges stop counting
        app.state.proxies = proxies
        try:
            yield
        finally:
            await app.state.redis.aclose()

    @asynccontextmanager
    async def freeze_startup_objects(app: Litestar) -> AsyncIterator[None]:
        """Last of the lifespans: what start-up built (modules, the app, mappers, connections) moves
        to the permanent generation, so a full collection scans only what requests create. Without it
        a gen-2 collection held the event loop for ~250 ms on a busy machine, every live-feed frame
        (and every request) waiting behind it (docs/performance.md, "Live feed")."""
        gc.collect()
        gc.freeze()
        yield

    app = Litestar(
        route_handlers=[
            HealthController,
            MetricsController,
            *ROUTE_HANDLERS,
            dashboard_index,
            asset_router(),
        ],
        dependencies={"auth": Provide(provide_auth)},
        plugins=[SQLAlchemyPlugin(config=sqlalchemy_config(settings))],
        middleware=[prometheus_config.middleware, request_context_middleware],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=[
            lifespan,
            snapshot_lifespan(settings),
            events_lifespan(settings),
            exports_lifespan(settings),
            live_lifespan(settings),
            retention_lifespan(settings),
            freeze_startup_objects,
        ],
        cors_config=CORSConfig(allow_origins=["*"], allow_headers=["Authorization", "Content-Type"]),
        openapi_config=OpenAPIConfig(
            title="Voice Agent Load Balancer — control plane",
            version="0.1.0",
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
        ),
        request_max_body_size=settings.api_max_body_bytes,
        debug=settings.debug,
    )
    # The document states every answer (errors, security, limits): built once here, served as is.
    document_responses(app.openapi_schema)
    return app
