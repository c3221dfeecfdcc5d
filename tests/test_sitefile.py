"""`dni load` / `dni export`: validation with every error named, idempotent loads, retirement."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dni.errors import ConfigError
from dni.models import Pool, SourceNumber, TrackingNumber
from dni.sitefile import export_sites, parse_sites
from tests.factories import load_toml, shop_toml


def test_shop_file_parses_to_e164() -> None:
    (site,) = parse_sites(shop_toml())
    assert site.forward_to_e164 == "+862161234567"
    paid, everyone = site.pools
    assert paid.target_e164 == "+864008881234"
    assert paid.slots[0] == ("+864001000001", "")
    assert everyone.slots[0] == ("+864008881234", "8000") and len(everyone.slots) == 10
    assert paid.match == {"medium": ["cpc", "paid"]} and everyone.match == {}


BAD = """
[[site]]
key = "Bad Key"
domains = ["https://shop.example.cn:443"]
timezone = "Mars/Olympus"
country = "XX"
forward_to = "12"
colour = "blue"

[[site.pool]]
name = "paid"
target = "400-888-1234"
numbers = ["400-100-0001", "not a number", "400-100-0001"]
extensions = "90-10"
match = { planet = "mars" }
lease_seconds = 0
overflow = "panic"
"""


def test_every_error_is_reported_with_site_field_and_value() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_sites(BAD)
    errors = caught.value.fields
    expected = {
        "site[0].key",
        "site[#0].domains[0]",
        "site[#0].timezone",
        "site[#0].country",
        "site[#0].colour",
        "site[#0].pool[paid].numbers[1]",
        "site[#0].pool[paid].extensions",
        "site[#0].pool[paid].match.planet",
        "site[#0].pool[paid].lease_seconds",
        "site[#0].pool[paid].overflow",
        "site[#0].pool[paid].numbers",
    }
    assert expected <= set(errors), errors
    assert "Mars/Olympus" in errors["site[#0].timezone"]
    assert "panic" in errors["site[#0].pool[paid].overflow"]


def with_lease(lease: int, heartbeat: int | None = None) -> str:
    """The shop file with its paid pool's lease (and heartbeat) changed."""
    timing = f"lease_seconds = {lease}" + (
        f"\nheartbeat_seconds = {heartbeat}" if heartbeat is not None else ""
    )
    return shop_toml().replace("lease_seconds = 1800", timing)


def test_a_lease_of_seconds_loads_with_a_warning(sessions: sessionmaker[Session]) -> None:
    report = load_toml(sessions, with_lease(2, heartbeat=1))
    assert report.sites == ["shop"]
    assert list(report.warnings) == ["site[shop].pool[paid].lease_seconds"]
    assert "2 s is under 60 s" in report.warnings["site[shop].pool[paid].lease_seconds"]
    with sessions() as session:
        pool = session.scalars(select(Pool).where(Pool.name == "paid")).one()
        assert (pool.lease_seconds, pool.heartbeat_seconds) == (2, 1)


def test_a_lease_of_a_minute_or_more_loads_without_warnings(
    sessions: sessionmaker[Session],
) -> None:
    assert load_toml(sessions, with_lease(60, heartbeat=30)).warnings == {}


@pytest.mark.parametrize(("lease", "heartbeat"), [(2, 2), (60, 31), (30, None)])
def test_a_heartbeat_over_half_the_lease_is_refused(lease: int, heartbeat: int | None) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_sites(with_lease(lease, heartbeat))
    assert set(caught.value.fields) == {"site[shop].pool[paid].heartbeat_seconds"}
    assert (
        f"more than half of lease_seconds ({lease})"
        in caught.value.fields["site[shop].pool[paid].heartbeat_seconds"]
    )


@pytest.mark.parametrize(
    ("lease", "heartbeat", "field"),
    [
        (0, 1, "lease_seconds"),
        (-5, 1, "lease_seconds"),
        (10, 0, "heartbeat_seconds"),
    ],
)
def test_a_lease_or_heartbeat_under_a_second_is_refused(
    lease: int, heartbeat: int, field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_sites(with_lease(lease, heartbeat))
    assert f"site[shop].pool[paid].{field}" in caught.value.fields


@pytest.mark.parametrize(
    ("setting", "problem"),
    [
        ("name = 5", "must be a string, not 5"),
        ('name = "' + "n" * 201 + '"', "must be at most 200 characters"),
        ('name = "a\\u0000b"', "must not contain NUL characters"),
    ],
)
def test_a_site_name_must_be_storable_text(setting: str, problem: str) -> None:
    text = shop_toml().replace('key = "shop"', f'key = "shop"\n{setting}')
    with pytest.raises(ConfigError) as caught:
        parse_sites(text)
    assert caught.value.fields == {"site[shop].name": problem}


def test_invalid_toml_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        parse_sites("[[site]\nkey=")


def test_a_number_in_two_pools_is_refused() -> None:
    text = shop_toml(paid=["400-100-0001", "400-200-0001"])  # also the source number
    with pytest.raises(ConfigError) as caught:
        parse_sites(text)
    assert any("source_number" in k for k in caught.value.fields)


def test_loading_twice_changes_nothing(sessions: sessionmaker[Session]) -> None:
    first = load_toml(sessions, shop_toml())
    second = load_toml(sessions, shop_toml())
    assert first.numbers_added == 13 and second.numbers_added == 0
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(TrackingNumber)) == 13
        assert session.scalar(select(func.count()).select_from(Pool)) == 2
        assert session.scalar(select(func.count()).select_from(SourceNumber)) == 1


def test_removed_number_is_retired_and_comes_back_when_listed(
    sessions: sessionmaker[Session],
) -> None:
    load_toml(sessions, shop_toml())
    report = load_toml(sessions, shop_toml(paid=["400-100-0001"]))
    assert report.numbers_retired == 2
    with sessions() as session:
        active = session.scalars(select(TrackingNumber).where(TrackingNumber.active.is_(True)))
        assert len(list(active)) == 11
    assert load_toml(sessions, shop_toml()).numbers_added == 2


def test_export_round_trips(sessions: sessionmaker[Session]) -> None:
    load_toml(sessions, shop_toml())
    with sessions() as session:
        document = export_sites(session)
    text = tomli_w.dumps(document)
    assert 'extensions = [\n    "8000-8009",\n]' in text
    assert parse_sites(text) == parse_sites(shop_toml())


@pytest.mark.usefixtures("sessions")
def test_cli_load_reports_errors_and_exits_nonzero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    from dni.cli import main

    monkeypatch.setenv("DNI_DATABASE_URL", database_url)
    bad = tmp_path / "sites.toml"
    bad.write_text(BAD)
    result = CliRunner().invoke(main, ["load", str(bad)])
    assert result.exit_code == 1
    assert "site[#0].timezone: unknown time zone 'Mars/Olympus'" in result.output

    good = tmp_path / "good.toml"
    good.write_text(shop_toml())
    result = CliRunner().invoke(main, ["load", str(good)])
    assert result.exit_code == 0, result.output
    assert "loaded 1 site(s): shop; 13 number(s) added" in result.output
    exported = CliRunner().invoke(main, ["export"])
    assert exported.exit_code == 0 and 'key = "shop"' in exported.output
