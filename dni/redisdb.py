"""Redis connections, and the private `redis-server` dni starts when none is configured.

Clients fail fast: no retries and short timeouts, so that a visit answers 503 within about
100 ms when Redis is down instead of holding the shop's page.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from redis import Redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisError
from redis.retry import Retry

from dni.config import Settings
from dni.pools import RedisClient

INSTALL_HINT = (
    "redis-server is not installed: install it (Debian/Ubuntu: `sudo apt-get install "
    "redis-server`, macOS: `brew install redis`) or set DNI_REDIS_URL to a running Redis"
)


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
        self.process = subprocess.Popen(
            [
                binary,
                "--port", "0",
                "--unixsocket", str(self.socket),
                "--unixsocketperm", "700",
                "--dir", str(self.folder),
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                "--loglevel", "warning",
                "--logfile", str(self.folder / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
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
