"""Alembic revisions: down to nothing and up to head on the test database, matching the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from dni.db import downgrade_database, make_engine, upgrade_database
from dni.models import Base


def test_upgrade_from_empty_to_head_matches_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    downgrade_database(database_url, "base")
    with engine.connect() as connection:
        assert set(inspect(connection).get_table_names()) <= {"alembic_version"}
    upgrade_database(database_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert context.get_current_revision() is not None
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()
