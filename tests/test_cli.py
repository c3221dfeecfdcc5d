"""The `dni` command on real stores: schema upgrade, flush, pool health."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.orm import Session, sessionmaker

from dni.cli import main
from dni.web.runtime import Runtime
from tests.conftest import Clock
from tests.factories import load_toml, shop_toml, start_visit


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, database_url: str, redis_url: str) -> None:
    monkeypatch.setenv("DNI_DATABASE_URL", database_url)
    monkeypatch.setenv("DNI_REDIS_URL", redis_url)


@pytest.mark.usefixtures("env")
def test_db_upgrade_is_idempotent() -> None:
    result = CliRunner().invoke(main, ["db", "upgrade"])
    assert result.exit_code == 0 and "newest revision" in result.output


@pytest.mark.usefixtures("env")
def test_flush_and_pools_report_what_happened(
    rt: Runtime, sessions: sessionmaker[Session], clock: Clock
) -> None:
    clock.now = datetime.now(UTC)  # the command reads the wall clock
    load_toml(sessions, shop_toml())
    for n in range(4):
        start_visit(rt, f"visitor-{n}cli", "https://shop.example.cn/?utm_medium=cpc&utm_source=x")
    flushed = CliRunner().invoke(main, ["flush"])
    assert flushed.exit_code == 0, flushed.output
    assert flushed.output.strip() == "flushed 4 visit(s), 3 lease(s), 0 event(s), 0 update(s)"
    pools = CliRunner().invoke(main, ["pools", "--site", "shop"])
    assert pools.exit_code == 0, pools.output
    lines = [line for line in pools.output.splitlines()[1:] if not line.startswith(" ")]
    rows = {line.split()[1]: line.split()[2:] for line in lines}
    # size, in use, peak, fallback, shared, leaked, advised size
    assert rows["paid"] == ["3", "3", "3", "1", "0", "0", "6"]
    assert "shop/paid: peak concurrency 3 needs about 6 slots" in pools.output
    assert rows["everyone"] == ["10", "0", "0", "0", "0", "0", "1"]


def test_bad_setting_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DNI_REDIS_CLUSTER", "maybe")
    result = CliRunner().invoke(main, ["flush"])
    assert result.exit_code == 1 and "DNI_REDIS_CLUSTER='maybe'" in result.output


@pytest.mark.usefixtures("env")
def test_an_old_schema_is_upgraded_on_sqlite_and_refused_on_a_server(database_url: str) -> None:
    from alembic.script import ScriptDirectory

    from dni.db import alembic_config, downgrade_database, upgrade_database

    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    downgrade_database(database_url, "0002")
    try:
        result = CliRunner().invoke(main, ["pools"])
        if database_url.startswith("sqlite"):  # embedded: upgraded in place
            assert result.exit_code == 0, result.output
        else:  # shared: the operator's step
            assert result.exit_code == 1
            assert f"revision 0002, this dni needs {head}: run `dni db upgrade`" in result.output
    finally:
        upgrade_database(database_url)


@pytest.mark.usefixtures("env", "sessions")
def test_load_warns_of_a_short_lease_and_still_loads(tmp_path: Path) -> None:
    sites = tmp_path / "sites.toml"
    short = shop_toml().replace("lease_seconds = 1800", "lease_seconds = 2\nheartbeat_seconds = 1")
    sites.write_text(short, encoding="utf-8")
    result = CliRunner().invoke(main, ["load", str(sites)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("loaded 1 site(s): shop;")
    assert f"{sites}: 1 warning(s)" in result.stderr
    assert "  site[shop].pool[paid].lease_seconds: 2 s is under 60 s" in result.stderr
