"""Settings read once from the environment (`DNI_*`), with defaults that work on a laptop.

Nothing here connects to anything: the factory and the CLI turn settings into clients.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

SNIPPET = Path(__file__).resolve().parent / "static" / "dni.min.js"  # package data, built by npm


class SettingsError(ValueError):
    """An environment variable holds a value dni cannot use."""


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r}: expected one of 1/0, true/false, yes/no, on/off")


def _number(name: str, raw: str, kind: type[int] | type[float]) -> int | float:
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a {kind.__name__}") from None
    if value < 0:
        raise SettingsError(f"{name}={raw!r}: must not be negative")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything configurable about a dni process; see README "Configuration"."""

    instance_path: Path = field(default_factory=lambda: Path.cwd() / "instance")
    # Empty means: a SQLite file in the instance folder.
    database_url: str = ""
    # Empty means: `dni serve` starts a private redis-server on a socket in the instance folder.
    redis_url: str = ""
    # A Redis Cluster client is built from redis_url when true.
    redis_cluster: bool = False
    redis_connect_timeout: float = 0.05
    redis_timeout: float = 0.25
    # Trusted reverse proxies in front of the app (X-Forwarded-For hops to honour).
    proxy_count: int = 0
    # New visits one client address may start per window before it is answered 429.
    visit_rate_limit: int = 60
    visit_rate_window: int = 60
    # New visits one network (/24 for IPv4, /48 for IPv6) may start per window; 0 means four
    # times visit_rate_limit.
    visit_network_limit: int = 0
    # How often `dni worker` moves queued history (lease starts, visits, heartbeats) from Redis
    # to SQL and attributes new calls; 0: `dni serve` runs no worker. A Redis that loses its
    # data loses at most the lease starts of this interval plus one flush.
    flush_seconds: float = 1.0
    # How long a worker holds the postbacks it is sending (dni.outbox): those of a worker that
    # died wait this long before another sends them. Longer than a request may take.
    postback_claim_seconds: float = 120.0
    # How long a site's configuration is cached in each worker.
    config_cache_seconds: float = 10.0
    # Largest request body accepted by the public API.
    max_body_bytes: int = 16 * 1024
    # The built snippet served at /dni.js (the repository's build by default).
    snippet_path: Path = field(default_factory=lambda: SNIPPET)
    # The public base URL providers call (e.g. https://dni.example.cn), needed to check
    # Twilio's signatures behind a proxy that rewrites the host or scheme; empty: as received.
    public_url: str = ""
    # A MaxMind-format city database (.mmdb) placing visitors' IP addresses, so attribution can
    # compare a visit's province with the caller's; empty: no such signal.
    geoip_path: str = ""
    # Bearer token for /metrics; empty: answered to loopback and private addresses only.
    metrics_token: str = ""
    # Serve the demo shop page at /demo (set by `dni demo`).
    demo: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read `DNI_<FIELD>` variables; raise SettingsError naming any bad one."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f"DNI_{f.name.upper()}"
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            default = getattr(cls(), f.name)
            if isinstance(default, bool):
                values[f.name] = _bool(name, raw)
            elif isinstance(default, int):
                values[f.name] = int(_number(name, raw, int))
            elif isinstance(default, float):
                values[f.name] = float(_number(name, raw, float))
            elif isinstance(default, Path):
                values[f.name] = Path(raw)
            else:
                values[f.name] = raw
        return cls(**values)

    def with_overrides(self, overrides: Mapping[str, Any]) -> Settings:
        """A copy with some fields replaced (tests, the CLI)."""
        return replace(self, **overrides)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.instance_path / 'dni.sqlite3'}"

    @property
    def redis_socket(self) -> Path:
        """Where the private redis-server listens when no DNI_REDIS_URL is set."""
        return self.instance_path / "redis.sock"

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"unix://{self.redis_socket}"
