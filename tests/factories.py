"""Plain functions that build test data: sites files, loaded sites, visits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dni.attribution import CLOCK_MARGIN, attribute_pending
from dni.calls import CallRecord, record_call
from dni.geo import IpRegions
from dni.history import flush_history, flush_watermark
from dni.models import Call
from dni.sitefile import LoadReport, load_sites, parse_sites
from dni.visits import VisitAnswer, VisitInput

if TYPE_CHECKING:
    from dni.web.runtime import Runtime

SHOP = """
[[site]]
key = "shop"
domains = ["shop.example.cn", "*.example.com.cn", "localhost", "127.0.0.1"]
timezone = "Asia/Shanghai"
country = "CN"
forward_to = "+862161234567"
keyword_param = "kw"
twilio_auth_token = "twilio-test-token-0123456789"
cdr_secret = "env:DNI_TEST_CDR_SECRET"

[[site.pool]]
name = "paid"
target = "400-888-1234"
numbers = {paid}
match = {{ medium = ["cpc", "paid"] }}
lease_seconds = 1800
grace_seconds = 7200
overflow = "{overflow}"

[[site.pool]]
name = "everyone"
target = "400-888-1234"
extensions = "8000-{last_ext}"
match = "*"

[[site.source_number]]
number = "400-200-0001"
target = "400-888-1234"
match = {{ source = "baidu", medium = "organic" }}
"""

PAID = ["400-100-0001", "400-100-0002", "400-100-0003"]
DESKTOP_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
MOBILE_UA = (
    "Mozilla/5.0 (Linux; Android 13; V2227A) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36"
)


def shop_toml(
    paid: list[str] | None = None, overflow: str = "fallback", extensions: int = 10
) -> str:
    numbers = "[" + ", ".join(f'"{n}"' for n in (PAID if paid is None else paid)) + "]"
    return SHOP.format(paid=numbers, overflow=overflow, last_ext=8000 + extensions - 1)


def load_toml(
    sessions: sessionmaker[Session], text: str, now: datetime | None = None
) -> LoadReport:
    with sessions.begin() as session:
        return load_sites(session, parse_sites(text), now or datetime.now(UTC))


def start_visit(rt: Runtime, visitor: str, url: str, ip: str = "10.0.0.1") -> VisitAnswer:
    """Start or continue a visit to the "shop" site through the domain call the API makes."""
    site = rt.sites.get("shop")
    assert site is not None
    data = VisitInput(visitor=visitor, url=url, referrer="", user_agent=DESKTOP_UA, ip=ip)
    return rt.visits.visit(site, data, rt.now())


def beat(rt: Runtime, answer: VisitAnswer, when: datetime, url: str | None = None) -> VisitAnswer:
    """A heartbeat of `answer`'s visit, through the domain call the API makes."""
    assert answer.visit is not None, "a bot's visit has no heartbeat"
    return rt.visits.heartbeat(rt.visits.site_of(answer.visit), answer.visit, url, when)


def report_call(
    rt: Runtime,
    when: datetime,
    to: str = "+864001000001",
    caller: str = "+8613812345678",
    n: int = 1,
    duration: int = 60,
    extension: str = "",
    stored: datetime | None = None,
) -> None:
    """A call that started at `when` (by its provider's clock), reported to dni at `stored`
    (`when` unless given) and not attributed yet."""
    site = rt.sites.get("shop")
    assert site is not None
    record = CallRecord(
        "cdr", f"call-{n}", caller, to, when, "completed", duration, extension=extension
    )
    with rt.stores.sessions.begin() as session:
        record_call(session, site, record, stored or when)


def attribute_flushed(rt: Runtime, regions: IpRegions | None = None) -> int:
    """Attribute what the last flush's watermark lets through, as the background job does."""
    watermark = flush_watermark(rt.stores.redis)
    assert watermark is not None, "no flush has recorded a watermark"
    with rt.stores.sessions.begin() as session:
        return attribute_pending(session, watermark, regions)


def stored_call(rt: Runtime, n: int = 1) -> Call:
    with rt.stores.sessions() as session:
        return session.scalars(select(Call).where(Call.provider_call_id == f"call-{n}")).one()


def call_at(
    rt: Runtime,
    when: datetime,
    to: str = "+864001000001",
    caller: str = "+8613812345678",
    n: int = 1,
    duration: int = 60,
    extension: str = "",
    regions: IpRegions | None = None,
) -> Call:
    """A call reported at `when` and attributed the way the background job does it: after a
    flush one clock margin later, up to its watermark."""
    report_call(rt, when, to, caller, n, duration, extension)
    flush_history(rt.stores, when + CLOCK_MARGIN)
    attribute_flushed(rt, regions)
    return stored_call(rt, n)
