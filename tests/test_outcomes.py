"""The money loop (DESIGN §8): outcome rules, block list, IVR labels, touch models, the
unique-caller window, fixed costs and ROI in call reports, and the seeds' worked example."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import dni.outcomes
from dni.attribution import attribute_pending
from dni.attribution.evidence import load_journeys
from dni.callcounts import bring_up_to_date
from dni.calls import CallRecord, record_call
from dni.errors import ConfigError
from dni.history import flush_history
from dni.models import Call, Cost, Outcome, Site, Visit
from dni.outcomes import OutcomeInput, RuleBook, apply_rules, set_outcome
from dni.reports import call_report, period
from dni.sitefile import export_sites, parse_sites
from dni.sites import SiteConfig, read_site
from tests.factories import load_toml, shop_toml, start_visit

NOVEMBER = (date(2026, 11, 1), date(2026, 11, 30))
FAR = datetime(2030, 1, 1, tzinfo=UTC)  # a watermark past every call
WECHAT = "400-300-0001"

# The seeds' worked example: a WeChat-account campaign's calls reach a dedicated 400 number.
MONEY = """
[[site]]
key = "money"
domains = ["money.example.cn"]
timezone = "Asia/Shanghai"
{head}

[[site.pool]]
name = "all"
target = "400-888-1234"
extensions = "8000-8009"

[[site.source_number]]
number = "{wechat}"
source = "wechat"
medium = "social"
campaign = "wechat-account"

[[site.cost]]
name = "dedicated 400 number"
monthly = "100"
number = "{wechat}"

[[site.cost]]
name = "call handling"
monthly = "500.00"
source = "wechat"
{extra}
"""


def money_site(sessions: sessionmaker[Session], extra: str = "", head: str = "") -> SiteConfig:
    load_toml(sessions, MONEY.format(wechat=WECHAT, extra=extra, head=head))
    with sessions() as session:
        site = read_site(session, "money")
    assert site is not None
    return site


def record(
    sessions: sessionmaker[Session],
    site: SiteConfig,
    n: int,
    when: datetime,
    *,
    to: str = WECHAT,
    caller: str | None = None,
    duration: int = 90,
    status: str = "completed",
    ivr: str = "",
) -> None:
    number = caller or f"+86138{n:08d}"
    call = CallRecord("cdr", f"c{n}", number, to, when, status, duration, ivr=ivr)
    with sessions.begin() as session:
        record_call(session, site, call, when)


def attribute(sessions: sessionmaker[Session], until: datetime = FAR) -> None:
    with sessions.begin() as session:
        while attribute_pending(session, until):
            pass


def call(sessions: sessionmaker[Session], n: int) -> Call:
    with sessions() as session:
        return session.scalars(select(Call).where(Call.provider_call_id == f"c{n}")).one()


def report(
    sessions: sessionmaker[Session], site: SiteConfig, dimension: str, days: tuple[date, date]
) -> dict[Any, dict[str, Any]]:
    bring_up_to_date(sessions, site.id)
    with sessions() as session:
        rows = call_report(session, site, period(site, *days), dimension)
    return {row[dimension]: row for row in rows}


def spend(sessions: sessionmaker[Session], site: SiteConfig, day: date, amount: int) -> None:
    with sessions.begin() as session:
        session.add(
            Cost(
                site_id=site.id,
                day=day,
                source="wechat",
                medium="social",
                campaign="wechat-account",
                keyword="",
                amount=amount,
                currency="CNY",
                origin="manual",
                updated_at=FAR,
            )
        )


def test_the_seeds_worked_example_reproduces_exactly(sessions: sessionmaker[Session]) -> None:
    site = money_site(sessions)
    start = datetime(2026, 11, 1, 2, tzinfo=UTC)
    for n in range(80):
        record(sessions, site, n, start + timedelta(hours=8 * n))
    attribute(sessions)
    spend(sessions, site, date(2026, 11, 3), 300_000)  # ad spend 5,000 in two entries
    spend(sessions, site, date(2026, 11, 20), 200_000)
    with sessions.begin() as session:
        for n in range(5):  # 5 orders worth 150,000 in all
            sold = session.scalars(select(Call).where(Call.provider_call_id == f"c{n}")).one()
            revenue = (2_000_000, 3_000_000, 4_000_000, 2_500_000, 3_500_000)[n]
            set_outcome(session, sold, OutcomeInput("sale", revenue, "CNY"), "api", "test", FAR)
    row = report(sessions, site, "channel", NOVEMBER)["wechat / social"]
    assert (row["calls"], row["sales"], row["revenue"]) == (80, 5, 150_000.0)
    assert row["cost"] == 5_600.0  # 5,000 + 100 + 500
    assert row["roi"] == 2_578.6  # (150,000 − 5,600) / 5,600
    assert row["cost_per_call"] == 70.0
    assert row["visits"] == 0  # an offline channel: no website
    campaign = report(sessions, site, "campaign", NOVEMBER)["wechat-account"]
    assert (campaign["cost"], campaign["roi"]) == (5_600.0, 2_578.6)


def test_a_monthly_fee_is_spread_over_the_days_and_calls_it_belongs_to(
    sessions: sessionmaker[Session],
) -> None:
    site = money_site(sessions)
    record(sessions, site, 1, datetime(2026, 11, 2, 2, tzinfo=UTC))
    attribute(sessions)
    half = report(sessions, site, "source", (date(2026, 11, 1), date(2026, 11, 15)))
    assert half["wechat"]["cost"] == 300.0  # half of 100 + half of 500
    later = report(sessions, site, "source", (date(2026, 11, 16), date(2026, 11, 30)))
    assert later["wechat"]["calls"] == 0
    assert later["wechat"]["cost"] == 300.0  # no call to carry it: it stays with its label


def test_per_minute_and_per_answered_call_costs(sessions: sessionmaker[Session]) -> None:
    extra = """
[[site.cost]]
per_minute = "0.10"
[[site.cost]]
per_answered_call = "2"
"""
    site = money_site(sessions, extra)
    at = datetime(2026, 11, 2, 2, tzinfo=UTC)
    record(sessions, site, 1, at, duration=61)  # 2 minutes
    record(sessions, site, 2, at + timedelta(hours=1), duration=0, status="no-answer")
    record(sessions, site, 3, at + timedelta(hours=2), duration=90)  # 2 minutes, not 1.5
    attribute(sessions)
    row = report(sessions, site, "source", (date(2026, 11, 2), date(2026, 11, 2)))["wechat"]
    monthly = round(100 / 30 + 500 / 30, 2)
    assert row["cost"] == round(monthly + 0.40 + 2 * 2, 2)


def test_the_default_rule_qualifies_answered_calls_of_a_minute(
    sessions: sessionmaker[Session],
) -> None:
    site = money_site(sessions)
    at = datetime(2026, 11, 2, 2, tzinfo=UTC)
    record(sessions, site, 1, at, duration=60)
    record(sessions, site, 2, at, duration=59)
    attribute(sessions)
    assert (call(sessions, 1).outcome, call(sessions, 1).outcome_source) == ("qualified", "rule")
    assert call(sessions, 2).outcome == ""
    with sessions() as session:
        history = session.scalars(select(Outcome)).all()
    assert [(h.status, h.source, h.set_by) for h in history] == [
        ("qualified", "rule", "answered for 60 s or more")
    ]


RULES = """
[[site.rule]]
name = "press 1: the Baidu offer"
when = {{ ivr = "1" }}
set = {{ source = "baidu", medium = "cpc", campaign = "ivr-offer" }}

[[site.rule]]
when = {{ ivr = "9" }}
set = {{ status = "invalid" }}

[[site.rule]]
name = "long first call in office hours"
when = {{ answered = true, min_duration = 120, first_time = true, hour = "9-17" }}
set = {{ status = "lead", value = "200" }}

[[site.rule]]
when = {{ region = ["广东省*"], answered = true }}
set = {{ status = "qualified" }}
"""
BLOCK = 'block = ["13900000000"]'


def test_rules_first_match_wins_and_never_replace_an_explicit_outcome(
    sessions: sessionmaker[Session],
) -> None:
    site = money_site(sessions, RULES.format(), BLOCK)
    morning = datetime(2026, 11, 2, 2, tzinfo=UTC)  # 10:00 in Shanghai
    record(sessions, site, 1, morning, duration=150, caller="+8613812340001")
    record(sessions, site, 2, morning - timedelta(hours=6), duration=150, caller="+8613812340002")
    record(sessions, site, 3, morning, duration=30, caller="+8613902345678")  # 广东省韶关市
    record(sessions, site, 4, morning, duration=30, caller="+8613900000000")  # blocked
    record(sessions, site, 5, morning, duration=30, caller="+8613812340005", ivr="9")
    attribute(sessions)
    first = call(sessions, 1)
    assert (first.outcome, first.revenue, first.currency) == ("lead", 20_000, "CNY")
    assert call(sessions, 2).outcome == ""  # 04:00 in Shanghai: out of office hours
    assert call(sessions, 3).outcome == "qualified"
    assert (call(sessions, 4).outcome, call(sessions, 4).outcome_source) == ("spam", "rule")
    assert (call(sessions, 5).outcome, call(sessions, 5).outcome_source) == ("invalid", "ivr")
    with sessions.begin() as session:
        mine = session.get(Call, call(sessions, 3).id)
        assert mine is not None
        set_outcome(session, mine, OutcomeInput("sale", 99_00, "CNY"), "api", "crm", FAR)
    # A later report of the same call (a status callback) runs the rules again: they yield.
    record(sessions, site, 3, morning, duration=400, caller="+8613902345678")
    assert (call(sessions, 3).outcome, call(sessions, 3).revenue) == ("sale", 99_00)
    day = report(sessions, site, "source", (date(2026, 11, 2), date(2026, 11, 2)))["wechat"]
    assert (day["calls"], day["spam"], day["leads"], day["sales"]) == (4, 1, 2, 1)


def test_an_ivr_choice_relabels_a_call_no_visit_was_credited_with(
    sessions: sessionmaker[Session],
) -> None:
    site = money_site(sessions, RULES.format())
    record(sessions, site, 1, datetime(2026, 11, 2, 2, tzinfo=UTC), ivr="1", to="400-888-1234")
    attribute(sessions)
    labelled = call(sessions, 1)
    assert (labelled.source, labelled.medium, labelled.campaign) == ("baidu", "cpc", "ivr-offer")
    assert labelled.attribution_signals["label_rule"] == "press 1: the Baidu offer"
    assert labelled.ivr == "1"


def test_first_time_callers_are_counted_within_the_sites_window(
    sessions: sessionmaker[Session],
) -> None:
    site = money_site(sessions, head="unique_caller_days = 7")
    at = datetime(2026, 11, 2, 2, tzinfo=UTC)
    caller = "+8613812345678"
    for n, days in enumerate((0, 3, 11)):
        record(sessions, site, n, at + timedelta(days=days), caller=caller)
    attribute(sessions)
    assert [call(sessions, n).first_time for n in range(3)] == [True, False, True]


@pytest.mark.parametrize(
    ("touch", "credited"),
    [("last_non_direct", "baidu"), ("last", "direct"), ("first", "google")],
)
def test_touch_models_pick_the_visit_of_the_journey_a_call_credits(
    rt: Any, sessions: sessionmaker[Session], clock: Any, touch: str, credited: str
) -> None:
    load_toml(sessions, shop_toml().replace('country = "CN"', f'country = "CN"\ntouch = "{touch}"'))
    visitor = "visitor-journey"
    start_visit(rt, visitor, "https://shop.example.cn/?utm_source=google&utm_medium=cpc")
    clock.advance(3 * 3600)
    start_visit(rt, visitor, "https://shop.example.cn/?utm_source=baidu&utm_medium=cpc&kw=花")
    clock.advance(3 * 3600)
    for key in rt.stores.redis.scan_iter(f"*visitor:{visitor}"):  # the session lapsed (a TTL
        rt.stores.redis.delete(key)  # of Redis's own clock, which the test's does not move)
    direct = start_visit(rt, visitor, "https://shop.example.cn/")
    flush_history(rt.stores, clock.now)
    site = rt.sites.get("shop")
    shown = direct.numbers[0]
    call_record = CallRecord(
        "cdr",
        "c1",
        "+8613812345678",
        shown.number_e164,
        clock.now,
        "completed",
        90,
        extension=shown.extension or "",
    )
    with sessions.begin() as session:
        record_call(session, site, call_record, clock.now)
    flush_history(rt.stores, clock.now + timedelta(seconds=5))
    attribute(sessions, clock.now + timedelta(seconds=5))
    stored = call(sessions, 1)
    assert stored.visit_id == direct.visit  # the evidence: the visit that held the number
    assert stored.source == credited
    if touch != "last":
        assert stored.attribution_signals["touch_visit"] != direct.visit


def test_an_open_lead_is_valued_at_its_channels_revenue_per_lead(
    sessions: sessionmaker[Session],
) -> None:
    site = money_site(sessions)
    at = datetime(2026, 11, 2, 2, tzinfo=UTC)
    for n in range(4):
        record(sessions, site, n, at + timedelta(hours=n))
    attribute(sessions)
    with sessions.begin() as session:
        given = [OutcomeInput("sale", 1_000_00, "CNY"), OutcomeInput("lead"), OutcomeInput("none")]
        for n, outcome in enumerate(given):
            stored = session.scalars(select(Call).where(Call.provider_call_id == f"c{n}")).one()
            set_outcome(session, stored, outcome, "import", "orders.csv", FAR)
    row = report(sessions, site, "source", (date(2026, 11, 2), date(2026, 11, 2)))["wechat"]
    # leads: the sale, the lead and call 3 (qualified by the default rule): 1,000 over 3 leads;
    # two are still open.
    assert (row["leads"], row["sales"], row["revenue"]) == (3, 1, 1_000.0)
    assert row["estimated_value"] == round(2 * 1_000 / 3, 2)
    assert row["conversion_rate"] == 33.3


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ("[[site.rule]]\nwhen = { answered = 1 }\nset = { status = 'lead' }", "when.answered"),
        ("[[site.rule]]\nwhen = { colour = 'red' }\nset = { status = 'lead' }", "when.colour"),
        ("[[site.rule]]\nset = { status = 'won' }", "set.status"),
        ("[[site.rule]]\nset = { value = '10' }", "set.value"),
        ("[[site.rule]]\nwhen = { hour = '25' }\nset = { status = 'lead' }", "when.hour"),
        ("[[site.rule]]\nwhen = { ivr = '1' }", "set"),
        ("[[site.cost]]\nmonthly = '1'\nper_minute = '2'", "monthly"),
        ("[[site.cost]]\nmonthly = 'lots'", "monthly"),
        ("[[site.cost]]\nmonthly = '-5'", "monthly"),
        ("[[site.cost]]\nmonthly = '5'\npool = 'nope'", "pool"),
        ("[[site.cost]]\nmonthly = '5'\nsince = '2026-12-01'\nuntil = '2026-11-01'", "until"),
        ("touch = 'middle'", "touch"),
        ("unique_caller_days = 0", "unique_caller_days"),
        ("currency = 'yuan'", "currency"),
        ("block = ['not a number']", "block[0]"),
    ],
)
def test_bad_money_settings_are_named(extra: str, path: str) -> None:
    if extra.startswith("[["):
        text = MONEY.format(wechat=WECHAT, extra=extra, head="")
    else:
        text = MONEY.format(wechat=WECHAT, extra="", head=extra)
    with pytest.raises(ConfigError) as raised:
        parse_sites(text)
    assert any(field.endswith(path) for field in raised.value.fields), raised.value.fields


def test_an_offline_number_takes_a_label_not_a_target() -> None:
    text = MONEY.format(wechat=WECHAT, extra="", head="").replace(
        'campaign = "wechat-account"', 'campaign = "wechat-account"\ntarget = "400-888-1234"'
    )
    with pytest.raises(ConfigError) as raised:
        parse_sites(text)
    assert "site[money].source_number[0].source" in raised.value.fields


def test_money_settings_survive_an_export_and_load(sessions: sessionmaker[Session]) -> None:
    import tomli_w

    money_site(sessions, RULES.format(), "touch = 'first'\n" + BLOCK)
    with sessions() as session:
        exported = tomli_w.dumps(export_sites(session))
    again = parse_sites(exported)[0]
    head = "touch = 'first'\n" + BLOCK
    first = parse_sites(MONEY.format(wechat=WECHAT, extra=RULES.format(), head=head))
    assert again.money == first[0].money
    assert again.source_numbers == first[0].source_numbers


BAIDU_KEYWORDS = """数据生成时间：2026-11-03 08:00
日期,推广计划,推广单元,关键词,展现,点击,消费
2026-11-02,鲜花,玫瑰,玫瑰,1000,40,"1,200.00"
2026-11-02,鲜花,郁金香,郁金香,500,10,300.50
合计,--,--,--,1500,50,"1,500.50"
"""


def test_console_spend_meets_the_keywords_calls_in_the_report(
    rt: Any, sessions: sessionmaker[Session], clock: Any
) -> None:
    from dni.costs import import_costs

    load_toml(sessions, shop_toml())
    answer = start_visit(
        rt,
        "visitor-roses",
        "https://shop.example.cn/?utm_source=Baidu&utm_medium=cpc&utm_term=玫瑰",
    )
    flush_history(rt.stores, clock.now)
    site = rt.sites.get("shop")
    shown = answer.numbers[0]
    sale = CallRecord("cdr", "c1", "+8613812345678", shown.number_e164, clock.now, "completed", 90)
    with sessions.begin() as session:
        record_call(session, site, sale, clock.now)
    flush_history(rt.stores, clock.now + timedelta(seconds=5))
    attribute(sessions, clock.now + timedelta(seconds=5))
    with sessions.begin() as session:
        done = import_costs(session, site, BAIDU_KEYWORDS.encode("gbk"), "baidu", clock.now)
        assert (done.created, done.errors) == (2, [])
        sold = session.scalars(select(Call)).one()
        set_outcome(session, sold, OutcomeInput("sale", 6_000_00, "CNY"), "api", "crm", clock.now)
    rows = report(sessions, site, "keyword", (date(2026, 11, 2), date(2026, 11, 2)))
    roses, tulips = rows["玫瑰"], rows["郁金香"]
    assert (roses["calls"], roses["cost"], roses["revenue"]) == (1, 1_200.0, 6_000.0)
    assert roses["roi"] == 400.0  # (6,000 − 1,200) / 1,200
    assert (tulips["calls"], tulips["visits"], tulips["cost"], tulips["roi"]) == (
        0,
        0,
        300.5,
        -100.0,
    )
    assert (
        report(sessions, site, "channel", (date(2026, 11, 2), date(2026, 11, 2)))["baidu / cpc"][
            "cost"
        ]
        == 1_500.5
    )
    assert (
        report(sessions, site, "landing_page", (date(2026, 11, 2), date(2026, 11, 2)))[
            "https://shop.example.cn/"
        ]["cost"]
        is None
    )  # spend is not known by landing page


def test_spam_is_kept_out_of_every_other_column(sessions: sessionmaker[Session]) -> None:
    site = money_site(sessions, head=BLOCK)
    at = datetime(2026, 11, 2, 2, tzinfo=UTC)
    record(sessions, site, 1, at, caller="+8613900000000")  # blocked
    record(sessions, site, 2, at, caller="+8613812345678")
    attribute(sessions)
    row = report(sessions, site, "source", NOVEMBER)["wechat"]
    assert (row["calls"], row["answered"], row["leads"], row["spam"]) == (1, 1, 1, 1)
    assert row["cost_per_call"] == 600.0  # both monthly fees, carried by the one real call


def test_an_explicit_outcome_set_while_the_rules_decide_is_kept(
    sessions: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    site = money_site(sessions)
    record(sessions, site, 1, datetime(2026, 11, 2, 2, tzinfo=UTC), duration=90)
    attribute(sessions)
    assert call(sessions, 1).outcome == "qualified"
    with sessions.begin() as session:  # the call turns out shorter: the rule would undo it
        session.get_one(Call, call(sessions, 1).id).duration_seconds = 30
    real = dni.outcomes.update_calls

    def crm_answers_first(session: Session, rows: Any, *args: Any) -> int:
        """Between the rules' read and their write, the CRM sells the call."""
        if rows and "outcome" in rows[0]:
            with sessions.begin() as other:
                sold = other.get_one(Call, rows[0]["id"])
                set_outcome(other, sold, OutcomeInput("sale", 500_00, "CNY"), "api", "crm", FAR)
        return real(session, rows, *args)

    monkeypatch.setattr(dni.outcomes, "update_calls", crm_answers_first)
    with sessions.begin() as session:
        assert apply_rules(session, RuleBook.of(site), [call(sessions, 1).id], FAR) == 0
    stored = call(sessions, 1)
    assert (stored.outcome, stored.revenue, stored.outcome_source) == ("sale", 500_00, "api")
    with sessions() as session:
        history = session.execute(select(Outcome.status, Outcome.source).order_by(Outcome.id))
        assert list(history) == [("qualified", "rule"), ("sale", "api")]


def visit(
    session: Session, site_id: int, visit_id: str, visitor: str, day: int, source: str
) -> None:
    at = datetime(2026, 11, day, 2, tzinfo=UTC)
    session.add(
        Visit(
            id=visit_id,
            site_id=site_id,
            visitor_id=visitor,
            started_at=at,
            last_seen_at=at,
            landing_page="https://shop.example.cn/",
            source=source,
            medium="cpc" if source != "direct" else "",
        )
    )


def test_a_journey_holds_its_own_sites_visits_up_to_the_credited_one(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        shop, other = Site(key="shop"), Site(key="other")
        session.add_all([shop, other])
        session.flush()
        visit(session, other.id, "o-1", "shared", 1, "google")  # same visitor id, other site
        visit(session, shop.id, "s-1", "shared", 2, "baidu")
        visit(session, shop.id, "s-2", "shared", 3, "direct")
        visit(session, shop.id, "s-3", "shared", 4, "sogou")  # after the credited visit
        visit(session, shop.id, "e-1", "", 2, "baidu")  # no visitor id: strangers
        visit(session, shop.id, "e-2", "", 3, "direct")
    with sessions() as session:
        journeys = load_journeys(session, ["s-2", "o-1", "e-2"])
    assert {key: [v.id for v in found] for key, found in journeys.items()} == {
        "s-2": ["s-1", "s-2"],
        "o-1": ["o-1"],
        "e-2": ["e-2"],
    }


@pytest.mark.parametrize(
    "rate", ["per_minute = '0.125'", "monthly = '100.005'", "per_minute = 0.001"]
)
def test_a_fixed_cost_finer_than_a_fen_is_refused_by_name(rate: str) -> None:
    extra = f"[[site.cost]]\nname = 'carrier'\n{rate}\n[[site.cost]]\nper_minute = 'x'"
    with pytest.raises(ConfigError) as raised:
        parse_sites(MONEY.format(wechat=WECHAT, extra=extra, head=""))
    kind = rate.split(" ")[0]
    assert raised.value.fields[f"site[money].cost[2].{kind}"] == (
        "finer than CNY's smallest unit (0.01): dni keeps whole minor units"
    )
    assert "site[money].cost[3].per_minute" in raised.value.fields  # every error is named


def test_a_rate_with_trailing_zeros_is_exact(sessions: sessionmaker[Session]) -> None:
    site = money_site(sessions, "[[site.cost]]\nper_minute = '0.120'")
    assert site.fixed_costs[-1]["amount"] == 12
