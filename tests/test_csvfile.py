"""`dni calls import`: spreadsheets in UTF-8 or GBK, bad rows reported, good rows kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dni.cli import main
from dni.models import Call

pytestmark = pytest.mark.usefixtures("shop")

CSV = """call_id,from,to,started_at,duration,status
c1,13812345678,400-100-0001,2026-11-02 12:00:00,95,completed
c2,13812345678,400-100-0001,yesterday,10,completed
c3,anonymous,400-888-1234,2026-11-02T13:00:00+08:00,0,no-answer
c4,13900000000,not a number,2026-11-02 14:00:00,5,completed
"""


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    monkeypatch.setenv("DNI_DATABASE_URL", database_url)


def stored(sessions: sessionmaker[Session]) -> dict[str, Call]:
    with sessions() as session:
        return {c.provider_call_id: c for c in session.scalars(select(Call))}


@pytest.mark.usefixtures("env")
def test_bad_rows_are_reported_and_good_rows_kept(
    tmp_path: Path, sessions: sessionmaker[Session]
) -> None:
    file = tmp_path / "calls.csv"
    file.write_text(CSV)
    result = CliRunner().invoke(main, ["calls", "import", str(file), "--site", "shop"])
    assert result.exit_code == 2
    assert "imported 2 new, 0 updated, 0 unchanged; 2 bad row(s)" in result.output
    assert "line 3: started_at: must be ISO 8601 with a UTC offset" in result.output
    assert "line 5: to: must be a phone number, not 'not a number'" in result.output
    calls = stored(sessions)
    assert set(calls) == {"c1", "c3"}
    assert calls["c1"].started_at.isoformat() == "2026-11-02T04:00:00+00:00"  # site time zone
    again = CliRunner().invoke(main, ["calls", "import", str(file), "--site", "shop"])
    assert "imported 0 new, 0 updated, 2 unchanged" in again.output


@pytest.mark.usefixtures("env")
def test_dry_run_stores_nothing(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    file = tmp_path / "calls.csv"
    file.write_text(CSV)
    result = CliRunner().invoke(main, ["calls", "import", str(file), "--site", "shop", "--dry-run"])
    assert "would import 2 new" in result.output
    assert stored(sessions) == {}


@pytest.mark.usefixtures("env")
def test_gbk_export_with_mapped_columns(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    file = tmp_path / "话单.csv"
    text = "话单ID,主叫,被叫,开始时间,通话时长\nx1,02161230000,4001000002,2026-11-02 09:30:00,61\n"
    file.write_bytes(text.encode("gbk"))
    columns = ("call_id=话单ID", "from=主叫", "to=被叫", "started_at=开始时间", "duration=通话时长")
    maps = [arg for column in columns for arg in ("--map", column)]
    result = CliRunner().invoke(main, ["calls", "import", str(file), "--site", "shop", *maps])
    assert result.exit_code == 0, result.output
    call = stored(sessions)["x1"]
    assert (call.caller_region, call.status, call.duration_seconds) == ("上海市", "completed", 61)


@pytest.mark.usefixtures("env")
def test_preset_columns(tmp_path: Path, sessions: sessionmaker[Session]) -> None:
    file = tmp_path / "yiqitong.csv"
    file.write_text(
        "call_sn,tel,ext,caller_id,start_time,call_duration,state\n"
        "sn-9,4008881234,8004,13812345678,2026-11-02 12:00:00,30,1\n"
    )
    result = CliRunner().invoke(
        main, ["calls", "import", str(file), "--site", "shop", "--preset", "yiqitong"]
    )
    assert result.exit_code == 0, result.output
    call = stored(sessions)["sn-9"]
    assert (call.provider, call.extension, call.duration_seconds) == ("yiqitong", "8004", 30)
