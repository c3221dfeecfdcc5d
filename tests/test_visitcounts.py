"""Visit counts per day and dimension: what reports read instead of counting visits."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dni.history import flush_history
from dni.models import VisitCount
from dni.store import SiteKeys
from dni.visitcounts import spans
from dni.web.runtime import Runtime
from tests.conftest import Clock
from tests.factories import load_toml, shop_toml, start_visit

PAID = "https://shop.example.cn/flowers?utm_source=baidu&utm_medium=cpc&utm_term=roses#top"


def counts(sessions: sessionmaker[Session], span: str = "D") -> dict[tuple[date, str, str], int]:
    with sessions() as session:
        rows = session.scalars(select(VisitCount).where(VisitCount.span == span))
        return {(row.start, row.dimension, row.value): row.visits for row in rows}


@pytest.mark.usefixtures("shop")
def test_a_visit_counts_once_per_dimension_on_its_local_day(
    rt: Runtime, clock: Clock, sessions: sessionmaker[Session]
) -> None:
    clock.advance(12.5 * 3600)  # 16:30 UTC is 00:30 the next day in Shanghai
    start_visit(rt, "visitor-a", PAID)
    start_visit(rt, "visitor-b", "https://shop.example.cn/flowers?gclid=abc")
    key = SiteKeys(rt.sites.get("shop").id).rows  # type: ignore[union-attr]
    queued: dict[Any, Any] = rt.stores.redis.hgetall(key)
    flush_history(rt.stores, clock.now)
    rt.stores.redis.hset(key, mapping=queued)  # as if a flush died after commit, before HDEL
    flush_history(rt.stores, clock.now)
    day = date(2026, 11, 3)
    assert counts(sessions) == {
        (day, "keyword", "roses"): 1,
        (day, "keyword", ""): 1,
        (day, "source", "baidu"): 1,
        (day, "source", "google"): 1,
        (day, "medium", "cpc"): 2,
        (day, "campaign", ""): 2,
        (day, "landing_page", "https://shop.example.cn/flowers"): 2,
        (day, "device", "desktop"): 2,
        (day, "hour", "0"): 2,
        (day, "channel", "baidu / cpc"): 1,
        (day, "channel", "google / cpc"): 1,
    }
    assert counts(sessions, "W")[(date(2026, 11, 2), "medium", "cpc")] == 2  # from Monday
    assert counts(sessions, "M")[(date(2026, 11, 1), "medium", "cpc")] == 2


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        ("2026-11-03", "2026-11-03", ["D 11-03"]),
        ("2026-11-01", "2026-11-30", ["M 11-01"]),
        # Wed 14 Oct .. Thu 12 Nov: days up to Sunday, whole weeks, the days left.
        (
            "2026-10-14",
            "2026-11-12",
            [
                "D 10-14",
                "D 10-15",
                "D 10-16",
                "D 10-17",
                "D 10-18",
                "W 10-19",
                "W 10-26",
                "W 11-02",
                "D 11-09",
                "D 11-10",
                "D 11-11",
                "D 11-12",
            ],
        ),
        ("2026-02-01", "2026-03-31", ["M 02-01", "M 03-01"]),
    ],
)
def test_a_period_is_read_as_whole_months_then_weeks_then_days(
    first: str, last: str, expected: list[str]
) -> None:
    found = spans(date.fromisoformat(first), date.fromisoformat(last))
    assert [f"{span} {start:%m-%d}" for span, start in found] == expected


@pytest.mark.usefixtures("shop")
def test_a_new_time_zone_moves_visits_to_their_new_days(
    rt: Runtime, clock: Clock, sessions: sessionmaker[Session]
) -> None:
    clock.advance(12.5 * 3600)
    start_visit(rt, "visitor-a", PAID)
    flush_history(rt.stores, clock.now)
    assert counts(sessions)[(date(2026, 11, 3), "hour", "0")] == 1
    load_toml(sessions, shop_toml().replace("Asia/Shanghai", "Europe/London"))
    moved = counts(sessions)
    assert moved[(date(2026, 11, 2), "hour", "16")] == 1
    assert not [key for key in moved if key[0] == date(2026, 11, 3)]
