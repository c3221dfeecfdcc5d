"""`dni bench reports`: call reports over 1 M calls and 10 M visits in PostgreSQL (DESIGN §7).

A private PostgreSQL server (or the one at --database-url, which must be empty) gets a month
of traffic for one site, written by SQL for speed: visits with 50,000 keywords on a long tail,
200 landing pages (tagged with click ids), 6 sources, 50 campaigns and 3 devices, and calls
credited to every tenth visit carrying the traffic that attribution copies onto calls. The
visit counts are made by the real code (`visitcounts.recount`, timed). Each report is then
timed through `call_report`, warm, over the whole month and over 30 days that start on a
Wednesday (read as days, weeks and a month).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import UTC, date, datetime

from sqlalchemy import text

from dni.bench.stores import private_postgres
from dni.db import make_engine, make_sessionmaker, upgrade_database
from dni.reports import call_report, period
from dni.sitefile import load_sites, parse_sites
from dni.sites import read_site
from dni.visitcounts import recount

SITE = """
[[site]]
key = "bench"
domains = ["shop.bench.test"]
timezone = "Asia/Shanghai"
[[site.pool]]
name = "all"
target = "400-888-1234"
extensions = "0000-0199"
"""
MONTH = (date(2026, 10, 1), date(2026, 10, 31))
THIRTY_DAYS = (date(2026, 10, 7), date(2026, 11, 5))  # Wednesday to Thursday
DIMENSIONS = ("keyword", "landing_page", "source", "campaign", "device", "hour", "region")

# Row g's traffic, from a hash of g so that a call can name its visit's values without a join.
TRAFFIC = """
  'kw-关键词-' || floor(50000 * power(((g * 2654435761) % 1000003) / 1000003.0, 3))::int AS term,
  'https://shop.bench.test/p/' || (g * 40503 % 200) AS page,
  (array['baidu','google','360','sogou','(direct)','oceanengine'])[1 + g % 6] AS source,
  (array['cpc','organic','(none)'])[1 + g / 6 % 3] AS medium,
  'campaign-' || (g * 7919 % 50) AS campaign,
  (array['mobile','desktop','tablet'])[1 + g / 7 % 3] AS device,
  timestamptz '2026-09-30 16:00+00' + g * (interval '31 days' / {visits}) AS at
"""
VISITS = """
INSERT INTO visits (id, site_id, visitor_id, started_at, last_seen_at, landing_page, referrer,
  source, medium, campaign, term, content, click_id_type, click_id, click_ids, device, browser,
  os, user_agent, ip, pages_viewed, last_url)
SELECT 'v' || g, :site, 'visitor-' || (g % 3000000), at, at + interval '3 minutes',
  page || '?gclid=' || g, '', source, medium, campaign, term, '', 'gclid', g::text, '{{}}',
  device, 'Chrome', 'Android', 'Mozilla/5.0', '10.0.0.1', 1, page
FROM (SELECT g, {traffic} FROM generate_series(1::bigint, {visits}) AS g) AS t
"""
CALLS = """
INSERT INTO calls (site_id, provider, provider_call_id, tracking_e164, extension, caller_e164,
  caller_raw, caller_anonymous, caller_region, caller_carrier, started_at, duration_seconds,
  status, recording_url, visit_id, attribution_method, attribution_confidence,
  attribution_candidates, attribution_signals, source, medium, campaign, keyword, landing_page,
  device, first_time, payloads, updated_at)
SELECT :site, 'cdr', 'call-' || g, '+864008881234', lpad((g % 200)::text, 4, '0'),
  '+86138' || lpad((g % 700000)::text, 8, '0'), '', false,
  (array['广东省深圳市','北京市','上海市','浙江省杭州市'])[1 + g % 4], '中国移动',
  at + interval '2 minutes', (g % 5) * 40, (array['completed','no-answer'])[1 + g % 2], '',
  'v' || g, 'session', 0.95, '[]', '{{}}', source, medium, campaign, term, page, device,
  g < {visits} / 2, '[]', at
FROM (SELECT g, {traffic} FROM generate_series(10::bigint, {visits}, 10) AS g) AS t
"""


def run_reports_benchmark(
    visits: int, database_url: str, runs: int, echo: Callable[[str], None]
) -> None:
    if database_url:
        _measure(database_url, visits, runs, echo)
        return
    with private_postgres() as url:
        _measure(url, visits, runs, echo)


def _measure(url: str, visits: int, runs: int, echo: Callable[[str], None]) -> None:
    engine = make_engine(url)
    upgrade_database(url)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        load_sites(session, parse_sites(SITE), datetime(2026, 9, 1, tzinfo=UTC))
        site = read_site(session, "bench")
        assert site is not None
    began = time.perf_counter()
    traffic = TRAFFIC.format(visits=visits)
    with sessions.begin() as session:
        session.execute(text(VISITS.format(traffic=traffic, visits=visits)), {"site": site.id})
        session.execute(text(CALLS.format(traffic=traffic, visits=visits)), {"site": site.id})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))
    written = time.perf_counter() - began
    with sessions.begin() as session:
        began = time.perf_counter()
        counted = recount(session, site.id)
        counting = time.perf_counter() - began
    with sessions() as session:
        calls = session.scalar(text("SELECT count(*) FROM calls"))
        buckets = session.scalar(text("SELECT count(*) FROM visit_counts"))
        server = session.scalar(text("SHOW server_version"))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE visit_counts"))
    echo(
        f"dni bench reports: PostgreSQL {server}, {counted:,} visits, {calls:,} calls, "
        f"one site, October 2026 (data written in {written:.0f} s)"
    )
    echo(
        f"visit counts by the real code: {buckets:,} rows in {counting:.0f} s "
        f"({counted / counting:,.0f} visits/s)"
    )
    echo(
        f"{'group_by':<14}{'rows':>8}{'month ms':>11}{'30 days ms':>12}   (median of {runs}, warm)"
    )
    with sessions() as session:
        for dimension in DIMENSIONS:
            figures = []
            for first, last in (MONTH, THIRTY_DAYS):
                when = period(site, first, last)
                call_report(session, site, when, dimension)  # warm the caches
                timings = []
                for _ in range(runs):
                    began = time.perf_counter()
                    rows = call_report(session, site, when, dimension)
                    timings.append((time.perf_counter() - began) * 1000)
                figures.append(statistics.median(timings))
            echo(f"{dimension:<14}{len(rows):>8,}{figures[0]:>11.0f}{figures[1]:>12.0f}")
    engine.dispose()
