"""Database layer: declarative base, models, session config and Alembic migrations."""
