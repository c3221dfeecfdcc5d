"""Fixtures on real parts: a redis-server per test session, SQLite or PostgreSQL, a fake clock.

Set DNI_TEST_DATABASE_URL to run everything on PostgreSQL (CI does).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import Connection, Engine, delete, event
from sqlalchemy.orm import Session, sessionmaker

from dni import create_app
from dni.bench.receiver import Receiver
from dni.db import make_engine, make_sessionmaker, upgrade_database
from dni.models import Base
from dni.web.runtime import Runtime
from tests.factories import DESKTOP_UA, load_toml, shop_toml
from tests.servers import RedisServer


class Clock:
    """The only stand-in the tests use: time that moves when told to."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 2, 4, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(autouse=True)
def dispose_engines() -> Iterator[None]:
    """Dispose every engine a test connected (its own or an app's) when it ends: on PostgreSQL,
    pooled connections left to the garbage collector raise ResourceWarning, an error here."""
    connected: set[Engine] = set()

    def remember(connection: Connection) -> None:
        connected.add(connection.engine)

    event.listen(Engine, "engine_connect", remember)
    yield
    event.remove(Engine, "engine_connect", remember)
    for engine in connected:
        engine.dispose()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if redis_server.process is None:  # a test stopped it
        redis_server.start()
    Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("DNI_TEST_DATABASE_URL") or (
        f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
    )
    upgrade_database(url)
    return url


def emptied_sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on a database emptied of every row (the schema stays), disposed afterwards."""
    engine = make_engine(database_url)
    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(delete(table))
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    yield from emptied_sessions(database_url)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(
    redis_url: str, sessions: sessionmaker[Session], database_url: str, clock: Clock, tmp_path: Path
) -> Iterator[Flask]:
    overrides: dict[str, Any] = {
        "redis_url": redis_url,
        "database_url": database_url,
        "instance_path": tmp_path,
        "flush_seconds": 0,
        "config_cache_seconds": 0,
        "clock": clock,
    }
    yield create_app(overrides)


@pytest.fixture
def rt(app: Flask) -> Runtime:
    runtime: Runtime = app.extensions["dni"]
    return runtime


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = DESKTOP_UA
    return client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A local HTTP server standing in for an ad platform or CRM: it records what it is sent."""
    with Receiver() as server:
        yield server


@pytest.fixture
def shop(sessions: sessionmaker[Session]) -> None:
    load_toml(sessions, shop_toml())
