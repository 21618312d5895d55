"""The SQLAlchemy async engine/session config used by the Litestar plugin (one transaction per request)."""

from __future__ import annotations

from advanced_alchemy.extensions.litestar import EngineConfig, SQLAlchemyAsyncConfig

from control_plane.settings import ControlPlaneSettings


def sqlalchemy_config(settings: ControlPlaneSettings) -> SQLAlchemyAsyncConfig:
    return SQLAlchemyAsyncConfig(
        connection_string=settings.database_url,
        # Commit when the response is 2xx, roll back otherwise: nothing is ever half-written.
        before_send_handler="autocommit",
        session_dependency_key="db_session",
        create_all=False,
        engine_config=EngineConfig(pool_size=settings.db_pool_size, pool_pre_ping=True),
    )
