"""Alembic revisions: down to nothing and up to head on the test database, matching the models."""

from __future__ import annotations

from datetime import UTC, date, datetime

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, Table, insert, inspect, text

from dni.db import downgrade_database, make_engine, upgrade_database
from dni.models import Base


def test_upgrade_from_empty_to_head_matches_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    downgrade_database(database_url, "base")
    with engine.connect() as connection:
        assert set(inspect(connection).get_table_names()) <= {"alembic_version"}
    upgrade_database(database_url)
    with engine.connect() as connection:
        # PostgreSQL's partitions of call_counts (0007) are its storage, not models.
        partition = {"call_counts_day", "call_counts_week", "call_counts_month"}
        context = MigrationContext.configure(
            connection,
            opts={"include_name": lambda name, kind, _: kind != "table" or name not in partition},
        )
        assert context.get_current_revision() is not None
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_upgrading_to_0003_fills_report_columns_and_visit_counts(database_url: str) -> None:
    engine = make_engine(database_url)
    downgrade_database(database_url, "0002")
    site = {
        "id": 1,
        "key": "shop",
        "name": "",
        "domains": "[]",
        "timezone": "Asia/Shanghai",
        "country": "CN",
        "active": True,
        "revision": 1,
    }
    at = datetime(2026, 11, 2, 16, 30, tzinfo=UTC)  # 00:30 on 3 November in Shanghai
    visit = {
        "id": "v1",
        "site_id": 1,
        "visitor_id": "x",
        "started_at": at,
        "last_seen_at": at,
        "landing_page": "https://shop.example.cn/p?gclid=1",
        "referrer": "",
        "source": "google",
        "medium": "cpc",
        "campaign": "spring",
        "term": "roses",
        "content": "",
        "click_id_type": "",
        "click_id": "",
        "click_ids": "{}",
        "device": "mobile",
        "browser": "",
        "os": "",
        "user_agent": "",
        "ip": "",
        "pages_viewed": 1,
        "last_url": "",
    }
    call = {
        "id": 1,
        "site_id": 1,
        "provider": "cdr",
        "provider_call_id": "c1",
        "tracking_e164": "+864001000001",
        "extension": "",
        "caller_e164": "",
        "caller_raw": "",
        "caller_anonymous": False,
        "caller_region": "",
        "caller_carrier": "",
        "started_at": at,
        "duration_seconds": 60,
        "status": "completed",
        "recording_url": "",
        "visit_id": "v1",
        "attribution_candidates": "[]",
        "attribution_signals": "{}",
        "source": "google",
        "medium": "cpc",
        "payloads": "[]",
        "updated_at": at,
    }
    meta = MetaData()
    with engine.begin() as connection:
        for name, row in (("sites", site), ("visits", visit), ("calls", call)):
            connection.execute(insert(Table(name, meta, autoload_with=connection)), row)
    upgrade_database(database_url)
    with engine.begin() as connection:
        filled = connection.execute(
            text("SELECT campaign, keyword, landing_page, device FROM calls")
        ).one()
        counted = connection.execute(
            text(
                "SELECT dimension, value, visits FROM visit_counts WHERE span = 'D' AND start = :d"
            ),
            {"d": date(2026, 11, 3)},
        ).all()
        stale = connection.execute(text("SELECT site_id, day FROM stale_days")).all()
        for name in ("stale_days", "visit_counts", "calls", "visits", "sites"):
            connection.execute(text(f"DELETE FROM {name}"))
    engine.dispose()
    assert tuple(filled) == ("spring", "roses", "https://shop.example.cn/p", "mobile")
    # 0006: the call's day (Shanghai's) waits to be counted by the first refresh.
    assert [(site, str(day)) for site, day in stale] == [(1, "2026-11-03")]
    assert sorted(map(tuple, counted)) == [
        ("campaign", "spring", 1),
        ("channel", "google / cpc", 1),  # counted by 0005
        ("device", "mobile", 1),
        ("hour", "0", 1),
        ("keyword", "roses", 1),
        ("landing_page", "https://shop.example.cn/p", 1),
        ("medium", "cpc", 1),
        ("source", "google", 1),
    ]


def test_upgrading_to_0007_counts_spend_and_sums_channels(database_url: str) -> None:
    engine = make_engine(database_url)
    downgrade_database(database_url, "0006")
    site = {"id": 1, "key": "shop", "name": "", "domains": "[]", "timezone": "Asia/Shanghai"}
    site |= {"country": "CN", "active": True, "revision": 1}
    figures = {"calls": 2, "answered": 1, "first_time": 1, "qualified": 0, "leads": 1}
    figures |= {"sales": 1, "spam": 0, "open_leads": 0, "minutes": 3}
    figures |= {"revenue": 5000, "sale_revenue": 5000}
    counts = [
        {"site_id": 1, "span": span, "start": date(2026, 11, first), "source": "baidu"}
        | {"medium": "cpc", "campaign": "c", "keyword": keyword, "number": "+864001000001"}
        | {"extension": False, **figures}
        for span, first in (("D", 3), ("M", 1))
        for keyword in ("roses", "tulips")
    ]
    cost = {"id": 1, "site_id": 1, "day": date(2026, 11, 4), "source": "baidu", "medium": "cpc"}
    cost |= {"campaign": "c", "keyword": "roses", "amount": 1200, "currency": "CNY"}
    cost |= {"origin": "manual", "note": "", "updated_at": datetime(2026, 11, 4, tzinfo=UTC)}
    meta = MetaData()
    with engine.begin() as connection:
        for name, rows in (("sites", [site]), ("call_counts", counts), ("costs", [cost])):
            connection.execute(insert(Table(name, meta, autoload_with=connection)), rows)
    upgrade_database(database_url)
    with engine.begin() as connection:
        channels = connection.execute(
            text(
                "SELECT span, start, source, medium, calls, revenue, spend FROM channel_counts"
                " ORDER BY span, start"
            )
        ).all()
        spend = connection.execute(
            text(
                "SELECT span, start, keyword, number, calls, spend FROM call_counts"
                " WHERE spend <> 0 ORDER BY span, start"
            )
        ).all()
        partitions = (
            connection.scalars(
                text(
                    "SELECT c.relname FROM pg_inherits JOIN pg_class AS c ON c.oid = inhrelid"
                    " WHERE inhparent = 'call_counts'::regclass ORDER BY 1"
                )
            ).all()
            if connection.dialect.name == "postgresql"
            else None
        )
        stale = connection.execute(text("SELECT site_id, day FROM stale_days")).all()
        for name in ("stale_days", "channel_counts", "call_counts", "costs", "sites"):
            connection.execute(text(f"DELETE FROM {name}"))
    engine.dispose()
    assert [(span, str(start), *rest) for span, start, *rest in channels] == [
        ("D", "2026-11-03", "baidu", "cpc", 4, 10000, 0),
        ("D", "2026-11-04", "baidu", "cpc", 0, 0, 1200),
        ("M", "2026-11-01", "baidu", "cpc", 4, 10000, 1200),
        ("W", "2026-11-02", "baidu", "cpc", 0, 0, 1200),  # Monday 2 November
    ]
    if partitions is not None:  # PostgreSQL: one partition per span, its rows copied there
        assert partitions == ["call_counts_day", "call_counts_month", "call_counts_week"]
    # The cost's spend is counted by the upgrade itself, in rows of no tracking number.
    assert [(span, str(start), *rest) for span, start, *rest in spend] == [
        ("D", "2026-11-04", "roses", "", 0, 1200),
        ("M", "2026-11-01", "roses", "", 0, 1200),
        ("W", "2026-11-02", "roses", "", 0, 1200),
    ]
    assert stale == []
