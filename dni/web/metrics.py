"""Prometheus metrics at /metrics: request counts and latency per route, plus store gauges.

Requests are counted by before/after_request hooks in each process; under gunicorn with
`PROMETHEUS_MULTIPROC_DIR` set, every worker writes its counts there and a scrape of any worker
sums them (`deploy/gunicorn.conf.py` marks exited workers dead). Everything derived from Redis
and SQL (pool counters, queue depths, lags, quarantine) is read at scrape time by one collector
of the answering app, so it is never summed across processes and costs the hot path nothing.
A store that is down makes its gauges go missing and `dni_store_up{store=...}` 0; the scrape
still answers 200 within the clients' timeouts.

Access: with `DNI_METRICS_TOKEN` set, only `Authorization: Bearer <token>` is answered (else
401); with it empty, only loopback and private addresses are (else 404).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import time
from collections.abc import Iterator
from datetime import datetime

from flask import Flask, Response, abort, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from dni.history import flush_watermark, quarantine_size
from dni.models import Call
from dni.pools import pool_health
from dni.sites import SiteConfig, read_all_sites
from dni.store import PoolKeys, SiteKeys
from dni.web.runtime import Runtime

# Seconds; the visit hot path answers in under 25 ms.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# PoolHealth fields counted by lease.lua in each pool's Redis `stats` hash (reset if Redis
# loses its data, which rate() copes with).
POOL_COUNTERS = {
    "leases": "Leases granted by the pool.",
    "released": "Slots returned to the free set once every lease on them expired.",
    "overflow_fallback": "Visits given the fallback number because the pool was full.",
    "overflow_share": "Visits given a number already leased because the pool was full.",
    "evicted": "Leases on probation taken back for a new visit.",
}
POOL_GAUGES = {
    "size": "Slots (numbers) in the pool.",
    "live_leases": "Leases live now.",
    "peak_leases": "Most leases live at once, as counted by lease.lua.",
}

# Module level, so that several apps in one process share them (no "Duplicated timeseries").
REQUESTS = Counter("dni_http_requests", "HTTP requests answered.", ["endpoint", "method", "status"])
LATENCY = Histogram(
    "dni_http_request_duration_seconds",
    "Time from the first request hook to the response.",
    ["endpoint", "method"],
    buckets=LATENCY_BUCKETS,
)


def install(app: Flask) -> None:
    """Register the metrics route and the request hooks (the timer before every other hook)."""
    app.before_request_funcs.setdefault(None, []).insert(0, _start_timer)
    app.after_request(_count)
    app.add_url_rule("/metrics", "metrics", _scrape)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _count(response: Response) -> Response:
    endpoint = request.endpoint or "unmatched"
    method = request.method if request.method in METHODS else "other"
    REQUESTS.labels(endpoint, method, str(response.status_code)).inc()
    started = g.pop("metrics_started", None)
    if started is not None:
        LATENCY.labels(endpoint, method).observe(time.perf_counter() - started)
    return response


def _scrape() -> Response:
    _check_access()
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
        body = b""
    else:
        body = generate_latest(REGISTRY)
    runtime: Runtime = current_app.extensions["dni"]
    registry.register(StoreCollector(runtime))
    return Response(body + generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


def _check_access() -> None:
    token = current_app.extensions["dni"].settings.metrics_token
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            abort(401)
        return
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        abort(404)
    if not (address.is_loopback or address.is_private):
        abort(404)


class StoreCollector(Collector):
    """Gauges read from Redis and SQL at scrape time, for one app's stores."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        now = self.runtime.now()
        up = GaugeMetricFamily(
            "dni_store_up", "1 if the store answered this scrape.", labels=["store"]
        )
        sites, oldest_pending = self._read_sql()
        up.add_metric(["database"], 0 if sites is None else 1)
        if sites is not None:
            lag = (now - oldest_pending).total_seconds() if oldest_pending else 0.0
            yield GaugeMetricFamily(
                "dni_attribution_lag_seconds",
                "Age of the oldest call still waiting for attribution (0 if none).",
                value=max(0.0, lag),
            )
        try:
            yield from self._read_redis(sites or [], now)
            up.add_metric(["redis"], 1)
        except RedisError:
            up.add_metric(["redis"], 0)
        yield up

    def _read_sql(self) -> tuple[list[SiteConfig] | None, datetime | None]:
        """Sites with their pools and the start of the oldest unattributed call; None, None
        when the database is down."""
        try:
            with self.runtime.stores.sessions() as session:
                sites = read_all_sites(session)
                oldest = session.scalar(
                    select(func.min(Call.started_at)).where(Call.attribution_method.is_(None))
                )
        except SQLAlchemyError:
            return None, None
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=self.runtime.now().tzinfo)
        return sites, oldest

    def _read_redis(self, sites: list[SiteConfig], now: datetime) -> Iterator[Metric]:
        """Everything read from Redis; raises RedisError before yielding anything."""
        client = self.runtime.stores.redis
        counters = {
            name: CounterMetricFamily(f"dni_pool_{name}", text, labels=["site", "pool"])
            for name, text in POOL_COUNTERS.items()
        }
        gauges = {
            name: GaugeMetricFamily(f"dni_pool_{name}", text, labels=["site", "pool"])
            for name, text in POOL_GAUGES.items()
        }
        depth = GaugeMetricFamily(
            "dni_queue_depth",
            "Entries waiting in a Redis queue for the flush.",
            labels=["site", "pool", "queue"],
        )
        for site in sites:
            for pool in site.pools:
                health = pool_health(client, pool, now)
                labels = [site.key, pool.name]
                for name, family in counters.items():
                    family.add_metric(labels, getattr(health, name))
                gauges["size"].add_metric(labels, health.size)
                gauges["live_leases"].add_metric(labels, health.in_use)
                gauges["peak_leases"].add_metric(labels, health.peak)
                for queue, key in PoolKeys(site.id, pool.id).queues().items():
                    depth.add_metric([*labels, queue], client.hlen(key))
            for queue, key in SiteKeys(site.id).queues().items():
                depth.add_metric([site.key, "", queue], client.hlen(key))
        watermark = flush_watermark(client)
        quarantined = quarantine_size(client)
        yield from counters.values()
        yield from gauges.values()
        yield depth
        if watermark is not None:
            yield GaugeMetricFamily(
                "dni_flush_lag_seconds",
                "Now minus the flush watermark: how far SQL is behind Redis.",
                value=max(0.0, (now - watermark).total_seconds()),
            )
        yield GaugeMetricFamily(
            "dni_history_quarantine_rows",
            "Rows the flush refused, kept for an operator.",
            value=quarantined,
        )
