"""Running the service: gunicorn with dni's defaults, plus the embedded stores on a laptop.

`deploy/gunicorn.conf.py` reads the same defaults, so `dni serve` and a systemd unit behave
alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from dni.config import Settings
from dni.db import prepare_database
from dni.redisdb import PrivateRedis


def gunicorn_defaults(workers: int | None = None) -> dict[str, Any]:
    """Threaded workers: they keep connections alive and tolerate slow mobile clients.

    Four per core: requests mostly wait on Redis, and more processes measured faster than
    more threads (`dni bench visits`).
    """
    cores = os.cpu_count() or 1
    return {
        "worker_class": "gthread",
        "workers": workers or cores * 4,
        "threads": 4,
        "keepalive": 5,
        "timeout": 30,
        "graceful_timeout": 10,
        "accesslog": None,
        "limit_request_line": 8190,
        "limit_request_field_size": 8190,
    }


class GunicornApp(BaseApplication):
    """Gunicorn driven from Python, with the app built in each worker after the fork."""

    def __init__(self, factory: Callable[[], Flask], options: dict[str, Any]) -> None:
        self.factory = factory
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.factory()


@contextmanager
def embedded_stores(settings: Settings) -> Iterator[Settings]:
    """Prepare the database and, with no DNI_REDIS_URL, run a private redis-server meanwhile."""
    settings.instance_path.mkdir(parents=True, exist_ok=True)
    prepare_database(settings.effective_database_url)
    if settings.redis_url:
        yield settings
        return
    server = PrivateRedis(settings.instance_path, settings.redis_socket)
    server.start()
    os.environ["DNI_REDIS_URL"] = settings.effective_redis_url
    try:
        yield settings
    finally:
        server.stop()


def run_gunicorn(factory: Callable[[], Flask], bind: str, workers: int | None = None) -> None:
    options = gunicorn_defaults(workers) | {"bind": bind}
    GunicornApp(factory, options).run()
