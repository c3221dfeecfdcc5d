"""/metrics: request counters, pool and queue gauges from real Redis and SQL, access, and the
sum over gunicorn workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from dni import create_app
from dni.history import flush_history
from dni.web.runtime import Runtime
from tests.conftest import Clock
from tests.servers import free_port
from tests.test_visits_api import visit

pytestmark = pytest.mark.usefixtures("shop")


def scrape(client: FlaskClient, **headers: str) -> str:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.data
    return response.get_data(as_text=True)


def value(text: str, name: str, **labels: str) -> float | None:
    """The sum of the samples called `name` whose labels include `labels`."""
    found = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]
    return sum(found) if found else None


def requests(text: str, **labels: str) -> float:
    return value(text, "dni_http_requests_total", **labels) or 0.0


def test_a_visit_moves_the_request_counter_and_its_pools_lease_counter(
    client: FlaskClient,
) -> None:
    before = scrape(client)
    assert value(before, "dni_pool_leases_total", site="shop", pool="paid") == 0
    assert visit(client).status_code == 200
    after = scrape(client)
    route = {"endpoint": "api.create_visit", "method": "POST", "status": "200"}
    assert requests(after, **route) - requests(before, **route) == 1
    latency = "dni_http_request_duration_seconds_count"
    timed = [value(text, latency, endpoint="api.create_visit") or 0 for text in (before, after)]
    assert timed[1] - timed[0] == 1
    assert value(after, "dni_pool_leases_total", site="shop", pool="paid") == 1
    assert value(after, "dni_pool_live_leases", site="shop", pool="paid") == 1
    assert value(after, "dni_pool_size", site="shop", pool="paid") == 3
    assert value(after, "dni_store_up", store="redis") == 1
    assert value(after, "dni_store_up", store="database") == 1


def test_404_and_429_are_counted_with_their_status(app: Flask, tmp_path: Path) -> None:
    limited = create_app({**_overrides(app, tmp_path), "visit_rate_limit": 1})
    client = limited.test_client()
    before = scrape(client)
    assert client.get("/v1/nothing").status_code == 404
    statuses = [visit(client, visitor=f"visitor-000{n}").status_code for n in range(3)]
    assert statuses[0] == 200 and 429 in statuses
    after = scrape(client)
    unmatched = {"endpoint": "unmatched", "status": "404"}
    assert requests(after, **unmatched) - requests(before, **unmatched) == 1
    limited_visits = {"endpoint": "api.create_visit", "status": "429"}
    assert requests(after, **limited_visits) - requests(before, **limited_visits) == (
        statuses.count(429)
    )


def _overrides(app: Flask, tmp_path: Path) -> dict[str, Any]:
    runtime: Runtime = app.extensions["dni"]
    settings = runtime.settings
    return {
        "redis_url": settings.redis_url,
        "database_url": settings.database_url,
        "instance_path": tmp_path,
        "flush_seconds": 0,
        "config_cache_seconds": 0,
        "clock": runtime.now,
    }


def test_queue_depth_and_flush_lag_come_from_redis(
    client: FlaskClient, rt: Runtime, clock: Clock
) -> None:
    assert visit(client).status_code == 200
    queued = scrape(client)
    assert value(queued, "dni_queue_depth", site="shop", queue="rows") == 1
    assert value(queued, "dni_queue_depth", site="shop", pool="paid", queue="starts") == 1
    assert value(queued, "dni_flush_lag_seconds") is None  # no flush yet
    flush_history(rt.stores, clock())
    clock.advance(40)
    flushed = scrape(client)
    assert value(flushed, "dni_queue_depth", site="shop", queue="rows") == 0
    assert value(flushed, "dni_flush_lag_seconds") == 40
    assert value(flushed, "dni_attribution_lag_seconds") == 0
    assert value(flushed, "dni_history_quarantine_rows") == 0


def test_access_needs_a_private_address_or_the_token(client: FlaskClient) -> None:
    public = {"REMOTE_ADDR": "8.8.8.8"}
    assert client.get("/metrics", environ_base=public).status_code == 404
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    rt = client.application.extensions["dni"]
    rt.settings = rt.settings.with_overrides({"metrics_token": "s3cret"})  # DNI_METRICS_TOKEN
    assert client.get("/metrics").status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.get("/metrics", headers=wrong).status_code == 401
    right = {"Authorization": "Bearer s3cret"}
    assert client.get("/metrics", headers=right, environ_base=public).status_code == 200


def test_scrape_with_redis_stopped_still_answers_fast(
    client: FlaskClient, redis_server: Any
) -> None:
    redis_server.stop()
    started = time.monotonic()
    text = scrape(client)
    assert time.monotonic() - started < 2
    assert value(text, "dni_store_up", store="redis") == 0
    assert value(text, "dni_store_up", store="database") == 1
    assert value(text, "dni_pool_leases_total") is None


def test_gunicorn_workers_metrics_are_summed(
    redis_url: str, database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DNI_REDIS_URL": redis_url,
        "DNI_DATABASE_URL": database_url,
        "DNI_INSTANCE_PATH": str(tmp_path),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    stale = tmp_path / "metrics" / "counter_1.db"
    stale.parent.mkdir()
    stale.write_bytes(b"left from a previous run")
    serve = [str(Path(sys.executable).parent / "dni"), "serve", "--bind", f"127.0.0.1:{port}"]
    server = subprocess.Popen([*serve, "--workers", "2"], env=env, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        probes = _wait_until_up(base + "/healthz")
        hits = 0
        while len(_served_by(tmp_path)) < 2 and hits < 600:
            with ThreadPoolExecutor(12) as pool:  # at once, so that both workers answer some
                statuses = list(pool.map(lambda _: _get(base + "/healthz")[0], range(30)))
            assert statuses == [200] * 30
            hits += 30
        assert len(_served_by(tmp_path)) == 2
        assert not stale.exists()
        for _ in range(4):  # whichever worker answers shows the sum
            status, text = _get(base + "/metrics")
            assert status == 200
            health = requests(text, endpoint="api.health", status="200")
            assert health == probes + hits
    finally:
        server.terminate()
        server.wait(timeout=20)


def _served_by(instance: Path) -> set[str]:
    """Processes that wrote metrics: a worker's files appear with its first request."""
    return {path.stem.rsplit("_", 1)[1] for path in (instance / "metrics").glob("*.db")}


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def _wait_until_up(url: str, timeout: float = 20) -> int:
    """Probe until the server answers 200; returns how many 200s it gave (one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _get(url)[0] == 200:
                return 1
        except OSError:
            time.sleep(0.1)
    raise AssertionError("dni serve did not come up")
