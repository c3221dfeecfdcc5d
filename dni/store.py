"""Redis for dni: the connections, the private `redis-server`, the Lua scripts, the name of
every key, and the one place a `RedisError` becomes `Unavailable`.

Every key of a site — its visits, its queues and its pools — shares the hash tag `{site:ID}`
(DESIGN §3), so a visit is one script call on one Redis Cluster slot. Keys are named here and
nowhere else. Clients fail fast: no retries and short timeouts, so that a visit answers 503
within about 100 ms when Redis is down instead of holding the shop's page.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from redis import Redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError
from redis.retry import Retry
from sqlalchemy.orm import Session, sessionmaker

from dni.config import Settings
from dni.errors import Unavailable

RedisClient = Redis | RedisCluster
LUA = Path(__file__).parent / "lua"
INSTALL_HINT = (
    "redis-server is not installed: install it (Debian/Ubuntu: `sudo apt-get install "
    "redis-server`, macOS: `brew install redis`) or set DNI_REDIS_URL to a running Redis"
)
Call = tuple[str, list[str], list[Any]]  # script name, KEYS, ARGV
T = TypeVar("T")

# Keys of no site. Locks and the watermark are shared by every worker of an install.
FLUSH_LOCK = "dni:flush:lock"
ATTRIBUTE_LOCK = "dni:attribute:lock"
# A sorted set of one member whose score is the flush watermark in ms (see dni.history).
WATERMARK = "dni:flush:watermark"
# Rows the database refused: field "<key> <field>" -> JSON {key, field, value, error, at}.
QUARANTINE = "dni:quarantine"
QUARANTINE_DISCARDED = "dni:quarantine:discarded"  # refused rows not kept: it was full


def auth_failures_key(network: str) -> str:
    """Failed API key checks from one network in the current window."""
    return f"dni:authfail:{network}"


# A pool's keys, in the order lease.lua and sync.lua take them as KEYS.
POOL_KEY_NAMES = (
    "meta",
    "free",
    "busy",
    "holders",
    "visitors",
    "seen",
    "stats",
    "visits",
    "starts",
    "probation",
)


@dataclass(frozen=True)
class PoolKeys:
    """The keys of one pool, under its site's hash tag (see lease.lua for what each holds)."""

    site_id: int
    pool_id: int

    def _key(self, name: str) -> str:
        return f"{SiteKeys(self.site_id).prefix}pool:{self.pool_id}:{name}"

    @property
    def meta(self) -> str:
        return self._key("meta")

    @property
    def seen(self) -> str:
        return self._key("seen")

    @property
    def stats(self) -> str:
        return self._key("stats")

    @property
    def busy(self) -> str:
        return self._key("busy")

    @property
    def starts(self) -> str:
        return self._key("starts")

    @property
    def sync_lock(self) -> str:
        """Held by the one caller rebuilding the pool."""
        return self._key("sync-lock")

    def queues(self) -> dict[str, str]:
        """The pool's queues waiting for the flush, by name."""
        return {"starts": self.starts, "seen": self.seen}

    def script_keys(self) -> list[str]:
        return [self._key(name) for name in POOL_KEY_NAMES]


def legacy_pool_keys(pool_id: int) -> list[str]:
    """A pool's keys as dni 0.1 named them, under `{pool:ID}` (read once, on upgrade)."""
    return [f"dni:{{pool:{pool_id}}}:{name}" for name in POOL_KEY_NAMES]


@dataclass(frozen=True)
class SiteKeys:
    """The keys of one site's visits and queues; visit.lua builds the per-visit ones."""

    site_id: int

    @property
    def prefix(self) -> str:
        """The common prefix and Cluster hash tag of every key of the site."""
        return f"dni:{{site:{self.site_id}}}:"

    @property
    def rows(self) -> str:
        """New visit rows waiting for SQL: visit id -> JSON row."""
        return self.prefix + "rows"

    @property
    def events(self) -> str:
        """Signals waiting for SQL: event id -> JSON event."""
        return self.prefix + "events"

    @property
    def seen(self) -> str:
        """Visit heartbeats waiting for SQL: visit id -> JSON {t, p, u}."""
        return self.prefix + "seen"

    def queues(self) -> dict[str, str]:
        """The site's queues waiting for the flush, by name."""
        return {"rows": self.rows, "events": self.events, "seen": self.seen}


def to_ms(moment: datetime) -> int:
    """A moment as Redis holds it: milliseconds since the epoch."""
    return int(moment.timestamp() * 1000)


def as_text(value: Any) -> str:
    """A Redis reply value as str, whether the client decodes replies or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


@contextmanager
def unavailable_on_error() -> Iterator[None]:
    """Turn any Redis failure into the 503 the API answers with."""
    try:
        yield
    except RedisError as exc:
        raise Unavailable("the number pool store is unavailable") from exc


def _lua(name: str) -> str:
    return (LUA / f"{name}.lua").read_text()


class Scripts:
    """The Lua scripts, loaded once per client and reloaded if Redis forgets them.

    "visit" carries lease.lua as a function, so starting a visit and leasing its numbers is
    one atomic call.
    """

    def __init__(self) -> None:
        lease = f"local function lease_slot(KEYS, ARGV)\n{_lua('lease')}\nend\n"
        self.source = {"visit": lease + _lua("visit"), "sync": _lua("sync"), "drain": _lua("drain")}
        self.sha: dict[str, str] = {}

    def load(self, client: RedisClient) -> None:
        # Swapped in whole: other threads may be reading self.sha meanwhile.
        self.sha = {name: str(client.script_load(text)) for name, text in self.source.items()}

    def run(self, client: RedisClient, calls: Sequence[Call]) -> list[Any]:
        """Run several scripts in one round trip (one call goes without a pipeline: measured
        here, a pipeline of one costs 30-60 µs more)."""
        if len(calls) == 1:
            name, keys, args = calls[0]

            def evalsha() -> Any:
                return client.execute_command("EVALSHA", self.sha[name], len(keys), *keys, *args)

            return [self._loaded(client, evalsha)]
        return self.execute(client, lambda pipe: self.add(pipe, calls))

    def add(self, pipe: Any, calls: Sequence[Call]) -> None:
        for name, keys, args in calls:
            # execute_command: cluster pipelines refuse pipe.evalsha() but route this by key.
            pipe.execute_command("EVALSHA", self.sha[name], len(keys), *keys, *args)

    def execute(self, client: RedisClient, build: Callable[[Any], None]) -> list[Any]:
        """Build a pipeline with `build` and run it, loading the scripts if Redis lacks them.

        On a Redis that lost its scripts the pipeline runs a second time, so everything
        `build` adds must be safe to repeat.
        """

        def execute() -> list[Any]:
            pipe = client.pipeline(transaction=False)
            build(pipe)
            return list(pipe.execute())

        return self._loaded(client, execute)

    def _loaded(self, client: RedisClient, action: Callable[[], T]) -> T:
        """`action`, with the scripts loaded first, and again if Redis forgot them."""
        if not self.sha:
            self.load(client)
        try:
            return action()
        except NoScriptError:
            self.load(client)
            return action()


@dataclass(frozen=True)
class Stores:
    """The two stores every visit operation and background job needs, built once per process."""

    redis: RedisClient
    scripts: Scripts
    sessions: sessionmaker[Session]


def connect_redis(settings: Settings) -> RedisClient:
    """A client for the configured Redis (or Cluster); connects on first use."""
    options = {
        "socket_connect_timeout": settings.redis_connect_timeout,
        "socket_timeout": settings.redis_timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.effective_redis_url, **options)
    return Redis.from_url(settings.effective_redis_url, **options)


class PrivateRedis:
    """A `redis-server` on a Unix socket in the instance folder, persistent, stopped on exit."""

    def __init__(self, folder: Path, socket: Path) -> None:
        self.folder = folder
        self.socket = socket
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(INSTALL_HINT)
        self.folder.mkdir(parents=True, exist_ok=True)
        options = {
            "port": "0",
            "unixsocket": str(self.socket),
            "unixsocketperm": "700",
            "dir": str(self.folder),
            "appendonly": "yes",
            "appendfsync": "everysec",
            "save": "",
            "loglevel": "warning",
            "logfile": str(self.folder / "redis.log"),
        }
        command = [binary, *(part for k, v in options.items() for part in (f"--{k}", v))]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = Redis(unix_socket_path=str(self.socket), socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.folder / 'redis.log'}")
            try:
                client.ping()
                return
            except RedisError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start within {timeout} s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.process = None
