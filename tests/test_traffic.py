"""The classification table of DESIGN §5, case by case."""

from __future__ import annotations

import pytest

from dni.traffic import classify, decode_component

LANDING = "https://shop.example.cn/p"


@pytest.mark.parametrize(
    ("query", "referrer", "expected"),
    [
        ("?utm_source=newsletter&utm_medium=email&utm_campaign=may", "", ("newsletter", "email")),
        ("?utm_source=baidu&utm_medium=cpc&gclid=x", "", ("baidu", "cpc")),
        ("?utm_source=Baidu&utm_medium=CPC", "", ("baidu", "cpc")),  # as cost reports meet it
        ("?gclid=abc", "", ("google", "cpc")),
        ("?gbraid=abc", "", ("google", "cpc")),
        ("?wbraid=abc", "", ("google", "cpc")),
        ("?msclkid=abc", "", ("bing", "cpc")),
        ("?bd_vid=123", "", ("baidu", "cpc")),
        ("?clickid=B.xyz", "", ("oceanengine", "cpc")),
        ("?qz_gdt=abc", "", ("tencent", "cpc")),
        ("?gdt_vid=abc", "", ("tencent", "cpc")),
        ("?fbclid=abc", "", ("facebook", "paid")),
        ("", "https://www.baidu.com/s?wd=x", ("baidu", "organic")),
        ("", "https://m.baidu.com/from=844b/s?word=x", ("baidu", "organic")),
        ("", "https://www.baidu.com/baidu.php?url=a", ("baidu", "cpc")),
        ("", "https://www.so.com/s?q=x", ("360", "organic")),
        ("", "https://www.sogou.com/web?query=x", ("sogou", "organic")),
        ("", "https://m.sm.cn/s?q=x", ("shenma", "organic")),
        ("", "https://cn.bing.com/search?q=x", ("bing", "organic")),
        ("", "https://www.google.com.hk/", ("google", "organic")),
        ("", "https://www.google.co.uk/", ("google", "organic")),
        ("", "https://weibo.com/u/1", ("weibo", "social")),
        ("", "https://mp.weixin.qq.com/s/x", ("wechat", "social")),
        ("", "https://www.douyin.com/video/1", ("douyin", "social")),
        ("", "https://www.xiaohongshu.com/x", ("xiaohongshu", "social")),
        ("", "https://news.example.org/a", ("news.example.org", "referral")),
        ("", "https://shop.example.cn/other", ("direct", "none")),
        ("", "", ("direct", "none")),
        ("", "not a url at all", ("direct", "none")),
        ("", "http://[broken/", ("direct", "none")),
    ],
)
def test_classification_table(query: str, referrer: str, expected: tuple[str, str]) -> None:
    traffic = classify(LANDING + query, referrer)
    assert (traffic.source, traffic.medium) == expected


def test_click_id_is_kept_with_its_type() -> None:
    traffic = classify(LANDING + "?bd_vid=987&gclid=g1", "")
    assert (traffic.click_id_type, traffic.click_id) == ("gclid", "g1")
    assert traffic.click_ids == {"gclid": "g1", "bd_vid": "987"}
    assert traffic.tagged


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("%E9%B2%9C%E8%8A%B1", "鲜花"),  # UTF-8
        ("%CF%CA%BB%A8", "鲜花"),  # GBK, as older Baidu templates send it
        ("red+roses", "red roses"),
        ("%ZZbroken%", "%ZZbroken%"),
        ("%FF%FE%FD", "%FF%FE%FD"),  # neither encoding: kept raw
    ],
)
def test_keywords_decode_in_utf8_or_gbk_or_stay_raw(raw: str, decoded: str) -> None:
    assert decode_component(raw) == decoded


def test_site_keyword_parameter_is_used_without_utm_term() -> None:
    traffic = classify(LANDING + "?bd_vid=1&kw=%CF%CA%BB%A8", "", keyword_param="kw")
    assert traffic.term == "鲜花"


def test_search_referrer_keyword_is_kept() -> None:
    assert classify(LANDING, "https://www.baidu.com/s?wd=%E9%B2%9C%E8%8A%B1").term == "鲜花"


def test_values_are_capped() -> None:
    traffic = classify(LANDING + "?utm_source=" + "a" * 500 + "&utm_term=" + "b" * 500, "")
    assert len(traffic.source) == 200 and len(traffic.term) == 200


def test_untagged_organic_visit_is_not_a_campaign() -> None:
    assert not classify(LANDING, "https://www.baidu.com/s?wd=x").tagged
