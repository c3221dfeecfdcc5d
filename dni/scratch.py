"""Throwaway stores for the benchmarks: a private redis-server and a SQLite file in a temporary
folder (or the given URLs), with one sites file loaded; all removed afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from dni.db import make_engine, make_sessionmaker, upgrade_database
from dni.redisdb import PrivateRedis
from dni.sitefile import load_sites, parse_sites


@dataclass(frozen=True)
class Scratch:
    folder: Path
    redis_url: str
    database_url: str
    sessions: sessionmaker[Session]
    redis: PrivateRedis | None  # None when an existing Redis was given


@contextmanager
def scratch_stores(
    sites: str, now: datetime, redis_url: str = "", database_url: str = ""
) -> Iterator[Scratch]:
    folder = Path(tempfile.mkdtemp(prefix="dni-bench-"))
    redis = None
    if not redis_url:
        redis = PrivateRedis(folder, folder / "redis.sock")
        redis.start()
        redis_url = f"unix://{folder / 'redis.sock'}"
    database_url = database_url or f"sqlite:///{folder / 'bench.sqlite3'}"
    engine = make_engine(database_url)
    try:
        upgrade_database(database_url)
        sessions = make_sessionmaker(engine)
        with sessions.begin() as session:
            load_sites(session, parse_sites(sites), now)
        yield Scratch(folder, redis_url, database_url, sessions, redis)
    finally:
        engine.dispose()
        if redis is not None:
            redis.stop()
        shutil.rmtree(folder, ignore_errors=True)
