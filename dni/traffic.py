"""Traffic classification: which source, medium, campaign and keyword brought a visit.

The order is DESIGN §5: explicit `utm_*` → ad click ids → the referrer → direct. Both tables
below are plain data; extending dni to a new ad platform or search engine is one more row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes, urlsplit

from dni.fields import UNSAFE_TEXT

MAX_VALUE = 200
MAX_CLICK_ID = 512


@dataclass(frozen=True)
class ClickId:
    param: str
    source: str
    medium: str


# First match wins when a URL carries several.
CLICK_IDS: tuple[ClickId, ...] = (
    ClickId("gclid", "google", "cpc"),
    ClickId("gbraid", "google", "cpc"),
    ClickId("wbraid", "google", "cpc"),
    ClickId("msclkid", "bing", "cpc"),
    ClickId("bd_vid", "baidu", "cpc"),
    ClickId("clickid", "oceanengine", "cpc"),
    ClickId("qz_gdt", "tencent", "cpc"),
    ClickId("gdt_vid", "tencent", "cpc"),
    ClickId("fbclid", "facebook", "paid"),
    ClickId("ttclid", "tiktok", "cpc"),
    ClickId("li_fat_id", "linkedin", "paid"),
)


@dataclass(frozen=True)
class Referrer:
    host: re.Pattern[str]
    source: str
    medium: str
    keyword_params: tuple[str, ...] = ()
    # When set, only referrer paths starting with this match (ad redirectors on search hosts).
    path: str = ""


def _host(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"(^|\.){pattern}$")


# Checked in order; the first row whose host (and path, if any) matches wins.
REFERRERS: tuple[Referrer, ...] = (
    Referrer(_host(r"baidu\.com"), "baidu", "cpc", path="/baidu.php"),
    Referrer(_host(r"(googleadservices\.com|doubleclick\.net)"), "google", "cpc"),
    Referrer(_host(r"baidu\.com"), "baidu", "organic", ("wd", "word", "kw")),
    Referrer(_host(r"so\.com"), "360", "organic", ("q",)),
    Referrer(_host(r"sogou\.com"), "sogou", "organic", ("query", "keyword")),
    Referrer(_host(r"sm\.cn"), "shenma", "organic", ("q",)),
    Referrer(_host(r"so\.toutiao\.com"), "toutiao", "organic", ("keyword",)),
    Referrer(_host(r"bing\.com"), "bing", "organic", ("q",)),
    Referrer(_host(r"google(\.[a-z]{2,3}){1,2}"), "google", "organic", ("q",)),
    Referrer(_host(r"search\.yahoo\.(com|co\.jp)"), "yahoo", "organic", ("p",)),
    Referrer(_host(r"yandex\.(ru|com)"), "yandex", "organic", ("text",)),
    Referrer(_host(r"duckduckgo\.com"), "duckduckgo", "organic", ("q",)),
    Referrer(_host(r"naver\.com"), "naver", "organic", ("query",)),
    Referrer(_host(r"(weibo\.com|weibo\.cn|t\.cn)"), "weibo", "social"),
    Referrer(_host(r"(weixin\.qq\.com|wechat\.com)"), "wechat", "social"),
    Referrer(_host(r"(douyin\.com|iesdouyin\.com)"), "douyin", "social"),
    Referrer(_host(r"(xiaohongshu\.com|xhslink\.com)"), "xiaohongshu", "social"),
    Referrer(_host(r"zhihu\.com"), "zhihu", "social"),
    Referrer(_host(r"(bilibili\.com|b23\.tv)"), "bilibili", "social"),
    Referrer(_host(r"kuaishou\.com"), "kuaishou", "social"),
    Referrer(_host(r"(facebook\.com|fb\.com|fb\.me)"), "facebook", "social"),
    Referrer(_host(r"instagram\.com"), "instagram", "social"),
    Referrer(_host(r"(t\.co|twitter\.com|x\.com)"), "twitter", "social"),
    Referrer(_host(r"(linkedin\.com|lnkd\.in)"), "linkedin", "social"),
    Referrer(_host(r"(youtube\.com|youtu\.be)"), "youtube", "social"),
    Referrer(_host(r"tiktok\.com"), "tiktok", "social"),
    Referrer(_host(r"reddit\.com"), "reddit", "social"),
    Referrer(_host(r"pinterest\.com"), "pinterest", "social"),
)


@dataclass(frozen=True)
class Traffic:
    """What brought a visit, as stored on the visit and matched by pool rules."""

    source: str
    medium: str
    campaign: str = ""
    term: str = ""
    content: str = ""
    click_id_type: str = ""
    click_id: str = ""
    click_ids: dict[str, str] = field(default_factory=dict)
    # True when the landing URL itself names the campaign (utm_source or a click id).
    tagged: bool = False

    def fingerprint(self) -> str:
        """Identifies the campaign click; a different one starts a new visit."""
        clicks = ",".join(f"{k}={v}" for k, v in sorted(self.click_ids.items()))
        return "|".join((self.source, self.medium, self.campaign, self.term, clicks))


def decode_component(raw: str, limit: int = MAX_VALUE) -> str:
    """Percent-decode a query value as UTF-8, else GB18030 (GBK's superset), else keep it raw.

    Characters that cannot be stored (`%00`, other controls, lone surrogates) are dropped.
    """
    data = unquote_to_bytes(UNSAFE_TEXT.sub("", raw).replace("+", " "))
    for encoding in ("utf-8", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        text = raw
    return UNSAFE_TEXT.sub("", text)[:limit].strip()


def query_params(query: str) -> dict[str, str]:
    """Decode a query string; the first value of each name wins and nothing here can fail."""
    params: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        key = decode_component(name, 64).lower()
        if key and key not in params:
            params[key] = value
    return params


def _split(url: str) -> tuple[str, str, str]:
    """(host, path, query) of a URL, lower-case host, all empty when it cannot be parsed."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return "", "", ""
    return host, parts.path, parts.query


def classify(url: str, referrer: str, keyword_param: str | None = None) -> Traffic:
    """Classify a landing `url` reached from `referrer` (DESIGN §5)."""
    landing_host, _, query = _split(url)
    raw = query_params(query)
    params = {name: decode_component(value) for name, value in raw.items()}
    click_ids = {
        c.param: decode_component(raw[c.param], MAX_CLICK_ID) for c in CLICK_IDS if raw.get(c.param)
    }
    term = params.get("utm_term", "")
    if not term and keyword_param:
        term = params.get(keyword_param.lower(), "")
    first_click = next((c for c in CLICK_IDS if c.param in click_ids), None)
    click_type, click_value = (
        (first_click.param, click_ids[first_click.param]) if first_click else ("", "")
    )
    tagged = bool(params.get("utm_source") or click_ids)

    def build(source: str, medium: str, keyword: str) -> Traffic:
        return Traffic(
            source=source[:MAX_VALUE],
            medium=medium[:MAX_VALUE],
            campaign=params.get("utm_campaign", ""),
            term=keyword,
            content=params.get("utm_content", ""),
            click_id_type=click_type,
            click_id=click_value,
            click_ids=click_ids,
            tagged=tagged,
        )

    if params.get("utm_source"):
        # Lower case, as the consoles' cost reports are matched (dni.costs): Baidu = baidu.
        medium = (params.get("utm_medium") or "(not set)").lower()
        return build(params["utm_source"].lower(), medium, term)
    if first_click:
        return build(first_click.source, first_click.medium, term)

    ref_host, ref_path, ref_query = _split(referrer)
    if ref_host and ref_host != landing_host:
        for row in REFERRERS:
            if row.host.search(ref_host) and ref_path.startswith(row.path):
                return build(row.source, row.medium, term or _search_term(row, ref_query))
        return build(ref_host.removeprefix("www."), "referral", term)
    return build("direct", "none", term)


def _search_term(row: Referrer, query: str) -> str:
    """The keyword a search engine still puts in its referrer (Baidu `wd`, Sogou `query`)."""
    params = query_params(query)
    return next((decode_component(params[k]) for k in row.keyword_params if params.get(k)), "")
