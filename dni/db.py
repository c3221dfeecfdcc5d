"""Database engines and schema upgrades: SQLite by default, PostgreSQL through a URL.

`make_engine` tunes SQLite for many processes writing at once and makes PostgreSQL fail fast
when the server is down (a short connect timeout and pool wait, stale connections dropped by a
pre-ping); `upgrade_database` runs Alembic;
`prepare_database` upgrades an embedded SQLite file but only checks a shared server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Engine,
    Table,
    bindparam,
    create_engine,
    event,
    make_url,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from dni.errors import ConfigError

MIGRATIONS = Path(__file__).parent / "migrations"
CONNECT_TIMEOUT = 2  # seconds: psycopg's connect_timeout for PostgreSQL
POOL_TIMEOUT = 2.0  # seconds a request waits for a free pooled connection


def normalise_url(url: str) -> str:
    """Let `postgresql://` and `postgres://` URLs use psycopg 3, the driver dni ships with."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _make_folder(sqlite_url: str) -> None:
    """Create the folder a SQLite file is to be created in."""
    path = sqlite_url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and foreign keys."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        _make_folder(url)
        engine = create_engine(url, connect_args={"timeout": 10})

        @event.listens_for(engine, "connect")
        def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # A dead server must answer a fast 503, not hold requests: connecting gives up after
    # CONNECT_TIMEOUT, a request waits POOL_TIMEOUT at most for a pooled connection, and the
    # pre-ping drops the connections a restart killed instead of failing once on each.
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_timeout=POOL_TIMEOUT,
        connect_args={"connect_timeout": CONNECT_TIMEOUT},
    )


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that mark the days of the calls they write for counting again, and plan the
    calls' postbacks when they commit."""
    from dni import callcounts, outbox  # the models import nothing of this module's

    sessions = sessionmaker(engine, expire_on_commit=False)
    callcounts.watch(sessions)
    outbox.watch(sessions)
    return sessions


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return config


def upgrade_database(url: str, revision: str = "head") -> None:
    """Bring the schema at `url` up to `revision` (creating it on an empty database)."""
    command.upgrade(alembic_config(url), revision)


def prepare_database(url: str) -> None:
    """Make the schema at `url` usable: an embedded SQLite file is upgraded in place; a shared
    server (PostgreSQL) is only checked, because upgrading it is the operator's step
    (`dni db upgrade`, before the new release starts)."""
    if make_url(normalise_url(url)).get_backend_name() == "sqlite":
        _make_folder(normalise_url(url))
        upgrade_database(url)
        return
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()
    if current != head:
        raise ConfigError(
            f"the database is at schema revision {current or 'none'}, this dni needs {head}: "
            "run `dni db upgrade`"
        )


def downgrade_database(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def update_calls(
    session: Session,
    rows: Sequence[Mapping[str, Any]],
    where: ColumnElement[bool] | None = None,
) -> int:
    """UPDATE calls SET … WHERE id = :id [AND where] for rows that all name the same columns, as
    one executemany (the ORM's bulk update costs twice as much per row); how many it changed."""
    if not rows:
        return 0
    from dni import outbox
    from dni.callcounts import mark_calls
    from dni.models import Call  # the models import nothing of this module's

    table = cast(Table, Call.__table__)
    names = [name for name in rows[0] if name != "id"]
    statement = (
        update(table)
        .where(table.c.id == bindparam("_id"))
        .values({name: bindparam(name) for name in names})
    )
    if where is not None:
        statement = statement.where(where)
    result = session.execute(statement, [{**row, "_id": row["id"]} for row in rows])
    mark_calls(session, [row["id"] for row in rows])
    outbox.mark(session, [row["id"] for row in rows])
    return cast(CursorResult[Any], result).rowcount
