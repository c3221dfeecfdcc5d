"""Bots and devices from User-Agent strings."""

from __future__ import annotations

import pytest

from dni.agents import parse_agent
from tests.factories import DESKTOP_UA, MOBILE_UA

BOTS = [
    "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
    "Sogou web spider/4.0(+http://www.sogou.com/docs/help/webmasters.htm#07)",
    "Mozilla/5.0 (compatible; MSIE 9.0; Windows NT 6.1; Trident/5.0); 360Spider",
    "Mozilla/5.0 (compatible; YisouSpider/5.0; +http://yisou.com)",
    "Mozilla/5.0 (Linux; Android 5.0) AppleWebKit/537.36 (KHTML, like Gecko) Mobile Safari/537.36 "
    "(compatible; Bytespider; spider-feedback@bytedance.com)",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/124.0.0.0 Safari/537.36",
    "curl/8.5.0",
    "python-requests/2.32.0",
    "",
]


@pytest.mark.parametrize("user_agent", BOTS)
def test_bots_are_recognised(user_agent: str) -> None:
    assert parse_agent(user_agent).is_bot


def test_people_are_not_bots() -> None:
    wechat = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.40(0x18002831) NetType/WIFI"
    )
    assert parse_agent(wechat) == parse_agent(wechat)
    assert not parse_agent(wechat).is_bot and parse_agent(wechat).device == "mobile"
    assert parse_agent(MOBILE_UA).device == "mobile"
    assert parse_agent(DESKTOP_UA).device == "desktop" and not parse_agent(DESKTOP_UA).is_bot


def test_parses_are_cached() -> None:
    parse_agent.cache_clear()
    parse_agent(DESKTOP_UA)
    parse_agent(DESKTOP_UA)
    assert parse_agent.cache_info().hits == 1
