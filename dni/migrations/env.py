"""Alembic environment: runs revisions against the URL dni configured, online only."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from dni.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url, "dni.db.alembic_config sets sqlalchemy.url"
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
