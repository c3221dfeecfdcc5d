"""`dni bench reports`: call reports over 1 M calls and 10 M visits in PostgreSQL (DESIGN §7).

A private PostgreSQL server (or the one at --database-url, which must be empty) gets a month
of traffic for one site, written by SQL for speed: visits with 50,000 keywords on a long tail,
200 landing pages (tagged with click ids), paid, organic and direct traffic from 5 engines, 50
campaigns and 3 devices; calls credited to every tenth visit carrying the traffic that
attribution copies onto calls, with outcomes (sales with revenue, qualified calls, leads, spam)
and their history; and a month of costs as an ad account reports them: daily spend of the
20,000 busiest keywords, under the engine, campaign and keyword their calls carry, and
campaign-level spend. The visit and call counts are made by the real code
(`visitcounts.recount`, `callcounts.rebuild`, timed). Each report is then timed through
`call_report`, warm, over the whole month and over 30 days that start on a Wednesday (read as
days, weeks and a month).
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine, event, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from dni import reports
from dni.bench.stores import private_postgres
from dni.callcounts import mark_stale, rebuild, refresh
from dni.calls import CallRecord, record_call
from dni.db import make_engine, make_sessionmaker, upgrade_database
from dni.models import Call
from dni.reports import Period, call_report, period
from dni.sitefile import load_sites, parse_sites
from dni.sites import SiteConfig, read_site
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
KEYWORDS_WITH_SPEND = 20_000

# Row g's traffic. Values come from hashes of g (products modulo primes) rather than from g
# itself, so that the calls, which are every tenth row, meet every value too. Keyword k is
# drawn on a long tail (k = 0 the busiest); paid traffic (6 rows in 10) is bought in one
# engine and campaign per keyword, as an ad account buys it, so that costs can name them.
TRAFFIC = """
SELECT g, at, page, device,
  CASE WHEN kind < 6 THEN (array['baidu','google','360','sogou','oceanengine'])[1 + k % 5]
    WHEN kind < 8 THEN (array['baidu','google','360','sogou','oceanengine'])[1 + h / 6000 % 5]
    ELSE '(direct)' END AS source,
  CASE WHEN kind < 6 THEN 'cpc' WHEN kind < 8 THEN 'organic' ELSE '(none)' END AS medium,
  CASE WHEN kind < 6 THEN 'campaign-' || k % 50 ELSE '' END AS campaign,
  CASE WHEN kind < 8 THEN 'kw-关键词-' || k ELSE '' END AS term
FROM (
  SELECT g, h, h % 10 AS kind,
    floor(50000 * power(((g * 2654435761) % 1000003)::float8 / 1000003, 3))::int AS k,
    'https://shop.bench.test/p/' || (h / 10 % 200) AS page,
    (array['mobile','desktop','tablet'])[1 + h / 2000 % 3] AS device,
    timestamptz '2026-09-30 16:00+00' + g * (interval '31 days' / {visits}) AS at
  FROM (
    SELECT g, (g * 40503) % 1000033 AS h
    FROM generate_series({first}::bigint, {visits}, {step}) AS g
  ) AS hashed
) AS drawn
"""
VISITS = """
INSERT INTO visits (id, site_id, visitor_id, started_at, last_seen_at, landing_page, referrer,
  source, medium, campaign, term, content, click_id_type, click_id, click_ids, device, browser,
  os, user_agent, ip, pages_viewed, last_url)
SELECT 'v' || g, :site, 'visitor-' || (g % 3000000), at, at + interval '3 minutes',
  page || '?gclid=' || g, '', source, medium, campaign, term, '', 'gclid', g::text, '{{}}',
  device, 'Chrome', 'Android', 'Mozilla/5.0', '10.0.0.1', 1, page
FROM ({traffic}) AS t
"""
# Per call, hash a draws answering (7 in 10) and the outcome: 2 % spam, 4 % of answered calls
# sales (100-2,000 CNY, imported from orders), 14 % of answered calls qualified, then leads;
# hash b draws the duration and whether the caller is new.
CALLS = """
INSERT INTO calls (site_id, provider, provider_call_id, tracking_e164, extension, caller_e164,
  caller_raw, caller_anonymous, caller_region, caller_carrier, started_at, duration_seconds,
  status, recording_url, visit_id, attribution_method, attribution_confidence,
  attribution_candidates, attribution_signals, source, medium, campaign, keyword, landing_page,
  device, first_time, payloads, updated_at, outcome, revenue, currency, order_id,
  outcome_source, outcome_at)
SELECT :site, 'cdr', 'call-' || g, '+864008881234', lpad((n % 200)::text, 4, '0'),
  '+86138' || lpad((n % 700000)::text, 8, '0'), '', false,
  (array['广东省深圳市','北京市','上海市','浙江省杭州市'])[1 + n % 4], '中国移动',
  at + interval '2 minutes', CASE WHEN answered THEN 10 + b % 590 ELSE 0 END,
  CASE WHEN answered THEN 'completed' ELSE 'no-answer' END, '',
  'v' || g, 'session', 0.95, '[]', '{{}}', source, medium, campaign, term, page, device,
  b / 1000 % 10 < 6, '[]', at + interval '2 minutes', outcome,
  CASE WHEN outcome = 'sale' THEN 10000 + a * 31 % 190001 ELSE 0 END,
  CASE WHEN outcome = 'sale' THEN 'CNY' ELSE '' END,
  CASE WHEN outcome = 'sale' THEN 'order-' || n ELSE '' END,
  CASE WHEN outcome = 'sale' THEN 'import' WHEN outcome <> '' THEN 'rule' ELSE '' END,
  CASE WHEN outcome = 'sale' THEN at + interval '1 day'
    WHEN outcome <> '' THEN at + interval '10 minutes' END
FROM (
  SELECT *, CASE WHEN o < 2 THEN 'spam' WHEN answered AND o < 6 THEN 'sale'
    WHEN answered AND o < 20 THEN 'qualified' WHEN o < 35 THEN 'lead' ELSE '' END AS outcome
  FROM (
    SELECT t.*, g / 10 AS n, a, b, a % 10 < 7 AS answered, a / 10 % 100 AS o
    FROM ({traffic}) AS t,
      LATERAL (SELECT (g * 1597334677) % 1000037 AS a, (g * 2246822519) % 1000039 AS b) AS x
  ) AS drawn
) AS called
"""
OUTCOMES = """
INSERT INTO outcomes (call_id, status, revenue, currency, order_id, note, source, set_by, set_at)
SELECT id, outcome, revenue, currency, order_id, '', outcome_source,
  CASE WHEN outcome_source = 'import' THEN 'orders-2026-10.csv' ELSE 'rule 1' END, outcome_at
FROM calls WHERE site_id = :site AND outcome <> ''
"""
# Daily spend of keyword k in the month: its expected paid clicks (the traffic's long tail:
# visits * 6/10 * P(k) / 31 a day) times its own price per click (1.50-6.00 CNY) times a daily
# swing of 0.6-1.4; and 200-500 CNY a day (at 10 M visits) per campaign not bought by keyword
# (display, brand).
COSTS = """
INSERT INTO costs (site_id, day, source, medium, campaign, keyword, amount, currency, origin,
  note, updated_at)
SELECT :site, date '2026-09-30' + d, source, 'cpc', campaign, keyword, amount, 'CNY',
  CASE source WHEN 'baidu' THEN 'baidu' WHEN 'google' THEN 'google-ads'
    WHEN 'oceanengine' THEN 'oceanengine' ELSE 'generic' END, 'bench', now()
FROM (
  SELECT d, (array['baidu','google','360','sogou','oceanengine'])[1 + k % 5] AS source,
    'campaign-' || k % 50 AS campaign, 'kw-关键词-' || k AS keyword,
    greatest(1, round(0.6 * {visits} / 31
      * (cbrt((k + 1) / 50000.0::float8) - cbrt(k / 50000.0::float8))
      * (150 + k * 7919 % 451)
      * (0.6 + 0.8 * ((k * 31 + d) * 2654435761 % 1000003)::float8 / 1000003)))::bigint AS amount
  FROM generate_series(0, {keywords} - 1) AS k, generate_series(1, 31) AS d
  UNION ALL
  SELECT d, (array['baidu','google','360','sogou','oceanengine'])[1 + c % 5],
    'campaign-' || c, '',
    greatest(1, round((20000 + (c * 7919 + d * 104729) % 30001) * {visits}::float8 / 1e7))::bigint
  FROM generate_series(0, 49) AS c, generate_series(1, 31) AS d
) AS spend
"""


def run_reports_benchmark(
    visits: int, database_url: str, runs: int, echo: Callable[[str], None]
) -> None:
    if database_url:
        _measure(database_url, visits, runs, echo)
        return
    with private_postgres() as url:
        _measure(url, visits, runs, echo)


def write_month(engine: Engine, site_id: int, visits: int) -> dict[str, float]:
    """Write the month's visits, calls, outcomes and costs for one site by SQL, then VACUUM
    ANALYZE; returns the seconds each step took."""
    traffic = {"visits": visits}
    steps = {
        "visits": VISITS.format(traffic=TRAFFIC.format(first=1, step=1, **traffic)),
        "calls": CALLS.format(traffic=TRAFFIC.format(first=10, step=10, **traffic)),
        "outcomes": OUTCOMES,
        "costs": COSTS.format(keywords=KEYWORDS_WITH_SPEND, **traffic),
    }
    took = {}
    with engine.begin() as connection:
        for name, sql in steps.items():
            began = time.perf_counter()
            connection.execute(text(sql), {"site": site_id})
            took[name] = time.perf_counter() - began
    began = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))
    took["vacuum"] = time.perf_counter() - began
    return took


def _measure(url: str, visits: int, runs: int, echo: Callable[[str], None]) -> None:
    engine = make_engine(url)
    upgrade_database(url)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        load_sites(session, parse_sites(SITE), datetime(2026, 9, 1, tzinfo=UTC))
        site = read_site(session, "bench")
        assert site is not None
    took = write_month(engine, site.id, visits)
    with sessions.begin() as session:
        began = time.perf_counter()
        counted = recount(session, site.id)
        counting = time.perf_counter() - began
    with sessions.begin() as session:
        began = time.perf_counter()
        days = rebuild(session, site.id)
        rebuilding = time.perf_counter() - began
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE visit_counts"))
        connection.execute(text("VACUUM ANALYZE call_counts"))
        connection.execute(text("VACUUM ANALYZE channel_counts"))
    with sessions() as session:
        calls, outcomes, costs, buckets, call_buckets, server = (
            session.scalar(text(sql))
            for sql in (
                "SELECT count(*) FROM calls",
                "SELECT count(*) FROM outcomes",
                "SELECT count(*) FROM costs",
                "SELECT count(*) FROM visit_counts",
                "SELECT count(*) FROM call_counts",
                "SHOW server_version",
            )
        )
    steps = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in took.items())
    echo(
        f"dni bench reports: PostgreSQL {server}, {counted:,} visits, {calls:,} calls, "
        f"{outcomes:,} outcomes, {costs:,} cost rows, one site, October 2026"
    )
    echo(f"data written by SQL in {sum(took.values()):.0f} s ({steps})")
    echo(
        f"visit counts by the real code: {buckets:,} rows in {counting:.0f} s "
        f"({counted / counting:,.0f} visits/s)"
    )
    echo(
        f"call counts by the real code: {call_buckets:,} rows for {days} days in "
        f"{rebuilding:.0f} s ({calls / rebuilding:,.0f} calls/s)"
    )
    with sessions() as session:
        _time_reports(session, site, runs, echo)
    echo(f"a stale day counted again: {_stale_day(sessions, site, runs)}")
    engine.dispose()


def _stale_day(sessions: sessionmaker[Session], site: SiteConfig, runs: int) -> str:
    """How long counting a busy day again takes (as `dni worker` does, or the first report
    after the change): after one new call, and after a change to every call of the day."""
    noon = datetime(2026, 10, 15, 4, tzinfo=UTC)  # in Shanghai
    day = (datetime(2026, 10, 14, 16, tzinfo=UTC), datetime(2026, 10, 15, 16, tzinfo=UTC))
    that_day = (Call.site_id == site.id) & Call.started_at.between(*day)
    timings: dict[str, list[float]] = {"one new call": [], "every call changed": []}
    for n in range(runs):
        for kind, ms in timings.items():
            with sessions.begin() as session:
                if kind == "one new call":
                    caller, number = "+8613900000000", "400-888-1234"
                    call = CallRecord("cdr", f"new-{n}", caller, number, noon, "completed", 90)
                    record_call(session, site, call, noon)
                else:  # as re-attribution would: every call of the day credited elsewhere
                    session.execute(
                        update(Call).where(that_day).values(first_time=~Call.first_time)
                    )
                    mark_stale(session, site.id, [noon])
                began = time.perf_counter()
                refresh(session, site.id)
                ms.append((time.perf_counter() - began) * 1000)
    with sessions() as session:
        calls = session.scalar(select(func.count()).where(that_day))
    shown = ", ".join(f"{kind} {statistics.median(ms):,.0f} ms" for kind, ms in timings.items())
    return f"{shown} (median of {runs}; {calls:,} calls that day)"


def _time_reports(
    session: Session, site: SiteConfig, runs: int, echo: Callable[[str], None]
) -> None:
    """Time every report, then show the keyword report's top row beside the same figures
    counted straight from the tables."""
    echo(
        f"{'group_by':<14}{'rows':>8}{'month ms':>11}{'30 days ms':>12}   (median of {runs}, warm)"
    )
    extra = tuple(d for d in reports.DIMENSIONS if d not in DIMENSIONS)  # channel, once it is
    month = period(site, *MONTH)
    for dimension in DIMENSIONS + extra:
        figures = []
        for when in (month, period(site, *THIRTY_DAYS)):
            call_report(session, site, when, dimension)  # warm the caches
            timings = []
            for _ in range(runs):
                began = time.perf_counter()
                rows = call_report(session, site, when, dimension)
                timings.append((time.perf_counter() - began) * 1000)
            figures.append(statistics.median(timings))
        echo(f"{dimension:<14}{len(rows):>8,}{figures[0]:>11.0f}{figures[1]:>12.0f}")
    echo(f"keyword report, month, one run: {_breakdown(session, site, month)}")
    rows = call_report(session, site, month, "keyword")
    top = next((row for row in rows if row.get("cost")), rows[0])
    echo(f"keyword report, month, top row with spend: {_shown(top)}")
    echo(f"the same keyword counted from the tables:  {_counted(session, site, month, top)}")


def _breakdown(session: Session, site: SiteConfig, when: Period) -> str:
    """Where one keyword report's time goes: each SQL statement (named by its table), and the
    rest (building the rows in Python)."""
    engine = session.get_bind()
    began: list[float] = []
    spent: list[tuple[str, float]] = []

    def before(*_: Any) -> None:
        began.append(time.perf_counter())

    def after(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        table = re.search(r"\bFROM\s+(\w+)", statement)
        spent.append((table[1] if table else "?", (time.perf_counter() - began.pop()) * 1000))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        start = time.perf_counter()
        call_report(session, site, when, "keyword")
        total = (time.perf_counter() - start) * 1000
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    sql = sum(ms for _, ms in spent)
    statements = ", ".join(f"{table} {ms:,.0f}" for table, ms in spent if ms >= 1)
    return f"{total:,.0f} ms: SQL {sql:,.0f} ms ({statements}), Python {total - sql:,.0f} ms"


SHOWN = ("keyword", "visits", "calls", "leads", "sales", "revenue", "cost", "roi", "spam")


def _shown(row: dict[str, Any]) -> str:
    return ", ".join(f"{name} {row.get(name)}" for name in SHOWN)


def _counted(session: Session, site: SiteConfig, when: Period, row: dict[str, Any]) -> str:
    """Calls, sales and spam, revenue and spend of one keyword, read without the report's
    code (spend of the period's days; revenue in minor units)."""
    found = session.execute(
        text(
            "SELECT count(*), count(*) FILTER (WHERE outcome = 'sale'),"
            " count(*) FILTER (WHERE outcome = 'spam'), coalesce(sum(revenue), 0),"
            " (SELECT coalesce(sum(amount), 0) FROM costs WHERE site_id = :site"
            "  AND keyword = :keyword AND day BETWEEN :first AND :last)"
            " FROM calls WHERE site_id = :site AND keyword = :keyword"
            " AND started_at >= :start AND started_at < :end"
        ),
        {
            "site": site.id,
            "keyword": row["keyword"],
            "first": when.first,
            "last": when.last,
            "start": when.start,
            "end": when.end,
        },
    ).one()
    calls, sales, spam, revenue, cost = found
    return f"calls {calls} (spam {spam}), sales {sales}, revenue {revenue}, cost {cost}"
