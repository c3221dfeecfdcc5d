"""The pool scripts and the visit flow on a real 3-master Redis Cluster."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from flask import Flask
from redis.cluster import RedisCluster as ClusterClient
from sqlalchemy.orm import Session, sessionmaker

from dni import create_app
from dni.history import flush_history
from dni.models import Visit
from dni.store import PoolKeys, SiteKeys
from dni.visits import RateLimit, VisitAnswer
from dni.web.runtime import Runtime
from tests.conftest import Clock
from tests.factories import beat, load_toml, shop_toml, start_visit
from tests.servers import RedisCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster_rt(
    cluster: RedisCluster,
    sessions: sessionmaker[Session],
    database_url: str,
    clock: Clock,
    tmp_path: Path,
) -> Runtime:
    ClusterClient.from_url(cluster.url).flushall()
    load_toml(sessions, shop_toml(extensions=50))
    app: Flask = create_app(
        {
            "redis_url": cluster.url,
            "redis_cluster": True,
            "database_url": database_url,
            "instance_path": tmp_path,
            "flush_seconds": 0,
            "config_cache_seconds": 0,
            "clock": clock,
        }
    )
    runtime: Runtime = app.extensions["dni"]
    runtime.visits.rate_limit = RateLimit(10**9, 60)
    return runtime


def start(rt: Runtime, visitor: str, url: str) -> VisitAnswer:
    return start_visit(rt, visitor, url, ip="10.0.0.2")


def test_every_key_of_a_site_is_in_one_slot_and_sites_spread(cluster_rt: Runtime) -> None:
    client = cluster_rt.stores.redis
    assert isinstance(client, ClusterClient)

    def keys(site: int) -> list[str]:
        pools = [k for pool in (1, 2) for k in PoolKeys(site, pool).script_keys()]
        return [*SiteKeys(site).queues().values(), *pools]

    slots = [{client.keyslot(k) for k in keys(site)} for site in (1, 2, 3)]
    assert [len(s) for s in slots] == [1, 1, 1]
    assert len(set.union(*slots)) == 3


def test_visits_lease_renew_and_flush_on_a_cluster(
    cluster_rt: Runtime, clock: Clock, sessions: sessionmaker[Session]
) -> None:
    paid = "https://shop.example.cn/?utm_source=baidu&utm_medium=cpc"
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda i: start(cluster_rt, f"visitor-{i:04d}", paid), range(20)))
    numbers = [a.numbers[0].number_e164 for a in answers if a.numbers]
    assert sorted(numbers) == ["+864001000001", "+864001000002", "+864001000003"]

    everyone = [
        start(cluster_rt, f"visitor-x{i:03d}", "https://shop.example.cn/") for i in range(50)
    ]
    extensions = {a.numbers[0].extension for a in everyone}
    assert len(extensions) == 50
    assert start(cluster_rt, "visitor-x999", "https://shop.example.cn/").numbers == ()

    first = everyone[0]
    clock.advance(120)
    assert beat(cluster_rt, first, clock(), "https://shop.example.cn/cart").numbers == first.numbers
    assert flush_history(cluster_rt.stores).visits >= 1
    client = cluster_rt.stores.redis
    assert isinstance(client, ClusterClient)
    shop = cluster_rt.sites.get("shop")
    assert shop is not None
    site_slot = client.keyslot(SiteKeys(shop.id).prefix)
    written = list(client.scan_iter(match="dni:*", count=1000))
    assert {client.keyslot(k) for k in written if b"{site:" in k} == {site_slot}
    assert not [k for k in written if b"{pool:" in k]  # nothing in the old layout
    with sessions() as session:
        row = session.get(Visit, first.visit)
        assert row is not None and row.pages_viewed == 2
