"""How the snippet recognises the shop's number as real shops print it (in headless Chromium).

A number ends where its digit groups end: service hours, another number, the shop's own
extension or any other text; city landlines carry a trunk 0 (other countries' trunk prefixes
too); full-width digits and punctuation count; the shop's extension is kept; a tel: link and its
text always name the same number.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from playwright.sync_api import BrowserContext, Page
from sqlalchemy.orm import Session, sessionmaker

from dni.visits import RateLimit
from dni.web.runtime import Runtime
from tests.factories import load_toml
from tests.test_snippet import Served, browser, context, open_page, pages_app, text

__all__ = ["browser", "context"]  # fixtures used by name

# One pool for each hotline the fixture page prints, each with one whole tracking number.
TARGETS = {
    "400-680-8666": "400-101-0001",
    "400-0577-981": "400-101-0002",
    "400-100-5678": "400-101-0003",
    "4006-234-336": "400-101-0004",
    "400-888-1234": "400-101-0005",
    "4008-365-365": "400-101-0006",
    "010-51292956": "010-5129-0001",
    "0755-8600 1234": "0755-8600 0001",
    "+44 20 7946 0000": "+44 20 7946 0001",
    "+49 30 1234567": "+49 30 1234001",
}


def formats_toml() -> str:
    pools = "".join(
        f'[[site.pool]]\nname = "p{i}"\ntarget = "{target}"\nnumbers = ["{number}"]\n\n'
        for i, (target, number) in enumerate(TARGETS.items())
    )
    return (
        '[[site]]\nkey = "formats"\ndomains = ["*.example.com.cn"]\n'
        'timezone = "Asia/Shanghai"\ncountry = "CN"\n\n' + pools
    )


@pytest.fixture
def formats(app: Flask, rt: Runtime, sessions: sessionmaker[Session]) -> Iterator[str]:
    load_toml(sessions, formats_toml())
    rt.visits.rate_limit = RateLimit(10**6, 60)
    api = Served(app)
    pages = Served(pages_app(f"http://api.dni.test:{api.port}"))
    yield f"http://shop.example.com.cn:{pages.port}/formats"
    pages.stop()
    api.stop()


@pytest.fixture
def page(context: BrowserContext, formats: str) -> Iterator[Page]:
    page, errors = open_page(context, formats)
    page.wait_for_function(f"window.DNI && DNI.numbers().length === {len(TARGETS)}", timeout=5000)
    yield page
    assert errors == []


def test_service_hours_end_the_number(page: Page) -> None:
    assert text(page, "#hours-ascii") == "客服中心：400-101-0001(9:00-18:00)"
    assert text(page, "#hours-wide") == "热线 400-1010-002（8:30-20:30）"
    assert text(page, "#hours-space") == "400-101-0003 8:00-18:00"
    assert text(page, "#hours-then-landline") == "400-101-0001(9:00-18:00) \u00a0010-51290001"
    assert text(page, "#list") == "400-101-0001、400-101-0003，400-1010-002/4001-010-004"
    assert text(page, "#two-numbers") == "010-62011365 400-101-0001"


def test_a_tel_link_and_its_text_name_the_same_number(page: Page) -> None:
    assert text(page, "#hours-tel") == "4001-010-004"
    assert page.get_attribute("#hours-tel", "href") == "tel:4001010004"
    assert text(page, "#ext-tel") == "400-101-0005 转 8015"
    assert page.get_attribute("#ext-tel", "href") == "tel:4001010005,,8015"
    assert text(page, "#de-tel") == "+49 30 1234001"
    assert page.get_attribute("#de-tel", "href") == "tel:+49301234001"


def test_city_landlines_are_swapped_with_their_trunk_zero(page: Page) -> None:
    assert text(page, "#beijing") == "电话 010-51290001"
    assert page.get_attribute("#beijing-tel", "href") == "tel:010-51290001"
    assert text(page, "#shenzhen") == "0755-8600 0001"
    assert text(page, "#brackets") == "(010) 5129 0001"
    assert text(page, "#wide-brackets") == "（０１０）５１２９０００１"
    assert text(page, "#intl-landline") == "+86 10 5129 0001"
    assert text(page, "#zero-landline") == "0086 10 5129 0001"


def test_the_shops_own_extension_is_kept(page: Page) -> None:
    assert text(page, "#ext-zhuan") == "400-101-0005转8015"
    assert page.inner_html("#ext-spans") == "<span>4001-010-006</span> 转 <span>9</span>"
    assert text(page, "#ext-dash") == "400-101-0005-8015"
    assert text(page, "#ext-en") == "400-101-0005 ext. 22"
    assert text(page, "#ext-x") == "400-101-0005 x22"


def test_full_width_digits_and_punctuation(page: Page) -> None:
    assert text(page, "#wide-dash") == "４００－１０１－０００５"
    assert text(page, "#wide-paren") == "（４００）１０１－０００５"
    assert text(page, "#wide-plus") == "＋８６ ４００ １０１ ０００５"


def test_other_countries_trunk_prefixes(page: Page) -> None:
    assert text(page, "#uk") == "020 7946 0001"
    assert text(page, "#uk-intl") == "+44 (0)20 7946 0001"
    assert text(page, "#de") == "030 1234001"


def test_longer_runs_and_other_numbers_are_left_alone(page: Page) -> None:
    assert text(page, "#longer") == (
        "订单 4008881234567 · 4008-881-2345 · 1400-888-1234 · 400-888-1234 5678"
    )
    assert text(page, "#other") == "传真 010-51292957 · 0755-8600 1235"
    assert text(page, "#us") == "+1 400 888 1234"
