"""Support for the benchmarks and the tests: throwaway stores (a private redis-server and a
SQLite file in a temporary folder, or the given URLs, with one sites file loaded; all removed
afterwards); a private PostgreSQL server, for the benchmarks about PostgreSQL and for the test
suite (`python -m dni.bench.stores COMMAND…` runs a command with DNI_TEST_DATABASE_URL naming
one); and GeoIP databases placing networks in the provinces a test asks for.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from dni.bench.pgserver import PostgresServer
from dni.db import make_engine, make_sessionmaker, upgrade_database
from dni.sitefile import load_sites, parse_sites
from dni.store import PrivateRedis


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


@contextmanager
def private_postgres() -> Iterator[str]:
    """A PostgreSQL server of Debian's `postgresql` package on a Unix socket in a temporary
    folder, with durability off (benchmarks only); yields its URL, removed afterwards."""
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="dni-pg-")))
    try:
        server.create()
        yield server.url
    finally:
        server.remove()


def write_geoip(path: Path, networks: Mapping[str, Mapping[str, str]]) -> Path:
    """Write a MaxMind-format city database placing each network ("36.1.0.0/16") in a province
    named by language ({"zh-CN": "广东"}): for tests and benchmarks, which install mmdb-writer
    (`dni[test]`)."""
    from mmdb_writer import MMDBWriter
    from netaddr import IPSet

    writer = MMDBWriter(database_type="GeoIP2-City", languages=["zh-CN", "en"])
    for network, names in networks.items():
        writer.insert_network(IPSet([network]), {"subdivisions": [{"names": dict(names)}]})
    writer.to_db_file(str(path))
    return path


if __name__ == "__main__":
    import sys

    with private_postgres() as url:
        env = os.environ | {"DNI_TEST_DATABASE_URL": url}
        sys.exit(subprocess.run(sys.argv[1:], env=env, check=False).returncode)
