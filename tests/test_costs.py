"""Costs: console exports through presets, idempotent upserts, per-line errors, manual entries."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dni.cli import main
from dni.costs import CostReport, add_cost, import_costs
from dni.errors import InvalidInput
from dni.models import Cost
from dni.providers.csvfile import MAX_FILE_BYTES, read_file
from dni.sites import read_site

pytestmark = pytest.mark.usefixtures("shop")
NOW = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)

# A 百度营销 keyword report as the console writes it: GBK, eight lines before the header, a
# keyword bought in two units of one plan, a zero-cost keyword and a total at the end.
BAIDU_KEYWORDS = """数据生成时间：2026-11-03 10:00,,,,,,,,,
数据生成条件：,,,,,,,,,
1. 时间范围：20261101-20261102,,,,,,,,,
2. 时间单位：分日,,,,,,,,,
3. 推广设备：移动设备，计算机,,,,,,,,,
4. 投放网络：全部,,,,,,,,,
5. 投放物料：全部,,,,,,,,,
,,,,,,,,,
日期,账户,推广计划,推广单元,关键词,展现,点击,消费,点击率,平均点击价格
2026-11-01,shop-bj,鲜花速递,玫瑰,鲜花,1200,30,45.60,2.50%,1.52
2026-11-01,shop-bj,鲜花速递,同城,鲜花,800,10,14.40,1.25%,1.44
2026-11-01,shop-bj,鲜花速递,玫瑰,送花上门,300,0,0.00,0.00%,0.00
2026-11-02,shop-bj,鲜花速递,玫瑰,鲜花,1000,20,"1,030.5",2.00%,1.53
总计,--,--,--,--,3300,60,"1,090.50",1.82%,1.51
"""


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.setenv("DNI_DATABASE_URL", database_url)


def stored(sessions: sessionmaker[Session]) -> dict[tuple[str, ...], int]:
    """(day, source, medium, campaign, keyword, origin) → amount of every cost row."""
    with sessions() as session:
        return {
            (str(c.day), c.source, c.medium, c.campaign, c.keyword, c.origin): c.amount
            for c in session.scalars(select(Cost))
        }


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["costs", *args])


def imported(
    sessions: sessionmaker[Session],
    data: bytes,
    preset: str,
    source: str | None = None,
    medium: str | None = None,
    mapping: dict[str, str] | None = None,
) -> CostReport:
    with sessions.begin() as session:
        site = read_site(session, "shop")
        assert site is not None
        return import_costs(
            session, site, data, preset, NOW, source=source, medium=medium, mapping=mapping
        )


@pytest.mark.usefixtures("env")
def test_gbk_baidu_keyword_report_sums_units_and_imports_once(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    file = tmp_path / "关键词报告.csv"
    file.write_bytes(BAIDU_KEYWORDS.replace("\n", "\r\n").encode("gbk"))  # as Windows saves it
    result = run("import", str(file), "--site", "shop", "--preset", "baidu")
    assert result.exit_code == 0, result.output
    assert "imported 3 row(s): 3 new, 0 replaced, 0 unchanged; 0 bad line(s)" in result.output
    assert stored(sessions) == {
        ("2026-11-01", "baidu", "cpc", "鲜花速递", "鲜花", "baidu"): 6000,  # 45.60 + 14.40
        ("2026-11-01", "baidu", "cpc", "鲜花速递", "送花上门", "baidu"): 0,
        ("2026-11-02", "baidu", "cpc", "鲜花速递", "鲜花", "baidu"): 103050,
    }
    again = run("import", str(file), "--site", "shop", "--preset", "baidu")
    assert "imported 3 row(s): 0 new, 0 replaced, 3 unchanged; 0 bad line(s)" in again.output
    assert len(stored(sessions)) == 3


@pytest.mark.usefixtures("env")
def test_a_corrected_report_replaces_amounts(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    file = tmp_path / "report.csv"
    file.write_bytes(BAIDU_KEYWORDS.encode("gbk"))
    run("import", str(file), "--site", "shop", "--preset", "baidu")
    file.write_bytes(BAIDU_KEYWORDS.replace('"1,030.5"', "999.99").encode("gbk"))
    result = run("import", str(file), "--site", "shop", "--preset", "baidu")
    assert "imported 3 row(s): 0 new, 1 replaced, 2 unchanged" in result.output
    assert stored(sessions)[("2026-11-02", "baidu", "cpc", "鲜花速递", "鲜花", "baidu")] == 99999


@pytest.mark.usefixtures("env")
def test_dry_run_writes_nothing(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    file = tmp_path / "report.csv"
    file.write_bytes(BAIDU_KEYWORDS.encode("gbk"))
    result = run("import", str(file), "--site", "shop", "--preset", "baidu", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would import 3 row(s): 3 new" in result.output
    assert stored(sessions) == {}


@pytest.mark.parametrize(
    ("preset", "text", "key", "amount"),
    [
        (  # a plan report: no keyword column, so the keyword is ""
            "baidu",
            "日期,小时,账户,推广计划,展现,点击,消费,点击率,平均点击价格\n"
            "2026-11-01,9,shop,品牌词,10,2,3.50,20%,1.75\n"
            "2026-11-01,10,shop,品牌词,10,2,1.50,20%,0.75\n",
            ("2026-11-01", "baidu", "cpc", "品牌词", "", "baidu"),
            500,
        ),
        (  # the API download's names, its hourly day written "10时"
            "baidu",
            '"时间",账户ID,账户,推广计划ID,推广计划,推广单元ID,推广单元,关键词ID,关键词,展现量,'
            "点击量,消费,点击率,平均点击价格\n"
            "2026-11-01 10时,1,shop,2,计划A,3,单元,4,玫瑰花,5,1,2.00,20%,2.00\n",
            ("2026-11-01", "baidu", "cpc", "计划A", "玫瑰花", "baidu"),
            200,
        ),
        (  # 巨量引擎: 广告组 is its campaign; 总花费 its spend
            "oceanengine",
            "时间,广告计划id,广告计划,广告组id,广告组,展示数,点击数,点击率,平均点击价格,"
            "平均千次展现费用,总花费\n"
            "2026-11-01,11,计划-春季,22,组-鲜花,1000,10,1%,0.5,5,12.34\n",
            ("2026-11-01", "oceanengine", "cpc", "组-鲜花", "", "oceanengine"),
            1234,
        ),
        (  # the upgraded 巨量广告: 项目 and 消耗
            "oceanengine",
            "日期,项目名称,广告名称,消耗\n2026/11/1,项目一,广告一,8\n",
            ("2026-11-01", "oceanengine", "cpc", "项目一", "", "oceanengine"),
            800,
        ),
        (
            "tencent",
            "日期,推广计划名称,广告名称,曝光次数,点击次数,花费(元)\n"
            "2026年11月01日,朋友圈-鲜花,广告1,100,3,6.60\n",
            ("2026-11-01", "tencent", "cpc", "朋友圈-鲜花", "", "tencent"),
            660,
        ),
        (  # Google Ads: title lines, match-type punctuation, quoted thousands, totals
            "google-ads",
            "Search keyword report\n"
            '"November 1, 2026 - November 1, 2026"\n'
            "Search keyword,Match type,Campaign,Ad group,Day,Currency code,Cost,Impr.,Clicks\n"
            '[fresh flowers],Exact match,Flowers - Search,Roses,2026-11-01,CNY,"1,234.50",9,1\n'
            'Total: Account,--,--,--,--,CNY,"1,234.50",9,1\n'
            'Total: Search,--,--,--,--,CNY,"1,234.50",9,1\n',
            ("2026-11-01", "google", "cpc", "Flowers - Search", "fresh flowers", "google-ads"),
            123450,
        ),
        (
            "generic",
            "day,source,medium,campaign,keyword,cost,currency\n"
            "2026-11-01, WeChat ,Social,公众号-11月,,5000,CNY\n",
            ("2026-11-01", "wechat", "social", "公众号-11月", "", "generic"),
            500000,
        ),
    ],
)
def test_each_preset_reads_its_console_export(
    sessions: sessionmaker[Session],
    preset: str,
    text: str,
    key: tuple[str, ...],
    amount: int,
) -> None:
    report = imported(sessions, text.encode("gbk" if preset != "google-ads" else "utf-8"), preset)
    assert report.errors == []
    assert stored(sessions) == {key: amount}


def test_google_ads_excel_csv_is_utf16_with_tabs(sessions: sessionmaker[Session]) -> None:
    text = (
        "Campaign report\n"
        "November 1, 2026 - November 2, 2026\n"
        "Campaign\tDay\tCurrency code\tCost\n"
        "Brand\tNov 1, 2026\tCNY\t10.00\n"
        "Brand\t2026-11-02\tCNY\t2.5\n"
        "Total: Account\t--\tCNY\t12.50\n"
    )
    report = imported(sessions, text.encode("utf-16"), "google-ads")
    assert (report.created, report.errors) == (2, [])
    assert stored(sessions) == {
        ("2026-11-01", "google", "cpc", "Brand", "", "google-ads"): 1000,
        ("2026-11-02", "google", "cpc", "Brand", "", "google-ads"): 250,
    }


def test_mapped_columns_and_overridden_channel(sessions: sessionmaker[Session]) -> None:
    text = "日期,活动,金额\n2026-11-01,地铁2号线,3000\n"
    report = imported(
        sessions,
        text.encode("utf-8"),
        "generic",
        mapping={"day": "日期", "campaign": "活动", "cost": "金额"},
        source="Metro",
        medium="OFFLINE",
    )
    assert report.errors == []
    assert stored(sessions) == {
        ("2026-11-01", "metro", "offline", "地铁2号线", "", "generic"): 300000
    }


@pytest.mark.usefixtures("env")
def test_bad_lines_are_reported_and_good_lines_kept(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    long_name = "x" * 201
    lines = [
        "day,source,medium,campaign,keyword,cost,currency",
        "2026-11-01,baidu,cpc,good,鲜花,10,",
        "yesterday,baidu,cpc,a,b,10,",
        "1999-12-31,baidu,cpc,a,b,10,",
        "2101-01-01,baidu,cpc,a,b,10,",
        "2026-11-01,baidu,cpc,a,b,-5,",
        "2026-11-01,baidu,cpc,a,b,1e30,",
        "2026-11-01,baidu,cpc,a,b,ten,",
        "2026-11-01,baidu,cpc,a,b,10,USD",
        f"2026-11-01,baidu,cpc,{long_name},b,10,",
        "2026-11-01,baidu,cpc,bad\x01name,b,10,",
        "2026-11-01,,cpc,a,b,10,",
        "2026-11-01,baidu,cpc,a,b,,",
        "20261101-20261130,baidu,cpc,a,b,10,",
        '2026-11-02,baidu,cpc,"=HYPERLINK(""http://x"")",@kw,0,CNY',
    ]
    file = tmp_path / "costs.csv"
    file.write_text("\n".join(lines) + "\n")
    result = run("import", str(file), "--site", "shop", "--preset", "generic")
    assert result.exit_code == 2
    assert "imported 2 row(s): 2 new, 0 replaced, 0 unchanged; 12 bad line(s)" in result.output
    for expected in (
        "line 3: day: not a date: 'yesterday'",
        "line 4: day: 1999-12-31 is not from 2000-01-01 to 2100-12-31",
        "line 5: day: 2101-01-01 is not from 2000-01-01 to 2100-12-31",
        "line 6: cost: must not be negative",
        "line 7: cost: 1e30 is more than any amount dni keeps",
        "line 8: cost: not an amount: 'ten'",
        "line 9: currency: the site keeps CNY, not USD",
        "line 10: campaign: must be at most 200 characters",
        "line 11: campaign: must not contain control characters",
        "line 12: source: required (a source column or --source)",
        "line 13: cost: required",
        "line 14: day: '20261101-20261130' is a date range; export the report by day",
    ):
        assert expected in result.output
    assert stored(sessions) == {
        ("2026-11-01", "baidu", "cpc", "good", "鲜花", "generic"): 1000,
        # A formula is only text here; CSV exports neutralise it when they write it out.
        ("2026-11-02", "baidu", "cpc", '=HYPERLINK("http://x")', "@kw", "generic"): 0,
    }


def test_a_day_summed_past_the_largest_amount_is_a_line_error(
    sessions: sessionmaker[Session],
) -> None:
    text = "day,source,cost\n2026-11-01,a,9000000000000\n2026-11-01,a,9000000000000\n"
    report = imported(sessions, text.encode(), "generic")
    assert report.errors == ["line 3: cost: the day's sum is more than dni keeps"]
    assert stored(sessions) == {("2026-11-01", "a", "", "", "", "generic"): 900000000000000}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"  \r\n\n", "the file is empty"),
        (bytes(range(256)) * 64, "the file is neither UTF-8 nor GBK"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00", "no header with a day column"),
        (b"\xff\xfe\x00\xd8", "the file is not valid UTF-16"),
        ("日期,消费\n".encode() + b"\x81\x20\xff", "neither UTF-8 nor GBK"),
        ("日期,账户,消费\n".encode("gbk"), ""),  # header only: nothing to import, no error
    ],
)
def test_files_that_cannot_be_read_are_refused_whole(
    sessions: sessionmaker[Session], data: bytes, message: str
) -> None:
    if not message:
        assert imported(sessions, data, "baidu").rows == 0
        return
    with pytest.raises(InvalidInput, match=message):
        imported(sessions, data, "baidu")
    assert stored(sessions) == {}


def test_a_50_mb_line_is_one_bad_line(sessions: sessionmaker[Session]) -> None:
    data = (
        b"day,source,cost\n2026-11-01,a,1\n2026-11-02,"
        + b"x" * (50 * 1024 * 1024)
        + b",1\n2026-11-03,a,3\n"
    )
    report = imported(sessions, data, "generic")
    assert len(report.errors) == 1
    assert report.errors[0].startswith("line 3: unreadable: field larger than field limit")
    assert sorted(k[0] for k in stored(sessions)) == ["2026-11-01", "2026-11-03"]


def test_files_over_100_mb_are_refused_before_reading(tmp_path: Path) -> None:
    file = tmp_path / "huge.csv"
    with file.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing is written to disk
    with pytest.raises(InvalidInput, match="larger than 100 MB"):
        read_file(file)


@pytest.mark.usefixtures("env")
def test_unknown_preset_and_map_are_usage_errors(tmp_path: Path) -> None:
    file = tmp_path / "costs.csv"
    file.write_text("day,cost\n")
    result = run("import", str(file), "--site", "shop", "--preset", "bing")
    assert result.exit_code == 2
    assert "'bing'; known: baidu, oceanengine, tencent, google-ads, generic" in result.output
    result = run("import", str(file), "--site", "shop", "--preset", "generic", "--map", "spend=x")
    assert result.exit_code == 1
    assert "--map names unknown columns spend" in result.output
    result = run("import", str(tmp_path / "costs.csv"), "--site", "nope", "--preset", "baidu")
    assert "unknown site 'nope'" in result.output
    file.write_bytes(b"")
    result = run("import", str(file), "--site", "shop", "--preset", "baidu")
    assert (result.exit_code, result.output) == (1, "Error: the file is empty\n")


@pytest.mark.usefixtures("env")
def test_costs_add_replaces_the_same_key_and_list_prints_daily_totals(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    args = ["--site", "shop", "--day", "2026-11-01", "--source", "Radio", "--medium", "offline"]
    first = run("add", *args, "--amount", "300", "--campaign", "fm915", "--note", "invoice 7")
    assert first.exit_code == 0, first.output
    assert "created 300 CNY on 2026-11-01 for Radio/offline" in first.output
    again = run("add", *args, "--amount", "250.5", "--campaign", "fm915")
    assert again.output.startswith("replaced")
    assert stored(sessions) == {("2026-11-01", "radio", "offline", "fm915", "", "manual"): 25050}
    same = run("add", *args, "--amount", "250.50", "--campaign", "fm915")
    assert same.output.startswith("unchanged")

    file = tmp_path / "report.csv"
    file.write_bytes(BAIDU_KEYWORDS.encode("gbk"))
    run("import", str(file), "--site", "shop", "--preset", "baidu")
    listed = run("list", "--site", "shop", "--from", "2026-11-01", "--to", "2026-11-01")
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines() == [
        "2026-11-01  baidu/cpc  鲜花速递  60.00 CNY",
        "2026-11-01  radio/offline  fm915  250.50 CNY",
        "2 row(s)",
    ]


@pytest.mark.usefixtures("env")
def test_costs_add_refuses_bad_values() -> None:
    base = ["add", "--site", "shop", "--day", "2026-11-01", "--medium", "offline"]
    bad_amount = run(*base, "--source", "radio", "--amount", "lots")
    assert bad_amount.exit_code == 2
    assert "not an amount: 'lots'" in bad_amount.output
    negative = run(*base, "--source", "radio", "--amount", "-1")
    assert "amount: must not be negative" in negative.output
    blank = run(*base, "--source", " ", "--amount", "1")
    assert "source: required" in blank.output
    old = run("add", "--site", "shop", "--day", "1999-01-01", "--medium", "m", "--source", "s")
    assert old.exit_code == 2  # --amount missing: click says so before anything is read
    ancient = run(*base[:4], "1999-01-01", "--medium", "m", "--source", "s", "--amount", "1")
    assert "day: must be from 2000-01-01 to 2100-12-31" in ancient.output


def test_manual_and_imported_costs_of_one_key_are_kept_apart(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        site = read_site(session, "shop")
        assert site is not None
        add_cost(session, site, date(2026, 11, 1), 100, "baidu", "cpc", "", "", "", NOW)
    imported(sessions, b"day,source,medium,cost\n2026-11-01,baidu,cpc,2\n", "generic")
    assert stored(sessions) == {
        ("2026-11-01", "baidu", "cpc", "", "", "manual"): 100,
        ("2026-11-01", "baidu", "cpc", "", "", "generic"): 200,
    }
