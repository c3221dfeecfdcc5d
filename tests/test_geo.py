"""Provinces of IP addresses (a real MaxMind-format database) and of callers' numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from dni.bench.stores import write_geoip
from dni.errors import ConfigError
from dni.geo import IpRegions, province


@pytest.mark.parametrize(
    ("place", "expected"),
    [
        ("广东省深圳市", "广东"),
        ("北京市", "北京"),
        ("内蒙古呼和浩特市", "内蒙古"),
        ("新疆乌鲁木齐市", "新疆"),
        ("黑龙江省哈尔滨市", "黑龙江"),
        ("Guangdong", "广东"),
        ("Inner Mongolia Autonomous Region", "内蒙古"),
        ("Shaanxi", "陕西"),
        ("Shanxi", "山西"),
        ("", ""),
        ("California", ""),
    ],
)
def test_a_place_name_gives_its_province(place: str, expected: str) -> None:
    assert province(place) == expected


def test_an_address_gives_the_province_its_database_names(tmp_path: Path) -> None:
    path = write_geoip(
        tmp_path / "city.mmdb",
        {"36.1.0.0/16": {"zh-CN": "广东省", "en": "Guangdong"}, "36.2.0.0/16": {"en": "Beijing"}},
    )
    regions = IpRegions(str(path))
    assert regions.enabled
    assert [regions.province_of(ip) for ip in ("36.1.9.9", "36.2.0.1", "8.8.8.8", "junk", "")] == [
        "广东",
        "北京",
        "",
        "",
        "",
    ]


def test_without_a_database_every_address_is_unknown() -> None:
    regions = IpRegions("")
    assert not regions.enabled and regions.province_of("36.1.9.9") == ""


def test_a_database_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.mmdb").write_bytes(b"not a database")
    for path in (tmp_path / "missing.mmdb", tmp_path / "broken.mmdb"):
        with pytest.raises(ConfigError, match=f"DNI_GEOIP_PATH: cannot read {path}"):
            IpRegions(str(path))
