"""`dni outcomes import`: orders matched to calls by call id or by caller, UTF-8 or GBK, every
bad line named, nothing changed by a dry run or by importing the same file again."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

import dni.providers.csvfile
from dni.cli import main
from dni.errors import InvalidInput
from dni.models import Call, Outcome
from dni.orders import OrderReport, import_orders
from dni.providers.csvfile import read_file
from dni.sites import SiteConfig
from dni.web.runtime import Runtime
from tests.conftest import Clock
from tests.factories import report_call

pytestmark = pytest.mark.usefixtures("shop")
ME, OTHER = "+8613812345678", "+8613900000000"
# Three calls: two from ME (the 2nd and the 5th of November, noon in Shanghai), one from OTHER
# on the 20th of October.
CALLS = [
    (1, ME, datetime(2026, 11, 2, 4, 0, tzinfo=UTC)),
    (2, ME, datetime(2026, 11, 5, 4, 0, tzinfo=UTC)),
    (3, OTHER, datetime(2026, 10, 20, 4, 0, tzinfo=UTC)),
]
CHINESE = """订单号,下单时间,手机号,实付金额,状态,备注
T-1,2026-11-06 10:00:00,138 1234 5678,"1,299.00",交易成功,送货上门
T-2,2026/11/06 10:00,13900000000,50,成交,
"""


@pytest.fixture
def site(rt: Runtime) -> SiteConfig:
    for n, caller, when in CALLS:
        report_call(rt, when, caller=caller, n=n)
    found = rt.sites.get("shop")
    assert found is not None
    return found


def run(
    sessions: sessionmaker[Session],
    site: SiteConfig,
    text: str | bytes,
    window_days: int = 7,
    mapping: dict[str, str] | None = None,
    filename: str = "orders.csv",
) -> OrderReport:
    """Import a file in one transaction, committed."""
    data = text.encode() if isinstance(text, str) else text
    now = datetime(2026, 11, 7, tzinfo=UTC)
    with sessions.begin() as session:
        return import_orders(
            session, site, data, now, window_days=window_days, mapping=mapping, filename=filename
        )


def outcome_of(sessions: sessionmaker[Session], n: int) -> tuple[str, int, str, str, str]:
    with sessions() as session:
        call = session.scalars(select(Call).where(Call.provider_call_id == f"call-{n}")).one()
        return call.outcome, call.revenue, call.order_id, call.outcome_note, call.outcome_source


def imported(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        query = select(func.count()).select_from(Outcome).where(Outcome.source == "import")
        return session.scalar(query) or 0


def test_an_order_with_a_call_id_goes_to_that_call(
    sessions: sessionmaker[Session], site: SiteConfig
) -> None:
    report = run(
        sessions,
        site,
        'call_id,status,revenue,order_id,note\ncall-1,sale,"¥1,280.50",SO-1,周五送\n',
        filename="crm.csv",
    )
    assert report.summary() == (
        "matched 1 order(s): 1 by call id, 0 by caller; 0 unchanged; 0 bad line(s)"
    )
    assert outcome_of(sessions, 1) == ("sale", 128050, "SO-1", "周五送", "import")
    with sessions() as session:
        assert session.scalars(select(Outcome.set_by)).all() == ["import crm.csv"]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk"])
def test_chinese_exports_match_the_callers_latest_call_in_the_window(
    sessions: sessionmaker[Session], site: SiteConfig, encoding: str
) -> None:
    report = run(sessions, site, CHINESE.encode(encoding))
    assert (report.by_caller, report.by_call_id) == (1, 0)
    assert outcome_of(sessions, 2) == ("sale", 129900, "T-1", "送货上门", "import")
    assert outcome_of(sessions, 1)[4] != "import"
    assert report.errors == [
        "line 3: phone: no call from +86139****0000 in the 7 days before 2026-11-06 10:00"
    ]


def test_a_wider_window_reaches_an_older_call(
    sessions: sessionmaker[Session], site: SiteConfig
) -> None:
    report = run(sessions, site, CHINESE, window_days=30)
    assert report.errors == [] and report.by_caller == 2
    assert outcome_of(sessions, 3)[:3] == ("sale", 5000, "T-2")


def test_a_day_without_a_time_takes_the_calls_of_that_whole_day_and_none_after(
    sessions: sessionmaker[Session], site: SiteConfig
) -> None:
    report = run(sessions, site, "phone,ordered_at,amount\n13812345678,2026-11-02,10\n")
    assert report.errors == []
    assert outcome_of(sessions, 1)[:2] == ("sale", 1000)
    assert outcome_of(sessions, 2)[4] != "import"


def test_importing_the_same_file_again_changes_nothing(
    sessions: sessionmaker[Session], site: SiteConfig
) -> None:
    first = run(sessions, site, CHINESE, window_days=30)
    before = outcome_of(sessions, 2), outcome_of(sessions, 3)
    again = run(sessions, site, CHINESE, window_days=30)
    assert again.summary() == (
        "matched 2 order(s): 0 by call id, 2 by caller; 2 unchanged; 0 bad line(s)"
    )
    assert first.unchanged == 0 and imported(sessions) == 2
    assert (outcome_of(sessions, 2), outcome_of(sessions, 3)) == before


def test_an_order_id_twice_and_an_order_without_id_on_a_taken_call_are_bad_lines(
    sessions: sessionmaker[Session], site: SiteConfig
) -> None:
    text = "call_id,order_id\ncall-1,A\ncall-2,A\ncall-1,B\ncall-2,\ncall-2,C\ncall-1,\n"
    report = run(sessions, site, text)
    assert report.errors == [
        "line 3: order_id: already on line 2",
        "line 6: call_id: call 'call-2' already took the order on line 5; "
        "orders with an order id can share a call",
        "line 7: call_id: call 'call-1' already took the order on line 2; "
        "orders with an order id can share a call",
    ]
    assert (report.by_call_id, report.added) == (3, 1)
    assert outcome_of(sessions, 1)[2] == "A, B"
    assert outcome_of(sessions, 2)[:3] == ("sale", 0, "")


TWO_ORDERS = """订单号,下单时间,手机号,实付金额
A,2026-11-06 10:00,13812345678,100
B,2026-11-06 11:00,13812345678,20.50
"""


def test_a_callers_second_order_goes_to_their_latest_call_without_one(
    sessions: sessionmaker[Session], site: SiteConfig
) -> None:
    report = run(sessions, site, TWO_ORDERS)
    assert report.errors == []
    assert outcome_of(sessions, 2)[:3] == ("sale", 100_00, "A")
    assert outcome_of(sessions, 1)[:3] == ("sale", 20_50, "B")
    assert report.lines == [
        "line 2: order 'A' given to call 'call-2'",
        "line 3: order 'B' given to call 'call-1'",
    ]


def test_an_order_is_added_to_a_call_when_every_call_of_its_caller_holds_one(
    sessions: sessionmaker[Session], site: SiteConfig
) -> None:
    three = TWO_ORDERS + "C,2026-11-06 12:00,13812345678,1.25\n"
    first = run(sessions, site, three)
    assert first.summary() == (
        "matched 3 order(s): 0 by call id, 3 by caller; 1 added to a call's orders; "
        "0 unchanged; 0 bad line(s)"
    )
    assert first.lines[2] == "line 4: order 'C' added to call 'call-2', which held A"
    assert outcome_of(sessions, 2)[:3] == ("sale", 101_25, "A, C")
    later = run(sessions, site, "call_id,order_id,revenue,status\ncall-2,D,5,已取消\n")
    assert (later.added, later.errors) == (1, [])
    assert outcome_of(sessions, 2)[:3] == ("sale", 101_25, "A, C, D")
    history = imported(sessions)
    for text in (three, three, "call_id,order_id,revenue\ncall-2,D,0\n"):
        again = run(sessions, site, text)
        assert again.added == 0 and again.unchanged == again.by_call_id + again.by_caller
    assert imported(sessions) == history
    assert (outcome_of(sessions, 1)[2], outcome_of(sessions, 2)[2]) == ("B", "A, C, D")
    assert again.lines == ["line 2: order 'D' is on call 'call-2' already: unchanged"]


def test_an_order_without_an_id_is_not_added_to_a_call_holding_orders(
    sessions: sessionmaker[Session], site: SiteConfig
) -> None:
    run(sessions, site, "call_id,order_id,revenue\ncall-1,A,10\n")
    report = run(sessions, site, "call_id,revenue\ncall-1,99\n")
    assert report.errors == ["line 2: order_id: required: call 'call-1' holds order(s) A"]
    assert outcome_of(sessions, 1)[:3] == ("sale", 10_00, "A")


def test_an_order_file_over_the_size_cap_is_refused_whole(
    sessions: sessionmaker[Session],
    site: SiteConfig,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setattr(dni.providers.csvfile, "MAX_FILE_BYTES", 1024 * 1024)
    big = "call_id,order_id\n" + "call-1,A\n" * 120_000
    with pytest.raises(InvalidInput, match="larger than 1 MB; split it by date"):
        run(sessions, site, big)
    file = tmp_path / "orders.csv"
    file.write_text(big)
    with pytest.raises(InvalidInput, match="larger than 1 MB"):
        read_file(file)
    assert imported(sessions) == 0


def test_a_cancelled_order_makes_a_lead_without_revenue(
    sessions: sessionmaker[Session], site: SiteConfig
) -> None:
    run(
        sessions,
        site,
        "订单编号,联系电话,订单创建时间,订单金额,订单状态\nX,13812345678,2026-11-03,99,已取消\n",
    )
    assert outcome_of(sessions, 1)[:3] == ("lead", 0, "X")


def test_spreadsheet_wrappers_and_mapped_columns_are_read(
    sessions: sessionmaker[Session], site: SiteConfig
) -> None:
    text = '买家电话,时间,订单编号\n\'13812345678,2026年11月3日 9:05,="2026110300042"\n'
    report = run(sessions, site, text, mapping={"phone": "买家电话", "ordered_at": "时间"})
    assert report.errors == []
    assert outcome_of(sessions, 1)[2] == "2026110300042"


GOOD = "call-1,sale,10,,,\n"
BAD_LINES = [
    ("call-2,sale,-5,,,", "revenue: must not be negative"),
    ("call-2,sale,abc,,,", "revenue: not an amount: 'abc'"),
    ("call-2,sale,1e30,,,", "revenue: 1e30 is more than any amount dni keeps"),
    ("call-2,sale,NaN,,,", "revenue: not an amount: 'NaN'"),
    (
        "call-2,won,1,,,",
        "status: must be one of lead, qualified, sale, spam, invalid, none (or 成交, 已取消 …), "
        "not 'won'",
    ),
    ("call-2,sale,1,USD,,", "currency: must be CNY, the site's currency"),
    (f"call-2,sale,1,,,{'n' * 2001}", "note: must be at most 2000 characters"),
    (f"call-2,sale,1,,{'o' * 129},", "order_id: must be at most 128 characters"),
    ('call-2,sale,1,,"A, B",', "order_id: must not contain ', ' (it joins a call's orders)"),
    ("call-2,sale,1,,,a\x00b", "note: must not contain NUL characters"),
    ("call-2,sale,1,,,a\x1bb", "note: must not contain control characters"),
    ("nope,sale,1,,,", "call_id: no call 'nope'"),
    (f"{'x' * 4096},sale,1,,,", "call_id: no call has an id this long"),
]


@pytest.mark.parametrize(("line", "why"), BAD_LINES, ids=[why[:30] for _, why in BAD_LINES])
def test_each_bad_cell_is_named_and_the_good_lines_kept(
    sessions: sessionmaker[Session], site: SiteConfig, line: str, why: str
) -> None:
    report = run(sessions, site, f"call_id,status,revenue,currency,order_id,note\n{line}\n{GOOD}")
    assert report.errors == [f"line 2: {why}"]
    assert report.by_call_id == 1 and outcome_of(sessions, 1)[:2] == ("sale", 1000)
    assert outcome_of(sessions, 2)[4] == ""


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("not a phone,2026-11-03", "phone: not a phone number: 'not a phone'"),
        (",2026-11-03", "phone: required: a phone number (or a call id)"),
        ("13812345678,", "ordered_at: required: the order's time, to match its caller's call"),
        ("13812345678,1899-12-31", "ordered_at: not a time from 2000 to 2999: '1899-12-31'"),
        ("13812345678,3001-01-01 00:00", "ordered_at: not a time from 2000 to 2999"),
        ("13812345678,2026-13-45", "ordered_at: not a time from 2000 to 2999"),
        ("13812345678,45600", "ordered_at: not a time from 2000 to 2999"),
    ],
)
def test_an_order_without_a_call_id_needs_a_phone_and_a_time(
    sessions: sessionmaker[Session], site: SiteConfig, line: str, why: str
) -> None:
    report = run(sessions, site, f"phone,ordered_at\n{line}\n")
    assert len(report.errors) == 1 and report.errors[0].startswith(f"line 2: {why}")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"foo,bar\n1,2\n", "no call id or phone column in the header (foo, bar)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8\xff", "the file is neither UTF-8 nor GBK"),
        (bytes(range(256)) * 4, "the file is neither UTF-8 nor GBK"),
    ],
    ids=["empty", "unknown-columns", "png", "binary"],
)
def test_a_file_that_is_no_order_list_is_refused_whole(
    sessions: sessionmaker[Session], site: SiteConfig, data: bytes, message: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        run(sessions, site, data)
    assert refused.value.message.startswith(message)
    assert imported(sessions) == 0


def test_a_header_alone_matches_nothing(sessions: sessionmaker[Session], site: SiteConfig) -> None:
    report = run(sessions, site, "订单号,手机号,下单时间\n\n")
    assert report.summary() == (
        "matched 0 order(s): 0 by call id, 0 by caller; 0 unchanged; 0 bad line(s)"
    )


@pytest.mark.parametrize(
    ("mapping", "field"),
    [({"amount": "金额"}, "amount"), ({"phone": "买家电话"}, "phone")],
)
def test_a_bad_mapping_is_refused_whole(
    sessions: sessionmaker[Session], site: SiteConfig, mapping: dict[str, str], field: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        run(sessions, site, "call_id\ncall-1\n", mapping=mapping)
    assert set(refused.value.fields) == {field}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.setenv("DNI_DATABASE_URL", database_url)


@pytest.mark.usefixtures("env")
def test_the_command_reports_stores_and_dry_runs(
    tmp_path: Path, sessions: sessionmaker[Session], site: SiteConfig, clock: Clock
) -> None:
    file = tmp_path / "订单.csv"
    file.write_bytes(CHINESE.encode("gbk"))
    command = ["outcomes", "import", str(file), "--site", "shop"]
    dry = CliRunner().invoke(main, [*command, "--dry-run", "--window-days", "30"])
    assert dry.exit_code == 0, dry.output
    assert dry.stdout == (
        "dry run, nothing stored: "
        "matched 2 order(s): 0 by call id, 2 by caller; 0 unchanged; 0 bad line(s)\n"
    )
    assert imported(sessions) == 0
    done = CliRunner().invoke(main, command)
    assert done.exit_code == 2
    assert done.stdout.startswith("matched 1 order(s): 0 by call id, 1 by caller;")
    assert done.stderr == (
        "line 3: phone: no call from +86139****0000 in the 7 days before 2026-11-06 10:00\n"
    )
    with sessions() as session:
        assert session.scalars(select(Outcome.set_by)).all() == ["import 订单.csv"]


@pytest.mark.usefixtures("env")
def test_the_command_refuses_an_unreadable_file_and_a_bad_map(
    tmp_path: Path, site: SiteConfig
) -> None:
    file = tmp_path / "orders.csv"
    file.write_bytes(b"")
    empty = CliRunner().invoke(main, ["outcomes", "import", str(file), "--site", "shop"])
    assert empty.exit_code == 1 and "the file is empty" in empty.output
    args = ["outcomes", "import", str(file), "--site", "shop", "--map", "phone"]
    assert "--map takes ours=theirs" in CliRunner().invoke(main, args).output
    unknown = CliRunner().invoke(main, ["outcomes", "import", str(file), "--site", "nope"])
    assert unknown.exit_code == 1 and "unknown site 'nope'" in unknown.output
