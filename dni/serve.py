"""Running the service: gunicorn with dni's defaults, plus the embedded stores on a laptop.

`deploy/gunicorn.conf.py` reads the same defaults, so `dni serve` and a systemd unit behave
alike; `dni serve` also runs one `dni worker` beside gunicorn, as the units do. With
`PROMETHEUS_MULTIPROC_DIR` set (`dni serve` sets it to a folder in the instance path), the
workers share their request metrics there: the master empties it at start and
marks each exited worker dead in it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import gunicorn.config
from flask import Flask
from gunicorn.app.base import BaseApplication

from dni.config import Settings
from dni.db import prepare_database
from dni.store import PrivateRedis

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def gunicorn_defaults(workers: int | None = None) -> dict[str, Any]:
    """Sync workers, four per core, behind a buffering proxy (deploy/nginx.conf).

    Chosen by `dni bench visits --sweep` (README, Performance): at 32 connections they gave the
    best throughput relative to hello-world and the lowest p99, where threaded workers queued
    more requests than the two cores could serve and timed out on Redis. The price: one
    request per process at a time and no keep-alive, so a slow client holds a worker unless a
    proxy buffers it.
    """
    cores = os.cpu_count() or 1
    return {
        "worker_class": "sync",
        "workers": workers or cores * 4,
        "timeout": 30,
        "graceful_timeout": 10,
        "accesslog": None,
        "limit_request_line": 8190,
        "limit_request_field_size": 8190,
        "on_starting": clear_metrics_folder,
        "child_exit": forget_worker_metrics,
    } | _NO_CONTROL_SOCKET


# gunicorn 25.1+ opens a control socket at one fixed path per user, which two dni servers on a
# host (or a benchmark's two) would fight over; dni does not use it.
_NO_CONTROL_SOCKET = (
    {"control_socket_disable": True}
    if any(s.name == "control_socket_disable" for s in gunicorn.config.KNOWN_SETTINGS)
    else {}
)


def clear_metrics_folder(_server: Any) -> None:
    """Start with no worker's metrics left from a previous run."""
    folder = os.environ.get(MULTIPROC_ENV)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder, exist_ok=True)  # two servers of one instance (a benchmark) may race


def forget_worker_metrics(_server: Any, worker: Any) -> None:
    """Drop an exited worker's live gauges; its counters stay in the sums."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


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


@contextmanager
def worker_beside(settings: Settings) -> Iterator[subprocess.Popen[bytes] | None]:
    """Run `dni worker` in a child process meanwhile (none when DNI_FLUSH_SECONDS is 0); it
    makes a last round when stopped."""
    if settings.flush_seconds <= 0:
        yield None
        return
    worker = subprocess.Popen([sys.executable, "-m", "dni", "worker"])
    try:
        yield worker
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def run_gunicorn(
    factory: Callable[[], Flask],
    bind: str,
    workers: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> None:
    """Serve `factory`'s app, with the workers' metrics summed in the instance folder unless
    PROMETHEUS_MULTIPROC_DIR names another (set before any worker imports prometheus_client).
    `overrides` replaces gunicorn settings of the defaults (the benchmarks compare some)."""
    os.environ.setdefault(
        MULTIPROC_ENV, str(Settings.from_env().instance_path.resolve() / "metrics")
    )
    options = gunicorn_defaults(workers) | (overrides or {}) | {"bind": bind}
    GunicornApp(factory, options).run()
