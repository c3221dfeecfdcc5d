"""Ad spend and offline costs per day, source, medium, campaign and keyword (DESIGN §8).

Owns `dni costs import` (console exports read through presets: Baidu, Ocean Engine, Tencent
Ads, Google Ads, or a generic mapped CSV), `dni costs add` (manual entries for offline channels)
and the daily totals `dni costs list` prints. Rows are upserted on the `Cost` unique key, so
importing a file again changes nothing; the caller owns the transaction (one per file).

Export columns and where they were checked (docs/costs.md keeps the same table):
- baidu: 百度营销 search reports, GBK CSV with up to 8 "数据生成时间/数据生成条件" lines before
  the header, e.g. `日期,账户,推广计划,推广单元,关键词,…,展现,点击,消费,点击率,平均点击价格`,
  hourly reports add `小时`, API downloads write `时间,…,推广计划,推广单元,关键词,…,消费`
  (verified in import code and upload instructions for Baidu exports found in public
  repositories). 计划名称/计划, 花费/总花费/消耗 are accepted variants.
- oceanengine: 巨量引擎 (今日头条) export `时间,广告计划id,广告计划,广告组id,广告组,展示数,
  点击数,…,总花费` (verified as above); 广告组 is its campaign level, the upgraded 巨量广告's is
  项目; 消耗 is the console's own word for spend. Not verified: 项目/项目名称 headers.
- tencent: 腾讯广告 reports name spend 花费 and the day 日期 (seen in code reading its data);
  推广计划/计划名称/广告名称 and 消耗/消费 are accepted, NOT verified against a real export.
- google-ads: a title line and a date-range line before `Day,Campaign,Ad group,Search keyword,
  …,Currency code,Cost`, `Total: …` rows at the end, "Excel CSV" as UTF-16 with tabs (seen in
  public parsers and fixtures of Google Ads downloads); Chinese UI names are NOT verified.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dni.errors import InvalidInput
from dni.fields import text_problem
from dni.models import Cost
from dni.money import CURRENCY, MAX_MINOR, to_minor
from dni.providers.csvfile import check_size, decode
from dni.sites import SiteConfig

MAX_TEXT = 200  # the columns' width
FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(2100, 12, 31)
# Consoles put report titles, date ranges and filter lines above the header (Baidu up to 8).
HEADER_SEARCH_LINES = 30
# Existing rows are looked up for a batch of days at a time, keeping IN lists short.
DAYS_PER_QUERY = 31
FIELDS = ("day", "source", "medium", "campaign", "keyword", "cost", "currency")
SUMMARY = re.compile(r"^(合计|总计|汇总|小计|total)", re.IGNORECASE)
# "2026-11-01", "2026/1/5", "2026年11月1日", with anything after it (an hour, "10时").
DAY = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})(?:日|(?=\D)|$)")
COMPACT_DAY = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
# A report totalled over its range (Baidu's 时间单位：合计) writes "20261101-20261130": refused,
# never read as its first day.
DAY_RANGE = re.compile(r"\d{4}\D{0,3}\d{1,2}\D{0,3}\d{1,2}\s*[-~至到—]\s*\d{4}\D{0,3}\d{1,2}")
ENGLISH_DAY = ("%b %d, %Y", "%B %d, %Y", "%d %b %Y", "%d %B %Y")
# A unit in the header ("消费(元)", "Cost (CNY)") does not change what the column is.
HEADER_UNIT = re.compile(r"\s*[(（]\s*(元|¥|￥|[a-z]{3})\s*[)）]$")
# Consoles print "--" where a value does not apply (an account row's plan, a day without data).
NOT_APPLICABLE = frozenset({"--", "-", "—"})


@dataclass(frozen=True)
class CostPreset:
    """How one console names its columns: accepted header names per field, first match wins."""

    name: str
    source: str
    medium: str
    columns: Mapping[str, tuple[str, ...]]
    # Google writes a keyword's match type around it: [exact], "phrase", +broad.
    strip_match_type: bool = False


PRESETS: dict[str, CostPreset] = {
    preset.name: preset
    for preset in (
        CostPreset(
            "baidu",
            "baidu",
            "cpc",
            {
                "day": ("日期", "时间", "date"),
                "campaign": ("推广计划", "推广计划名称", "计划名称", "计划", "计划名"),
                "keyword": ("关键词", "关键词名称"),
                "cost": ("消费", "花费", "总花费", "消耗", "总费用"),
            },
        ),
        CostPreset(
            "oceanengine",
            "oceanengine",
            "cpc",
            {
                "day": ("时间", "日期", "数据起始时间"),
                "campaign": (
                    "广告组",
                    "广告组名称",
                    "项目",
                    "项目名称",
                    "广告计划",
                    "广告计划名称",
                    "计划名称",
                ),
                "keyword": ("关键词",),
                "cost": ("消耗", "总花费", "花费", "消费"),
            },
        ),
        CostPreset(
            "tencent",
            "tencent",
            "cpc",
            {
                "day": ("日期", "时间"),
                "campaign": ("推广计划", "推广计划名称", "计划名称", "广告", "广告名称"),
                "keyword": ("关键词",),
                "cost": ("花费", "消耗", "消费", "总花费"),
            },
        ),
        CostPreset(
            "google-ads",
            "google",
            "cpc",
            {
                "day": ("day", "date", "天", "日期"),
                "campaign": ("campaign", "campaign name", "广告系列"),
                "keyword": ("search keyword", "keyword", "搜索关键字", "关键字"),
                "cost": ("cost", "费用"),
                "currency": ("currency code", "currency", "货币代码"),
            },
            strip_match_type=True,
        ),
        CostPreset(
            "generic",
            "",
            "",
            {name: (name,) for name in FIELDS},
        ),
    )
}


@dataclass
class CostReport:
    """What an import did: cost rows written by kind, and the lines it refused."""

    created: int = 0
    replaced: int = 0
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.created + self.replaced + self.unchanged


@dataclass(frozen=True)
class CostKey:
    day: date
    source: str
    medium: str
    campaign: str
    keyword: str


@dataclass(frozen=True)
class DailyTotal:
    day: date
    source: str
    medium: str
    campaign: str
    amount: int


class LineError(Exception):
    """One line's problem, as "column: why"."""


def import_costs(
    session: Session,
    site: SiteConfig,
    data: bytes,
    preset: str,
    now: datetime,
    *,
    source: str | None = None,
    medium: str | None = None,
    mapping: Mapping[str, str] | None = None,
    note: str = "",
) -> CostReport:
    """Upsert a report's daily spend; lines with the same key are summed first.

    A bad line is reported as "line N: column: why" and never stops the good ones; the file as
    a whole is refused (InvalidInput) when it is empty, too large, undecodable or headerless.
    """
    chosen = _preset(preset, mapping or {})
    check_size(data)
    if not data.strip():
        raise InvalidInput("the file is empty", {"file": "empty"})
    lines = _decode(data).splitlines(keepends=True)
    first_line, delimiter, columns = _find_header(lines[:HEADER_SEARCH_LINES], chosen)
    fixed_source = _fixed(source, "--source", chosen.source)
    fixed_medium = _fixed(medium, "--medium", chosen.medium)

    report = CostReport()
    sums: dict[CostKey, int] = {}
    reader = csv.reader(io.StringIO("".join(lines[first_line:])), delimiter=delimiter)
    next(reader, None)  # the header, read already
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            report.errors.append(f"line {first_line + reader.line_num}: unreadable: {exc}")
            continue
        line = first_line + reader.line_num
        try:
            parsed = _parse_line(cells, columns, chosen, site, fixed_source, fixed_medium)
            if parsed is None:
                continue
            key, amount = parsed
            total = sums.get(key, 0) + amount
            if total > MAX_MINOR:
                raise LineError(f"{columns['cost'][1]}: the day's sum is more than dni keeps")
        except LineError as error:
            report.errors.append(f"line {line}: {error}")
            continue
        sums[key] = total
    _upsert(session, site, chosen.name, sums, note, now, report)
    return report


def add_cost(
    session: Session,
    site: SiteConfig,
    day: date,
    amount_minor: int,
    source: str,
    medium: str,
    campaign: str,
    keyword: str,
    note: str,
    now: datetime,
) -> str:
    """Set one manual cost (origin "manual"); the same key again replaces its amount.

    Returns "created", "replaced" or "unchanged"; InvalidInput names each bad field.
    """
    problems: dict[str, str] = {}
    if not FIRST_DAY <= day <= LAST_DAY:
        problems["day"] = f"must be from {FIRST_DAY} to {LAST_DAY}"
    if not 0 <= amount_minor <= MAX_MINOR:
        problems["amount"] = "must not be negative" if amount_minor < 0 else "is too large"
    values = {"source": source, "medium": medium, "campaign": campaign, "keyword": keyword}
    for name, value in values.items():
        try:
            values[name] = _text(value, name, lower=name in ("source", "medium"))
        except LineError as error:
            problems[name] = str(error).removeprefix(f"{name}: ")
    if not values["source"] and "source" not in problems:
        problems["source"] = "required"
    note_problem = text_problem(note)
    if note_problem or len(note) > MAX_TEXT:
        problems["note"] = note_problem or f"must be at most {MAX_TEXT} characters"
    if problems:
        raise InvalidInput("invalid cost", problems)
    key = CostKey(day, values["source"], values["medium"], values["campaign"], values["keyword"])
    report = CostReport()
    _upsert(session, site, "manual", {key: amount_minor}, note, now, report)
    return "created" if report.created else "replaced" if report.replaced else "unchanged"


def daily_totals(session: Session, site_id: int, first: date, last: date) -> list[DailyTotal]:
    """Spend per day, source, medium and campaign from `first` to `last` (keywords and origins
    summed), ordered by day then channel."""
    group = (Cost.day, Cost.source, Cost.medium, Cost.campaign)
    rows = session.execute(
        select(*group, func.sum(Cost.amount))
        .where(Cost.site_id == site_id, Cost.day >= first, Cost.day <= last)
        .group_by(*group)
        .order_by(*group)
    )
    return [DailyTotal(d, s, m, c, int(total)) for d, s, m, c, total in rows]


def _preset(name: str, mapping: Mapping[str, str]) -> CostPreset:
    preset = PRESETS.get(name)
    if preset is None:
        known = ", ".join(PRESETS)
        raise InvalidInput(f"unknown preset {name!r}; known: {known}", {"preset": name})
    unknown = sorted(set(mapping) - set(FIELDS))
    if unknown:
        raise InvalidInput(
            f"--map names unknown columns {', '.join(unknown)}; ours are {', '.join(FIELDS)}",
            {"map": ", ".join(unknown)},
        )
    if not mapping:
        return preset
    columns = dict(preset.columns)
    for ours, theirs in mapping.items():
        columns[ours] = (theirs, *columns.get(ours, ()))
    return CostPreset(preset.name, preset.source, preset.medium, columns, preset.strip_match_type)


def _decode(data: bytes) -> str:
    # Google Ads' "Excel CSV" is UTF-16 (little-endian, with a BOM) and tab-separated.
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise InvalidInput("the file is not valid UTF-16", {"file": "encoding"}) from None
    return decode(data)


def _header_name(cell: str) -> str:
    name = " ".join(cell.replace("\ufeff", "").split()).lower()
    return HEADER_UNIT.sub("", name)


def _find_header(
    lines: Sequence[str], preset: CostPreset
) -> tuple[int, str, dict[str, tuple[int, str]]]:
    """(index of the header line, delimiter, field → (cell index, header as written))."""
    wanted = {ours: [_header_name(n) for n in names] for ours, names in preset.columns.items()}
    for index, raw in enumerate(lines):
        line = raw.rstrip("\r\n")
        for delimiter in (",", "\t", ";"):
            if delimiter not in line:
                continue
            try:
                cells = next(csv.reader([line], delimiter=delimiter), [])
            except csv.Error:
                continue
            names = [_header_name(c) for c in cells]
            found: dict[str, tuple[int, str]] = {}
            for ours, accepted in wanted.items():
                at = next((names.index(n) for n in accepted if n in names), None)
                if at is not None:
                    found[ours] = (at, cells[at].strip().replace("\ufeff", ""))
            if "day" in found and "cost" in found:
                return index, delimiter, found
    day = "/".join(preset.columns["day"])
    cost = "/".join(preset.columns["cost"])
    raise InvalidInput(
        f"no header with a day column ({day}) and a cost column ({cost}) in the first "
        f"{HEADER_SEARCH_LINES} lines: is this a {preset.name} export? (--preset, --map)",
        {"file": "no header"},
    )


def _fixed(option: str | None, flag: str, default: str) -> str | None:
    """The source or medium every line gets: the option, else the preset's (None: per line)."""
    value = default if option is None else option
    if not value:
        return None
    try:
        return _text(value, flag, lower=True)
    except LineError as error:
        raise InvalidInput(str(error), {flag: str(error)}) from None


def _text(value: str, column: str, *, lower: bool = False) -> str:
    value = value.strip()
    if value in NOT_APPLICABLE:
        return ""
    problem = text_problem(value)
    if problem:
        raise LineError(f"{column}: {problem}")
    if len(value) > MAX_TEXT:
        raise LineError(f"{column}: must be at most {MAX_TEXT} characters")
    return value.lower() if lower else value


def _day(raw: str, column: str) -> date:
    value = raw.strip()
    if DAY_RANGE.search(value):
        raise LineError(f"{column}: {value[:40]!r} is a date range; export the report by day")
    found: date | None = None
    try:
        match = DAY.match(value) or COMPACT_DAY.match(value)
        if match:
            found = date(int(match[1]), int(match[2]), int(match[3]))
        else:
            for pattern in ENGLISH_DAY:
                try:
                    found = datetime.strptime(value, pattern).date()
                    break
                except ValueError:
                    continue
    except ValueError:
        found = None
    if found is None:
        raise LineError(f"{column}: not a date: {value[:40]!r}" if value else f"{column}: required")
    if not FIRST_DAY <= found <= LAST_DAY:
        raise LineError(f"{column}: {found} is not from {FIRST_DAY} to {LAST_DAY}")
    return found


def _parse_line(
    cells: Sequence[str],
    columns: Mapping[str, tuple[int, str]],
    preset: CostPreset,
    site: SiteConfig,
    source: str | None,
    medium: str | None,
) -> tuple[CostKey, int] | None:
    """The key and amount of one line; None for a blank or summary line."""
    first = next((c.strip() for c in cells if c.strip()), "")
    if not first:
        return None

    def cell(ours: str) -> tuple[str, str]:
        at, header = columns.get(ours, (-1, ours))
        return (cells[at] if 0 <= at < len(cells) else ""), header

    try:
        day = _day(*cell("day"))
    except LineError:
        # Totals carry no day ("总计,--,…", "Total: Account,--,…"); a campaign named "Total
        # care" on a dated line is spend like any other.
        if SUMMARY.match(first):
            return None
        raise
    raw_currency, currency_header = cell("currency")
    currency = raw_currency.strip().upper()
    if currency and currency not in NOT_APPLICABLE and currency != site.currency:
        shown = currency[:10] if CURRENCY.fullmatch(currency) else repr(currency[:10])
        raise LineError(f"{currency_header}: the site keeps {site.currency}, not {shown}")
    raw_cost, cost_header = cell("cost")
    written = raw_cost.strip()
    if not written:
        raise LineError(f"{cost_header}: required")
    try:
        amount = 0 if written in NOT_APPLICABLE else to_minor(written, site.currency)
    except ValueError as exc:
        raise LineError(f"{cost_header}: {exc}") from None
    if amount < 0:
        raise LineError(f"{cost_header}: must not be negative")
    campaign = _text(*cell("campaign"))
    keyword = _text(*cell("keyword"))
    if preset.strip_match_type:
        keyword = _without_match_type(keyword)
    channel = []
    for ours, fixed in (("source", source), ("medium", medium)):
        value = fixed if fixed is not None else _text(*cell(ours), lower=True)
        if ours == "source" and not value:
            raise LineError("source: required (a source column or --source)")
        channel.append(value)
    return CostKey(day, channel[0], channel[1], campaign, keyword), amount


def _without_match_type(keyword: str) -> str:
    if len(keyword) > 1 and (keyword[0], keyword[-1]) in (("[", "]"), ('"', '"')):
        keyword = keyword[1:-1]
    return " ".join(word.removeprefix("+") for word in keyword.split())


def _upsert(
    session: Session,
    site: SiteConfig,
    origin: str,
    sums: Mapping[CostKey, int],
    note: str,
    now: datetime,
    report: CostReport,
) -> None:
    if not sums:
        return
    days = sorted({key.day for key in sums})
    sources = sorted({key.source for key in sums})
    existing: dict[CostKey, Cost] = {}
    for start in range(0, len(days), DAYS_PER_QUERY):
        for c in session.scalars(
            select(Cost).where(
                Cost.site_id == site.id,
                Cost.origin == origin,
                Cost.day.in_(days[start : start + DAYS_PER_QUERY]),
                Cost.source.in_(sources),
            )
        ):
            existing[CostKey(c.day, c.source, c.medium, c.campaign, c.keyword)] = c
    note = note[:MAX_TEXT]
    for key, amount in sums.items():
        row = existing.get(key)
        if row is None:
            session.add(
                Cost(
                    site_id=site.id,
                    day=key.day,
                    source=key.source,
                    medium=key.medium,
                    campaign=key.campaign,
                    keyword=key.keyword,
                    amount=amount,
                    currency=site.currency,
                    origin=origin,
                    note=note,
                    updated_at=now,
                )
            )
            report.created += 1
        elif row.amount == amount and row.currency == site.currency:
            report.unchanged += 1
        else:
            row.amount, row.currency, row.note, row.updated_at = amount, site.currency, note, now
            report.replaced += 1
    session.flush()
