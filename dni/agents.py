"""User agents: device class, browser and OS of a visitor, and whether it is a bot at all.

Parsing with `user-agents` costs about a millisecond, so results are cached per UA string (its
first MAX_USER_AGENT characters); the same few hundred strings make up nearly all real traffic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache

import user_agents

MAX_USER_AGENT = 512

# What ua-parser does not call a bot but is one for us: headless browsers, HTTP libraries,
# monitoring, and crawlers whose names ua-parser does not know yet.
AUTOMATION = re.compile(
    r"bot|spider|crawl|slurp|headless|phantomjs|selenium|puppeteer|playwright|lighthouse"
    r"|pagespeed|curl|wget|python|java/|go-http|okhttp|libwww|httpclient|axios|node-fetch"
    r"|scrapy|aiohttp|postman|insomnia|uptime|pingdom|monitor|preview|feedfetcher|facebookexternal",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Agent:
    device: str  # "mobile", "tablet", "desktop" or "other"
    browser: str
    os: str
    is_bot: bool


def classify_agent(user_agent: str) -> Agent:
    """Classify a whole User-Agent header, cached by its first MAX_USER_AGENT characters."""
    agent = parse_agent(user_agent[:MAX_USER_AGENT])
    if len(user_agent) > MAX_USER_AGENT and not agent.is_bot and AUTOMATION.search(user_agent):
        return replace(agent, is_bot=True)
    return agent


# Keyed by whole headers (up to 8 KB each) this cache grew to tens of MB per worker under
# random user agents; `classify_agent` keys it by at most MAX_USER_AGENT characters.
@lru_cache(maxsize=8192)
def parse_agent(user_agent: str) -> Agent:
    """Classify a User-Agent header; an empty or automated one is a bot."""
    if not user_agent.strip():
        return Agent("other", "", "", True)
    ua = user_agents.parse(user_agent[:MAX_USER_AGENT])
    if ua.is_tablet:
        device = "tablet"
    elif ua.is_mobile:
        device = "mobile"
    elif ua.is_pc:
        device = "desktop"
    else:
        device = "other"
    is_bot = bool(ua.is_bot or AUTOMATION.search(user_agent))
    return Agent(device, ua.browser.family[:64], ua.os.family[:64], is_bot)
