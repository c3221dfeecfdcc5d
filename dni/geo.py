"""Where a visitor and a caller are, to the province: a visit's IP address looked up in a
MaxMind-format `.mmdb` file the operator supplies (`DNI_GEOIP_PATH`: GeoLite2-City, or a Chinese
provider's city database in the same format), and a caller's number as phonenumbers' geocoder
placed it (stored on the call, "广东省深圳市"). Attribution compares the two.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import maxminddb

from dni.errors import ConfigError

# China's province-level divisions by their short names; no name is a prefix of another.
PROVINCES = (
    "北京",
    "天津",
    "上海",
    "重庆",
    "河北",
    "山西",
    "辽宁",
    "吉林",
    "黑龙江",
    "江苏",
    "浙江",
    "安徽",
    "福建",
    "江西",
    "山东",
    "河南",
    "湖北",
    "湖南",
    "广东",
    "海南",
    "四川",
    "贵州",
    "云南",
    "陕西",
    "甘肃",
    "青海",
    "台湾",
    "内蒙古",
    "广西",
    "西藏",
    "宁夏",
    "新疆",
    "香港",
    "澳门",
)
# GeoIP databases without Chinese names use these (lower case, as the name starts).
ENGLISH = {
    "beijing": "北京",
    "tianjin": "天津",
    "shanghai": "上海",
    "chongqing": "重庆",
    "hebei": "河北",
    "shanxi": "山西",
    "liaoning": "辽宁",
    "jilin": "吉林",
    "heilongjiang": "黑龙江",
    "jiangsu": "江苏",
    "zhejiang": "浙江",
    "anhui": "安徽",
    "fujian": "福建",
    "jiangxi": "江西",
    "shandong": "山东",
    "henan": "河南",
    "hubei": "湖北",
    "hunan": "湖南",
    "guangdong": "广东",
    "hainan": "海南",
    "sichuan": "四川",
    "guizhou": "贵州",
    "yunnan": "云南",
    "shaanxi": "陕西",
    "gansu": "甘肃",
    "qinghai": "青海",
    "taiwan": "台湾",
    "inner mongolia": "内蒙古",
    "nei mongol": "内蒙古",
    "guangxi": "广西",
    "tibet": "西藏",
    "xizang": "西藏",
    "ningxia": "宁夏",
    "xinjiang": "新疆",
    "hong kong": "香港",
    "macau": "澳门",
    "macao": "澳门",
}


def province(place: str) -> str:
    """The province a place name starts with ("广东省深圳市" -> "广东"), or "" if none."""
    for name in PROVINCES:
        if place.startswith(name):
            return name
    lower = place.lower()
    return next((zh for en, zh in ENGLISH.items() if lower.startswith(en)), "")


class IpRegions:
    """Province of an IP address; "" when unknown or when no database is configured."""

    def __init__(self, path: str = "") -> None:
        try:
            self.reader = maxminddb.open_database(path) if path else None
        except (OSError, maxminddb.InvalidDatabaseError) as error:
            raise ConfigError(f"DNI_GEOIP_PATH: cannot read {path}: {error}") from None
        self.province_of = lru_cache(maxsize=65_536)(self._lookup)

    @property
    def enabled(self) -> bool:
        return self.reader is not None

    def _lookup(self, ip: str) -> str:
        if self.reader is None or not ip:
            return ""
        try:
            record: Any = self.reader.get(ip)
        except ValueError:  # not an address
            return ""
        if not isinstance(record, dict):
            return ""
        for division in record.get("subdivisions") or []:
            names = division.get("names") or {}
            for language in ("zh-CN", "en"):
                found = province(str(names.get(language, "")))
                if found:
                    return found
        return ""
