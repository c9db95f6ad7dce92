"""Alembic environment: the URL comes from the caller (``orchestrator db upgrade``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from orchestrator.stores.postgres.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")


def run_migrations() -> None:
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(str(url))
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
