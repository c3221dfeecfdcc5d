"""Orders matched to calls (DESIGN §8): `dni outcomes import`, and the lookup of a call by its
provider call id that the outcome API shares with it.

An order file is a CRM's or a shop's export (CSV, UTF-8 or GBK, English or the usual Chinese
column names). Each order finds its call by call id, or by the caller's number: the latest call
from that number within a window before the order. A bad line is reported and never stops the
good ones; the caller commits the whole file or, for a dry run, rolls it back.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from dni.calls import read_caller
from dni.errors import Conflict, DniError, InvalidInput, NotFound
from dni.fields import text_problem
from dni.models import Call
from dni.money import to_minor
from dni.outcomes import MAX_NOTE, STATUSES, OutcomeInput, set_outcome
from dni.providers.csvfile import check_size, decode
from dni.reports import mask
from dni.sites import SiteConfig

MAX_CALL_ID = 128  # as long as a stored provider call id
MAX_PROVIDER = 32
MAX_ORDER_ID = 128
# A call's orders, when it holds several: "T-1, T-2" in its order_id.
ORDER_JOIN = ", "
# The status a call holding several orders shows: the strongest any of them gives.
ORDER_STATUSES = ("sale", "qualified", "lead")
MAX_CANDIDATES = 100  # a caller's calls in the window an order may go to
# Orders placed in these years only: anything else is a typo or a spreadsheet's serial number.
FIRST_YEAR, LAST_YEAR = 2000, 2999

# Our field -> the column names it is read from, normalised (see _normal), best first: a file
# with both 实付金额 and 订单金额 is read for what was paid. Names from the order exports of
# Taobao/Tmall, JD, Youzan, Pinduoduo, Douyin and common CRMs.
COLUMNS: dict[str, tuple[str, ...]] = {
    "call_id": ("callid", "通话id", "话单id", "呼叫id", "通话编号"),
    "provider": ("provider",),
    "phone": (
        "phone",
        "caller",
        "mobile",
        "手机号",
        "手机号码",
        "手机",
        "联系手机",
        "收货人手机号",
        "收件人手机号",
        "收货人手机",
        "电话",
        "联系电话",
        "客户电话",
        "收货人电话",
        "来电号码",
    ),
    "ordered_at": (
        "orderedat",
        "ordertime",
        "orderdate",
        "下单时间",
        "订单时间",
        "成交时间",
        "订单创建时间",
        "订单提交时间",
        "付款时间",
        "订单付款时间",
        "支付时间",
        "创建时间",
        "下单日期",
        "成交日期",
    ),
    "status": ("status", "状态", "订单状态", "交易状态"),
    "revenue": (
        "revenue",
        "amount",
        "total",
        "实付金额",
        "订单实付金额",
        "买家实际支付金额",
        "成交金额",
        "订单金额",
        "订单应付金额",
        "应付金额",
        "金额",
    ),
    "currency": ("currency", "币种", "货币"),
    "order_id": ("orderid", "订单号", "订单编号", "主订单编号", "订单id"),
    "note": ("note", "notes", "remark", "备注", "订单备注", "卖家备注"),
}
# Order states of Chinese shops and CRMs, as outcomes; anything else must be one of STATUSES.
PAID = ("成交", "交易成功", "已完成", "已付款", "已支付", "已发货", "已签收", "待发货", "待收货")
# Closed without payment: the caller was a lead, and the order brought no money.
CLOSED = ("已取消", "交易关闭", "已关闭", "已退款", "退款成功")
WORDS = {
    **dict.fromkeys(PAID, "sale"),
    **dict.fromkeys(CLOSED, "lead"),
    **{"线索": "lead", "意向": "lead", "有效": "qualified", "骚扰": "spam", "无效": "invalid"},
}
# 2026/11/2 9:05, 2026年11月2日 09:05:00, 2026.11.02: what spreadsheets make of a time.
LOOSE_TIME = re.compile(
    r"(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?"
    r"(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?)?"
)


@dataclass
class OrderReport:
    """What an import did; `added` counts orders added to a call that held others, `unchanged`
    matched orders the calls already had; `lines` says what became of each matched line."""

    by_call_id: int = 0
    by_caller: int = 0
    added: int = 0
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def summary(self) -> str:
        matched = self.by_call_id + self.by_caller
        added = f"{self.added} added to a call's orders; " if self.added else ""
        return (
            f"matched {matched} order(s): {self.by_call_id} by call id, "
            f"{self.by_caller} by caller; {added}{self.unchanged} unchanged; "
            f"{len(self.errors)} bad line(s)"
        )


def find_call(
    session: Session,
    site: SiteConfig,
    call_id: str,
    provider: str = "",
    *,
    for_update: bool = False,
) -> Call:
    """The site's call with this provider call id (and provider, when given); NotFound naming
    `call_id`, or Conflict asking for `provider` when several providers have it. `for_update`
    locks it until the transaction ends, so that concurrent outcomes are set one after another."""
    query = select(Call).where(Call.site_id == site.id, Call.provider_call_id == call_id)
    if provider:
        query = query.where(Call.provider == provider)
    query = query.order_by(Call.provider).limit(10)
    found = list(session.scalars(query.with_for_update() if for_update else query))
    if not found:
        why = "no call with this id" + (f" from provider {provider}" if provider else "")
        raise NotFound("unknown call", {"call_id": why})
    if len(found) > 1:
        names = ", ".join(call.provider for call in found)
        raise Conflict(
            "several calls have this id: name the provider",
            {"provider": f"required: one of {names}"},
        )
    return found[0]


def import_orders(
    session: Session,
    site: SiteConfig,
    data: bytes,
    now: datetime,
    *,
    window_days: int = 7,
    mapping: Mapping[str, str] | None = None,
    filename: str = "orders.csv",
) -> OrderReport:
    """Give each order's call its outcome (source "import"); bad lines are reported by number.

    `mapping` names a column for our fields (ours -> theirs) beyond the names COLUMNS knows.
    An order for a call that holds other orders is added to them (`_with_order`).
    InvalidInput when the file as a whole cannot be read. Importing a file again changes nothing.
    """
    check_size(data)
    rows = csv.reader(io.StringIO(decode(data), newline=""))
    try:
        header = next(rows, None)
    except csv.Error as exc:
        raise InvalidInput(f"line 1: {exc}", {"file": "not a CSV file"}) from None
    if header is None:
        raise InvalidInput("the file is empty", {"file": "empty"})
    where = _columns(header, mapping or {})
    report = OrderReport()
    zone = ZoneInfo(site.timezone)
    window = timedelta(days=window_days)
    orders: dict[str, int] = {}  # order id -> its line
    calls: dict[int, tuple[int, bool]] = {}  # call -> its first order's line, and if it had an id
    for line, cells in _lines(rows, report):
        row = {ours: _cell(cells[i]) if i < len(cells) else "" for ours, i in where.items()}
        try:
            given = _outcome(row, site)
            if row.get("call_id"):
                call = _by_call_id(session, site, row)
            else:
                call = _by_caller(session, site, row, given.order_id, zone, window)
            _claim(orders, given.order_id, calls, call, line)
            held = call.order_id
            outcome = _with_order(call, given)
        except DniError as error:
            problems = "; ".join(f"{name}: {why}" for name, why in error.fields.items())
            report.errors.append(f"line {line}: {problems or error.message}")
            continue
        if row.get("call_id"):
            report.by_call_id += 1
        else:
            report.by_caller += 1
        order = f"order {given.order_id[:40]!r}" if given.order_id else "the order"
        shown = f"call {call.provider_call_id[:40]!r}"
        set_by = f"import {filename}"
        if outcome is None or not set_outcome(session, call, outcome, "import", set_by, now):
            report.unchanged += 1
            report.lines.append(f"line {line}: {order} is on {shown} already: unchanged")
        elif outcome is given:
            report.lines.append(f"line {line}: {order} given to {shown}")
        else:
            report.added += 1
            report.lines.append(f"line {line}: {order} added to {shown}, which held {held[:80]}")
    return report


def order_ids(call: Call) -> list[str]:
    """The ids of the orders a call holds (one, or several joined by ORDER_JOIN)."""
    return call.order_id.split(ORDER_JOIN) if call.order_id else []


def _with_order(call: Call, given: OutcomeInput) -> OutcomeInput | None:
    """The outcome the call gets with this order: the order's own when the call holds no other
    order; None when the order is one of several the call holds already; else the call's
    orders with this one added (revenue summed, order ids joined, the strongest status).

    InvalidInput when the order has no id and the call holds one (the two cannot be told
    apart: adding would count it again on every import), or the ids would not fit."""
    held = order_ids(call)
    if not held or held == [given.order_id]:
        return given
    if given.order_id in held:
        return None
    shown = f"call {call.provider_call_id[:40]!r} holds order(s) {call.order_id[:80]}"
    if not given.order_id:
        raise InvalidInput("order without an id", {"order_id": f"required: {shown}"})
    order_id = call.order_id + ORDER_JOIN + given.order_id
    note = "; ".join(text for text in (call.outcome_note, given.note) if text)
    if len(order_id) > MAX_ORDER_ID or len(note) > MAX_NOTE:
        why = f"{shown}: no room for another in its {MAX_ORDER_ID} characters (or its note)"
        raise InvalidInput("too many orders", {"order_id": why})
    status = next((s for s in ORDER_STATUSES if given.status == s or call.outcome == s), None)
    return OutcomeInput(
        status or given.status, call.revenue + given.revenue, given.currency, order_id, note
    )


def _normal(name: str) -> str:
    """A column name as COLUMNS writes it: "Order ID" and "order_id", "金额（元）" and "金额"."""
    return re.sub(r"[\s_\-:：]+|\(.*?\)|（.*?）", "", name).lower()


def _cell(written: str) -> str:
    """A cell without what exports wrap numbers in to keep spreadsheets from reformatting
    them: `="2026110212345"` and a leading `'`."""
    text = written.strip()
    if text.startswith('="') and text.endswith('"'):
        return text[2:-1].strip()
    return text[1:].strip() if text.startswith("'") else text


def _columns(header: list[str], mapping: Mapping[str, str]) -> dict[str, int]:
    """Where each of our fields is in the header: a mapped name, else the best known one."""
    at: dict[str, int] = {}
    for i, name in enumerate(header):
        at.setdefault(_normal(name), i)
    unknown = sorted(set(mapping) - set(COLUMNS))
    if unknown:
        why = f"not one of {', '.join(COLUMNS)}"
        raise InvalidInput("unknown field in --map", dict.fromkeys(unknown, why))
    where: dict[str, int] = {}
    for ours, names in COLUMNS.items():
        if ours in mapping:
            if _normal(mapping[ours]) not in at:
                raise InvalidInput(
                    f"no column {mapping[ours][:40]!r} in the header", {ours: "mapped column"}
                )
            where[ours] = at[_normal(mapping[ours])]
            continue
        found = next((at[name] for name in (_normal(ours), *names) if name in at), None)
        if found is not None:
            where[ours] = found
    if "call_id" not in where and "phone" not in where:
        shown = ", ".join(name[:40] for name in header[:20])
        raise InvalidInput(
            f"no call id or phone column in the header ({shown}); name one with --map",
            {"file": "no call_id or phone column"},
        )
    return where


def _lines(rows: Iterator[list[str]], report: OrderReport) -> Iterator[tuple[int, list[str]]]:
    """Each non-blank record with its number as a spreadsheet shows it (the header is 1).

    A record the csv module cannot read (a cell over its size limit) ends the file there:
    the reader cannot tell where the next record starts.
    """
    line = 1
    while True:
        line += 1
        try:
            cells = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            report.errors.append(f"line {line}: {exc}; the rest of the file was not read")
            return
        if any(cell.strip() for cell in cells):
            yield line, cells


def _outcome(row: Mapping[str, str], site: SiteConfig) -> OutcomeInput:
    """The order as an outcome in the site's currency; InvalidInput naming every bad cell."""
    problems: dict[str, str] = {}
    for name, value in row.items():
        why = text_problem(value)
        if why:
            problems[name] = why
    status = row.get("status") or "sale"
    status = WORDS.get(status, status.lower())
    if status not in STATUSES:
        choices = f"{', '.join(STATUSES)} (or 成交, 已取消 …)"
        problems.setdefault("status", f"must be one of {choices}, not {row['status'][:40]!r}")
    currency = (row.get("currency") or site.currency).upper()
    if currency != site.currency:
        problems.setdefault("currency", f"must be {site.currency}, the site's currency")
    revenue = 0
    if row.get("revenue") and "revenue" not in problems:
        try:
            revenue = to_minor(row["revenue"], site.currency)
        except ValueError as exc:
            problems["revenue"] = str(exc)
        if revenue < 0:
            problems["revenue"] = "must not be negative"
    if row.get("status") in CLOSED:
        revenue = 0
    for name, cap in (("order_id", MAX_ORDER_ID), ("note", MAX_NOTE)):
        if len(row.get(name, "")) > cap:
            problems.setdefault(name, f"must be at most {cap} characters")
    if ORDER_JOIN in row.get("order_id", ""):
        problems.setdefault(
            "order_id", f"must not contain {ORDER_JOIN!r} (it joins a call's orders)"
        )
    if problems:
        raise InvalidInput("bad order", problems)
    return OutcomeInput(
        status, revenue, site.currency, row.get("order_id", ""), row.get("note", "")
    )


def _by_call_id(session: Session, site: SiteConfig, row: Mapping[str, str]) -> Call:
    call_id, provider = row["call_id"], row.get("provider", "")
    if len(call_id) > MAX_CALL_ID:
        raise InvalidInput("bad call id", {"call_id": "no call has an id this long"})
    if len(provider) > MAX_PROVIDER:
        raise InvalidInput("bad provider", {"provider": "no provider has a name this long"})
    try:
        return find_call(session, site, call_id, provider, for_update=True)
    except NotFound:
        shown = f"no call {call_id[:40]!r}" + (f" from {provider[:40]!r}" if provider else "")
        raise NotFound("unknown call", {"call_id": shown}) from None


def _by_caller(
    session: Session,
    site: SiteConfig,
    row: Mapping[str, str],
    order_id: str,
    zone: ZoneInfo,
    window: timedelta,
) -> Call:
    """The call from the order's phone number to the site within `window` before it that
    holds this order already, else the latest that holds no order, else the latest."""
    caller = read_caller(row.get("phone", "")[:64], site.country).e164
    problems: dict[str, str] = {}
    if not caller:
        problems["phone"] = "required: a phone number (or a call id)"
        if row.get("phone"):
            problems["phone"] = f"not a phone number: {row['phone'][:40]!r}"
    ordered = _ordered_at(row.get("ordered_at", ""), zone)
    if ordered is None:
        problems["ordered_at"] = (
            "required: the order's time, to match its caller's call"
            if not row.get("ordered_at")
            else f"not a time from {FIRST_YEAR} to {LAST_YEAR}: {row['ordered_at'][:40]!r}"
        )
    if problems or ordered is None:
        raise InvalidInput("bad order", problems)
    calls = session.scalars(
        select(Call)
        .where(
            Call.site_id == site.id,
            Call.caller_e164 == caller,
            Call.started_at <= ordered,
            Call.started_at >= ordered - window,
        )
        .order_by(Call.started_at.desc(), Call.id.desc())
        .limit(MAX_CANDIDATES)
    ).all()
    if not calls:
        shown = ordered.astimezone(zone).strftime("%Y-%m-%d %H:%M")
        why = f"no call from {mask(caller)} in the {window.days} days before {shown}"
        raise NotFound("no call", {"phone": why})
    holding = (call for call in calls if order_id and order_id in order_ids(call))
    free = (call for call in calls if not call.order_id)
    return next(holding, None) or next(free, None) or calls[0]


def _ordered_at(written: str, zone: ZoneInfo) -> datetime | None:
    """An order time in UTC: ISO 8601 or a spreadsheet's way of writing it, in the site's zone
    without an offset; a day alone is its end (its calls all came before). None if not one."""
    found: datetime | None
    try:
        found = datetime.fromisoformat(written)
        whole_day = len(written) <= 10
    except ValueError:
        found, whole_day = None, False
    loose = LOOSE_TIME.fullmatch(written.strip())
    if found is None and loose:
        year, month, day, hour, minute, second = (int(part or 0) for part in loose.groups())
        whole_day = loose.group(4) is None
        try:
            found = datetime(year, month, day, hour, minute, second)
        except ValueError:
            return None
    if found is None or not FIRST_YEAR <= found.year <= LAST_YEAR:
        return None
    if whole_day:
        found = datetime.combine(found.date(), time()) + timedelta(days=1)
    if found.tzinfo is None:
        found = found.replace(tzinfo=zone)
    return found.astimezone(UTC)


def _claim(
    orders: dict[str, int],
    order_id: str,
    calls: dict[int, tuple[int, bool]],
    call: Call,
    line: int,
) -> None:
    """One line per order id in a file; and an order without an id takes a call no other line
    of the file does (two such could not be told apart), so that importing again is a no-op."""
    if order_id and order_id in orders:
        raise InvalidInput("duplicate order", {"order_id": f"already on line {orders[order_id]}"})
    earlier = calls.get(call.id)
    if earlier is not None and not (order_id and earlier[1]):
        why = (
            f"call {call.provider_call_id[:40]!r} already took the order on line {earlier[0]}; "
            "orders with an order id can share a call"
        )
        raise InvalidInput("one order per call", {"call_id": why})
    if order_id:
        orders[order_id] = line
    calls.setdefault(call.id, (line, bool(order_id)))
