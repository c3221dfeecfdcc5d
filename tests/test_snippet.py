"""The snippet in real headless Chromium against shop pages served from another origin.

Host names are mapped to loopback with Chromium's host resolver rules, so cookies are set on
real-looking domains (shop.example.com.cn, whose public suffix is com.cn).
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from playwright.sync_api import Request as BrowserRequest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from dni.history import flush_history
from dni.models import Visit, VisitEvent
from dni.visits import RateLimit
from dni.web.runtime import Runtime
from tests.factories import DESKTOP_UA, MOBILE_UA, load_toml, shop_toml

PAGES = Path(__file__).parent / "pages"
PAID = "?utm_source=baidu&utm_medium=cpc&utm_term=flowers"
HOSTS = "MAP shop.example.com.cn 127.0.0.1, MAP api.dni.test 127.0.0.1"


class Served:
    """A WSGI app on a loopback port in a thread."""

    def __init__(self, app: Any) -> None:
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.port)

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    assert executable, "install Chromium: apt-get install chromium (scripts/test does)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                f"--host-resolver-rules={HOSTS}",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def api(app: Flask, rt: Runtime, sessions: sessionmaker[Session]) -> Iterator[str]:
    load_toml(sessions, shop_toml(extensions=20))
    rt.visits.rate_limit = RateLimit(10**6, 60)
    served = Served(app)
    yield f"http://api.dni.test:{served.port}"
    served.stop()


def pages_app(api: str, attrs: str = "") -> Any:
    """The test shop's pages, each with the snippet tag pointing at `api`."""

    @Request.application
    def serve(request: Request) -> Response:
        name = request.path.strip("/") or "shop"
        page = PAGES / f"{name}.html"
        if not page.is_file():
            page = PAGES / "shop.html"  # single-page routes fall back to the shop page
        html = page.read_text().replace("{{API}}", api).replace("{{ATTRS}}", attrs)
        return Response(html, mimetype="text/html")

    return serve


@pytest.fixture
def shop(api: str) -> Iterator[str]:
    served = Served(pages_app(api))
    yield f"http://shop.example.com.cn:{served.port}"
    served.stop()


@pytest.fixture(params=["desktop", "mobile"])
def context(request: pytest.FixtureRequest, browser: Browser) -> Iterator[BrowserContext]:
    agent = DESKTOP_UA if request.param == "desktop" else MOBILE_UA
    context = browser.new_context(user_agent=agent, is_mobile=request.param == "mobile")
    yield context
    context.close()


def open_page(context: BrowserContext, url: str) -> tuple[Page, list[str]]:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    return page, errors


def swapped(page: Page) -> None:
    page.wait_for_function("window.DNI && DNI.numbers().length > 0", timeout=5000)


def text(page: Page, selector: str) -> str:
    return page.inner_text(selector).strip()


def test_paid_visit_swaps_every_occurrence_in_its_own_format(
    context: BrowserContext, shop: str
) -> None:
    page, errors = open_page(context, shop + "/" + PAID)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    swapped(page)
    assert text(page, "#h1") == "全国热线 400-100-0001"
    assert text(page, "#spaced") == "客服 400 100 0001"
    assert text(page, "#plain") == "4001000001"
    assert text(page, "#intl") == "+86 400 100 0001"
    assert text(page, "#paren") == "(+86) 400-100-0001"
    assert text(page, "#dots") == "400.100.0001"
    assert text(page, "#dot-mid") == "400·100·0001"
    assert text(page, "#dash") == "400—100—0001"
    assert text(page, "#fullwidth") == "４００-１００-０００１"
    assert text(page, "#zero") == "0086-400-100-0001"
    assert text(page, "#split") == "电话 400-100-0001"
    assert page.inner_html("#split") == "电话 <b>400</b>-100-<i>0001</i>"
    assert text(page, "#ext") == "400-100-0001 转 0"  # the shop's own extension stays
    assert page.get_attribute("#tel", "href") == "tel:4001000001"
    assert page.get_attribute("#tel-intl", "href") == "tel:+864001000001"
    assert page.get_attribute("#banner", "alt") == "热线 400-100-0001"
    assert text(page, "#footer") == "客服热线 400-100-0001 · 沪ICP备12345678号"
    assert errors == [] and console == []
    added = page.evaluate("Object.keys(window).filter(k => !window.__before.includes(k))")
    assert [k for k in added if not k.startswith("__")] == ["DNI"]


def test_lookalikes_and_protected_places_stay_untouched(context: BrowserContext, shop: str) -> None:
    page, _ = open_page(context, shop + "/" + PAID)
    swapped(page)
    assert text(page, "#price") == "¥ 4008.00 · ¥ 199.00"
    assert text(page, "#order") == "订单号 4008881234567"
    assert text(page, "#icp") == "沪ICP备40088812号-1"
    assert text(page, "#other") == "传真 021-61234567"
    assert page.input_value("#input") == "400-888-1234"
    assert page.input_value("#textarea") == "400-888-1234"
    assert text(page, "#editable") == "400-888-1234"
    assert text(page, "#noswap") == "400-888-1234"
    assert page.evaluate("document.getElementById('inline').textContent").count("400-888-1234") == 1


def test_extension_slot_is_shown_with_zhuan_and_dialled_with_commas(
    context: BrowserContext, shop: str
) -> None:
    page, _ = open_page(context, shop + "/")
    swapped(page)
    assert text(page, "#h1") == "全国热线 400-888-1234 转 8000"
    assert text(page, "#intl") == "+86 400 888 1234 转 8000"
    # A slot's extension cannot stand in for the shop's own: that occurrence stays as written.
    assert text(page, "#ext") == "400-888-1234 转 0"
    assert page.get_attribute("#tel", "href") == "tel:4008881234,,8000"
    page.evaluate("DNI.rescan()")  # swapping again changes nothing
    assert text(page, "#h1") == "全国热线 400-888-1234 转 8000"


def test_content_added_later_is_swapped_without_a_feedback_loop(
    context: BrowserContext, shop: str
) -> None:
    page, _ = open_page(context, shop + "/" + PAID)
    calls: list[str] = []
    page.on("request", lambda r: calls.append(r.url) if "/v1/" in r.url else None)
    page.wait_for_selector("#popup")
    page.wait_for_function("document.getElementById('popup').textContent.includes('400-100-0001')")
    page.wait_for_timeout(300)
    assert text(page, "#popup") == "限时优惠! 致电 400-100-0001"
    assert not [c for c in calls if "heartbeat" in c]


def test_single_page_navigation_is_reported_with_the_new_url(
    context: BrowserContext, shop: str
) -> None:
    page, _ = open_page(context, shop + "/" + PAID)
    swapped(page)
    with page.expect_request(lambda r: "/heartbeat" in r.url) as beat:
        page.click("#route")
    assert beat.value.post_data_json == {"url": shop + "/checkout"}
    page.wait_for_function("document.getElementById('spa').textContent.includes('400-100-0001')")


def test_replace_state_navigation_is_reported_once_with_the_new_url(
    context: BrowserContext, shop: str
) -> None:
    page, _ = open_page(context, shop + "/" + PAID)
    swapped(page)
    # Once the page's own popup is in, nothing changes the DOM: only the history hook can notice.
    page.wait_for_function("document.getElementById('popup')?.textContent.includes('0001')")
    beats: list[Any] = []
    page.on("request", lambda r: beats.append(r.post_data_json) if "/heartbeat" in r.url else None)
    with page.expect_request(lambda r: "/heartbeat" in r.url):
        page.evaluate("history.replaceState({}, '', '/checkout?step=2')")
    page.evaluate("history.replaceState({scrolled: 1}, '')")  # same URL: not a navigation
    page.wait_for_timeout(300)
    assert beats == [{"url": shop + "/checkout?step=2"}]


def test_loading_the_script_twice_changes_nothing_twice(context: BrowserContext, shop: str) -> None:
    page, errors = open_page(context, shop + "/" + PAID)
    swapped(page)
    src = page.get_attribute("script[data-site]", "src")
    page.evaluate(
        """src => { const s = document.createElement('script');
                   s.src = src; s.dataset.site = 'shop'; document.head.appendChild(s); }""",
        src,
    )
    page.wait_for_timeout(500)
    assert text(page, "#h1") == "全国热线 400-100-0001"
    assert errors == []


def test_api_down_leaves_the_shops_numbers(browser: Browser) -> None:
    dead = Served(pages_app("http://api.dni.test:9"))  # nothing listens on port 9
    context = browser.new_context(user_agent=DESKTOP_UA)
    try:
        page, errors = open_page(context, f"http://shop.example.com.cn:{dead.port}/{PAID}")
        page.wait_for_timeout(1000)
        assert text(page, "#h1") == "全国热线 400-888-1234"
        assert errors == []
    finally:
        context.close()
        dead.stop()


def test_blocked_script_leaves_the_page_as_written(browser: Browser, shop: str) -> None:
    context = browser.new_context(user_agent=DESKTOP_UA)
    context.route("**/dni.js", lambda route: route.abort())
    try:
        page, errors = open_page(context, shop + "/" + PAID)
        page.wait_for_timeout(500)
        assert text(page, "#h1") == "全国热线 400-888-1234"
        assert errors == []
    finally:
        context.close()


def test_lost_lease_brings_the_shops_numbers_back(
    context: BrowserContext, shop: str, redis_url: str
) -> None:
    from redis import Redis

    page, _ = open_page(context, shop + "/" + PAID)
    swapped(page)
    page.route("**/heartbeat", lambda route: route.fulfill(status=503, body="{}"))
    page.evaluate("window.dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true}))")
    page.wait_for_function("DNI.numbers().length === 0")
    assert text(page, "#h1") == "全国热线 400-888-1234"
    assert page.get_attribute("#tel", "href") == "tel:4008881234"
    assert Redis.from_url(redis_url).ping()


def test_visitor_cookie_is_set_on_the_registrable_domain(browser: Browser, shop: str) -> None:
    context = browser.new_context(user_agent=DESKTOP_UA)
    try:
        page, _ = open_page(context, shop + "/")
        swapped(page)
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["_dni_v"]["domain"] == ".example.com.cn"  # not com.cn, a public suffix
        assert cookies["_dni_v"]["sameSite"] == "Lax"
        first = cookies["_dni_v"]["value"]
        page.goto(shop + "/second")
        swapped(page)
        assert {c["name"]: c for c in context.cookies()}["_dni_v"]["value"] == first
    finally:
        context.close()


def test_tel_tap_is_reported_at_once(
    context: BrowserContext, shop: str, rt: Runtime, sessions: sessionmaker[Session]
) -> None:
    page, _ = open_page(context, shop + "/" + PAID)
    swapped(page)
    with page.expect_request(lambda r: "/events" in r.url):
        page.evaluate(
            "document.getElementById('tel').addEventListener('click', e => e.preventDefault())"
        )
        page.click("#tel")
    page.wait_for_timeout(200)
    flush_history(rt.stores)
    with sessions() as session:
        event = session.query(VisitEvent).one()
        assert (event.type, event.number) == ("tel_click", "4001000001")


def test_consent_mode_waits_for_consent(browser: Browser, api: str) -> None:
    served = Served(pages_app(api, ' data-consent="required"'))
    context = browser.new_context(user_agent=DESKTOP_UA)
    try:
        page, _ = open_page(context, f"http://shop.example.com.cn:{served.port}/{PAID}")
        page.wait_for_timeout(700)
        assert text(page, "#h1") == "全国热线 400-888-1234"
        assert context.cookies() == []
        page.evaluate("DNI.consent()")
        swapped(page)
        assert text(page, "#h1") == "全国热线 400-100-0001"
    finally:
        context.close()
        served.stop()


def test_opt_out_restores_and_stays_out(browser: Browser, shop: str) -> None:
    context = browser.new_context(user_agent=DESKTOP_UA)
    try:
        page, _ = open_page(context, shop + "/" + PAID)
        swapped(page)
        page.evaluate("DNI.optOut()")
        assert text(page, "#h1") == "全国热线 400-888-1234"
        calls: list[str] = []
        page.on("request", lambda r: calls.append(r.url) if "/v1/" in r.url else None)
        page.reload()
        page.wait_for_timeout(700)
        assert text(page, "#h1") == "全国热线 400-888-1234" and calls == []
    finally:
        context.close()


def test_first_page_swaps_when_the_answer_lands(context: BrowserContext, shop: str) -> None:
    page, _ = open_page(context, shop + "/" + PAID)
    page.evaluate(
        "new Promise(r => DNI.onSwap(() => { window.__swappedAt = performance.now(); r(); }))"
    )
    gap = page.evaluate(
        """() => window.__swappedAt - performance.getEntriesByType('resource')
              .find(e => e.name.endsWith('/v1/visits')).responseEnd"""
    )
    # Swapped in the answer's own task, not after a timer or a heartbeat; `dni bench snippet`
    # prints the real figures.
    assert 0 <= gap < 1000, gap


@pytest.fixture
def render_blocking_shop(api: str) -> Iterator[str]:
    """The embed `dni snippet --no-flash` prints: async, and render-blocking until loaded."""
    served = Served(pages_app(api, ' blocking="render"'))
    yield f"http://shop.example.com.cn:{served.port}"
    served.stop()


def frames_of_second_page(context: BrowserContext, shop: str) -> list[str]:
    """The hotline's text before each frame of a visit's second page."""
    page, _ = open_page(context, shop + "/" + PAID)
    swapped(page)
    page.goto(shop + "/second")
    swapped(page)
    page.wait_for_timeout(200)
    frames: list[str] = page.evaluate("window.__frames")
    assert frames, "no frame was recorded"
    return frames


def test_later_pages_never_paint_the_shops_number(
    context: BrowserContext, render_blocking_shop: str
) -> None:
    frames = frames_of_second_page(context, render_blocking_shop)
    assert set(frames) == {"全国热线 400-100-0001"}, frames[:5]


def test_plain_async_embed_shows_no_wrong_number_on_later_pages(
    context: BrowserContext, shop: str
) -> None:
    frames = frames_of_second_page(context, shop)
    assert set(frames) <= {"全国热线 400-888-1234", "全国热线 400-100-0001"}
    assert frames[-1] == "全国热线 400-100-0001"


def test_framework_rerender_of_a_swapped_node_is_swapped_again(
    context: BrowserContext, shop: str
) -> None:
    page, _ = open_page(context, shop + "/" + PAID)
    swapped(page)
    page.evaluate("document.getElementById('h1').firstChild.nodeValue = '热线 400-888-1234'")
    page.wait_for_function("document.getElementById('h1').textContent === '热线 400-100-0001'")


def test_heartbeats_only_while_visible(browser: Browser, shop: str) -> None:
    context = browser.new_context(user_agent=DESKTOP_UA)
    beats: list[str] = []

    def one_second(route: Any) -> None:  # heartbeat every second instead of every minute
        # Playwright fetches outside Chromium, where api.dni.test does not resolve.
        response = route.fetch(url=route.request.url.replace("api.dni.test", "127.0.0.1"))
        body = response.json() | {"heartbeat": 1}
        route.fulfill(response=response, json=body)

    try:
        context.route(re.compile(r"/v1/visits(/[^/]+/heartbeat)?$"), one_second)
        page = context.new_page()
        page.on("request", lambda r: beats.append(r.url) if "heartbeat" in r.url else None)
        page.goto(shop + "/" + PAID)
        swapped(page)
        page.wait_for_timeout(2500)
        assert len(beats) >= 2
        page.evaluate(
            """() => { Object.defineProperty(document, 'visibilityState', {value: 'hidden'});
                       document.dispatchEvent(new Event('visibilitychange', {bubbles: true})); }"""
        )
        seen = len(beats)
        page.wait_for_timeout(2500)
        assert len(beats) == seen
    finally:
        context.close()


def test_visitor_id_falls_back_to_storage_when_cookies_are_refused(
    browser: Browser, shop: str
) -> None:
    context = browser.new_context(user_agent=DESKTOP_UA)
    # A browser refusing cookies: writes are dropped, reads see nothing.
    context.add_init_script(
        "Object.defineProperty(Document.prototype, 'cookie', {get: () => '', set: () => {}})"
    )
    visitors: list[str] = []

    def record_visitor(request: BrowserRequest) -> None:
        if request.url.endswith("/v1/visits"):
            visitors.append((request.post_data_json or {}).get("visitor", ""))

    context.on("request", record_visitor)
    try:
        page, errors = open_page(context, shop + "/")
        swapped(page)
        page.goto(shop + "/second")
        swapped(page)
        assert len(visitors) == 2 and visitors[0] == visitors[1]
        assert errors == []
    finally:
        context.close()


GA = "GA1.2.468604437.1611708469"
FBP = "fb.1.1558571054389.1098115397"


def visit_with_cookies(
    browser: Browser, shop: str, rt: Runtime, sessions: sessionmaker[Session], **cookies: str
) -> tuple[dict[str, Any], Visit]:
    """Open the shop with the page's own `cookies` set on its registrable domain; the body the
    snippet sent for the new visit and the visit as stored."""
    context = browser.new_context(user_agent=DESKTOP_UA)
    domain = ".example.com.cn"
    context.add_cookies(
        [{"name": n, "value": v, "domain": domain, "path": "/"} for n, v in cookies.items()]
    )
    sent: list[dict[str, Any]] = []

    def record(request: BrowserRequest) -> None:
        if request.url.endswith("/v1/visits"):
            sent.append(request.post_data_json or {})

    context.on("request", record)
    try:
        page, errors = open_page(context, shop + "/" + PAID)
        swapped(page)
        assert errors == [] and len(sent) == 1
        seen = page.evaluate("document.cookie")
        assert all(f"{name}={value}" in seen for name, value in cookies.items())
    finally:
        context.close()
    flush_history(rt.stores)
    with sessions() as session:
        return sent[0], session.scalars(select(Visit)).one()


def test_the_pages_ga_and_fbp_cookies_are_kept_with_the_visit(
    browser: Browser, shop: str, rt: Runtime, sessions: sessionmaker[Session]
) -> None:
    body, row = visit_with_cookies(browser, shop, rt, sessions, _ga=GA, _fbp=FBP, _ga_X1=GA + "0")
    assert (body["ga"], body["fbp"]) == (GA, FBP)
    assert (row.ga_client_id, row.fbp) == ("468604437.1611708469", FBP)


def test_a_page_without_analytics_cookies_sends_none(
    browser: Browser, shop: str, rt: Runtime, sessions: sessionmaker[Session]
) -> None:
    body, row = visit_with_cookies(browser, shop, rt, sessions, x_ga=GA, _fbpx=FBP)
    assert "ga" not in body and "fbp" not in body
    assert (row.ga_client_id, row.fbp) == ("", "")


@pytest.mark.parametrize(
    ("cookies", "sent"),
    [
        # Cut at the first character no id has: too short to send.
        ({"_ga": "GA1.2.<script>alert(1)</script>", "_fbp": "fb.1.<script>"}, {}),
        # 500 characters each, the first 64 sent: the server drops them.
        ({"_ga": "GA1.2." + "4" * 494, "_fbp": "fb.1." + "1" * 495}, {"ga": 64, "fbp": 64}),
        ({"_ga": GA + "9" * 474, "_fbp": FBP + "x" * 471}, {"ga": 64, "fbp": 64}),
    ],
)
def test_garbage_analytics_cookies_are_dropped_and_the_visit_still_works(
    browser: Browser,
    shop: str,
    rt: Runtime,
    sessions: sessionmaker[Session],
    cookies: dict[str, str],
    sent: dict[str, int],
) -> None:
    body, row = visit_with_cookies(browser, shop, rt, sessions, **cookies)
    assert {name: len(body[name]) for name in ("ga", "fbp") if name in body} == sent
    assert (row.ga_client_id, row.fbp) == ("", "")
    assert row.source == "baidu"
