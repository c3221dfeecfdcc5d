"""`dni demo`: a demo site and a demo shop page, so a new user sees a swap within a minute."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask import Blueprint, render_template
from sqlalchemy import select

from dni.attribution import attribute_pending
from dni.calls import CallRecord, record_call
from dni.costs import add_cost
from dni.history import flush_history
from dni.models import Call
from dni.money import to_minor
from dni.outcomes import OutcomeInput, set_outcome
from dni.sites import SiteConfig
from dni.store import Stores
from dni.visits import RateLimit, VisitInput, Visits

DEMO_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)

DEMO_SITES = """
[[site]]
key = "demo"
name = "鲜花商城 (demo)"
domains = ["localhost", "127.0.0.1"]
timezone = "Asia/Shanghai"
country = "CN"
forward_to = "+862161234567"

[[site.pool]]
name = "paid"
target = "400-888-1234"
numbers = ["400-100-0001", "400-100-0002", "400-100-0003", "400-100-0004"]
match = { medium = ["cpc", "paid"] }

[[site.pool]]
name = "everyone"
target = "400-888-1234"
extensions = "8000-8099"
match = "*"

[[site.source_number]]
number = "400-200-0001"
target = "400-888-1234"
match = { source = "baidu", medium = "organic" }

[[site.source_number]]  # read on the radio: no website
number = "400-200-0002"
source = "radio"
medium = "offline"
campaign = "fm-91.5"

[[site.rule]]
name = "answered for a minute"
when = { answered = true, min_duration = 60 }
set = { status = "qualified" }

[[site.cost]]
name = "radio number"
monthly = "100"
number = "400-200-0002"

[[site.cost]]
name = "call handling"
per_answered_call = "3.50"
"""
# Today's spend, as `dni costs import` / `dni costs add` would store it: (source, medium,
# campaign, keyword, yuan).
DEMO_COSTS = (
    ("baidu", "cpc", "", "玫瑰", "120.00"),
    ("baidu", "cpc", "", "鲜花速递", "80.00"),
    ("google", "cpc", "", "flowers", "60.00"),
    ("radio", "offline", "fm-91.5", "", "300.00"),
)

bp = Blueprint("demo", __name__)


@bp.get("/demo")
def shop() -> str:
    return render_template("demo.html")


DEMO_TRAFFIC = (
    ("?utm_source=baidu&utm_medium=cpc&utm_term=%E7%8E%AB%E7%91%B0", 180),  # 玫瑰
    ("?utm_source=baidu&utm_medium=cpc&utm_term=%E9%B2%9C%E8%8A%B1%E9%80%9F%E9%80%92", 95),
    ("?bd_vid=demo-1&utm_term=%E7%8E%AB%E7%91%B0", 0),
    ("?gclid=demo-2&utm_term=flowers", 240),
    ("", 70),
)


def add_demo_calls(stores: Stores, site: SiteConfig, now: datetime) -> int:
    """A few visits from ads and one direct, each calling its number, a radio listener's call,
    today's spend and one sale, so reports have rows with money in them."""
    visits = Visits(stores, lambda _: site, RateLimit(10**6, 60))
    start = now - timedelta(hours=1)
    records = []
    for n, (query, duration) in enumerate(DEMO_TRAFFIC):
        at = start + timedelta(minutes=n)
        data = VisitInput(
            f"demo-visitor-{n:03d}", f"http://127.0.0.1:8000/demo{query}", "", DEMO_UA, "127.0.0.1"
        )
        answer = visits.visit(site, data, at)
        if not answer.numbers:
            continue
        slot = answer.numbers[0]
        flush_history(stores, at)
        records.append(
            CallRecord(
                "demo",
                f"demo-call-{n}",
                f"+86138000000{n:02d}",
                slot.number_e164,
                at + timedelta(seconds=30),
                "completed" if duration else "no-answer",
                duration,
                extension=slot.extension or "",
            )
        )
    radio = start + timedelta(minutes=20)
    records.append(
        CallRecord(
            "demo", "demo-call-radio", "+8613900000099", "+864002000002", radio, "completed", 130
        )
    )
    with stores.sessions.begin() as session:
        for record in records:
            record_call(session, site, record, now)
    flush_history(stores, now)
    with stores.sessions.begin() as session:
        attributed = attribute_pending(session, now)
        day = now.astimezone(ZoneInfo(site.timezone)).date()
        for source, medium, campaign, keyword, yuan in DEMO_COSTS:
            amount = to_minor(yuan, site.currency)
            add_cost(session, site, day, amount, source, medium, campaign, keyword, "demo", now)
        sold = session.scalars(select(Call).where(Call.provider_call_id == "demo-call-0")).one()
        order = OutcomeInput("sale", to_minor("1280", site.currency), site.currency, "DEMO-001")
        set_outcome(session, sold, order, "dashboard", "demo", now)
    return attributed
