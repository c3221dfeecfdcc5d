"""`dni demo`: a demo site and a demo shop page, so a new user sees a swap within a minute."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import Blueprint, render_template

from dni.attribution import attribute_pending
from dni.calls import CallRecord, record_call
from dni.history import flush_history
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
"""

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
    """A few visits from ads and one direct, each calling its number, so reports have rows."""
    visits = Visits(stores, lambda _: site, RateLimit(10**6, 60))
    start = now - timedelta(hours=1)
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
        record = CallRecord(
            "demo",
            f"demo-call-{n}",
            f"+86138000000{n:02d}",
            slot.number_e164,
            at + timedelta(seconds=30),
            "completed" if duration else "no-answer",
            duration,
            extension=slot.extension or "",
        )
        with stores.sessions.begin() as session:
            record_call(session, site, record, now)
    flush_history(stores, now)
    with stores.sessions.begin() as session:
        return attribute_pending(session, now)
