"""The snippet on real shop pages (../shared/realpages, skipped when absent), desktop and mobile.

Each page is loaded twice in headless Chromium: once with dni.js blocked (the page as the shop
wrote it) and once with the snippet. Its sidecar says what must show the leased number in its
own format and what must stay exactly as it was; the page's own script checks, its errors and
its layout must be the same both times. The pages are read where they lie, never copied.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import phonenumbers
import pytest
from flask import Flask
from playwright.sync_api import BrowserContext, Page, Route
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.wrappers import Request, Response

from dni.visits import RateLimit
from dni.web.runtime import Runtime
from tests.factories import load_toml
from tests.test_snippet import Served, browser, context

__all__ = ["browser", "context"]  # fixtures used by name

REALPAGES = Path(__file__).resolve().parents[2] / "shared" / "realpages"
SIDECARS = sorted(REALPAGES.glob("*.json")) if REALPAGES.is_dir() else []
pytestmark = pytest.mark.skipif(not SIDECARS, reason=f"{REALPAGES} is absent")

# What the page shows: its text (hidden parts included, whitespace collapsed), the text and
# attributes of the sidecar's selectors, the layout, and the page's own checks.
SNAPSHOT = """([swaps, keeps, scripts]) => {
  const squash = s => s.replace(/\\s+/g, ' ');
  const grab = ({css, attr}) => [...document.querySelectorAll(css)].map(
    el => attr ? el.getAttribute(attr) : squash(el.textContent));
  const box = el => { const r = el.getBoundingClientRect(); return [r.height, r.top]; };
  const all = s => [...document.querySelectorAll(s.css)];
  return {
    text: squash(document.body.textContent),
    swaps: swaps.map(grab),
    keeps: keeps.map(grab),
    layout: [document.documentElement.scrollHeight,
             ...swaps.filter(s => s.css).flatMap(s => all(s).map(box))],
    scripts: scripts.map(check => {
      try { return !!eval(check); } catch (e) { return String(e); }
    }),
  };
}"""


def sidecar(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    data["page"] = data.get("html", path.stem)
    return data


def e164(number: str) -> str:
    return phonenumbers.format_number(
        phonenumbers.parse(number, "CN"), phonenumbers.PhoneNumberFormat.E164
    )


def tracking_number(target: str, index: int) -> str:
    """A tracking number of the target's own length: 400-101-0001…, or the landline's area."""
    digits = re.sub(r"\D", "", target)
    head = digits[: len(digits) - 4]
    if digits.startswith("400"):
        head = "400101" + "0" * (len(digits) - 10)
    return head + f"{index:04d}"


TARGETS = sorted({sidecar(p)["target"] for p in SIDECARS})
NUMBERS = {target: tracking_number(target, i + 1) for i, target in enumerate(TARGETS)}


def sites_toml() -> str:
    pools = "".join(
        f'[[site.pool]]\nname = "p{i}"\ntarget = "{target}"\nnumbers = ["{NUMBERS[target]}"]\n\n'
        for i, target in enumerate(TARGETS)
    )
    return (
        '[[site]]\nkey = "real"\ndomains = ["*.example.com.cn"]\n'
        'timezone = "Asia/Shanghai"\ncountry = "CN"\n\n' + pools
    )


def printed(shown: str, target: str, leased: str) -> str:
    """`shown` (the target as the page prints it) with the leased number's digits written in."""
    national = phonenumbers.parse(target, "CN").national_number
    digits = re.sub(r"\D", "", shown)
    new = re.sub(r"\D", "", e164(leased))
    if not shown.lstrip().startswith("+"):
        new = new[len(new) - len(str(national)) :]
        new = "0" * (len(digits) - len(new)) + new  # the trunk 0 the page printed
    assert len(new) == len(digits), (shown, leased)
    out = iter(new)
    return re.sub(r"\d", lambda _: next(out), shown)


def tel(href: str, target: str, leased: str) -> str:
    """A tel: href naming the target, with the leased number in the same shape."""
    scheme, number = href[:4], href[4:]
    start = re.search(r"[+\d]", number)
    assert start, href
    return scheme + number[: start.start()] + printed(number[start.start() :], target, leased)


@pytest.fixture
def real(app: Flask, rt: Runtime, sessions: sessionmaker[Session]) -> Iterator[str]:
    load_toml(sessions, sites_toml())
    rt.visits.rate_limit = RateLimit(10**6, 60)
    api = Served(app)
    embed = f'<script async src="http://api.dni.test:{api.port}/dni.js" data-site="real"></script>'

    @Request.application
    def serve(request: Request) -> Response:
        page = REALPAGES / f"{request.path.strip('/')}.html"
        if not page.is_file():
            return Response("not here", status=404)  # the pages' own assets: not saved
        html = page.read_text(encoding="utf-8").replace("{{DNI_EMBED}}", embed)
        return Response(html, mimetype="text/html")

    pages = Served(serve)
    yield f"http://shop.example.com.cn:{pages.port}"
    pages.stop()
    api.stop()


def load(context: BrowserContext, url: str, data: dict[str, Any], snippet: bool) -> Any:
    """The page's snapshot and errors, with or without the snippet; nothing leaves loopback."""

    def only_local(route: Route) -> None:
        host = route.request.url.split("/")[2].split(":")[0]
        blocked = not snippet and route.request.url.split("?")[0].endswith("/dni.js")
        if host in ("shop.example.com.cn", "api.dni.test") and not blocked:
            route.continue_()
        else:
            route.abort()

    page: Page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.route("**/*", only_local)
    page.goto(url, wait_until="load")
    if snippet:
        page.wait_for_function("window.DNI && DNI.numbers().length > 0", timeout=5000)
    page.wait_for_timeout(600)  # the page's own late scripts, and the swaps they cause
    swaps = [{"css": s.get("css"), "attr": s.get("attr")} for s in data["must_swap"]]
    keeps = [{"css": k.get("css"), "attr": k.get("attr")} for k in data["must_keep"]]
    snap = page.evaluate(SNAPSHOT, [swaps, [k for k in keeps if k["css"]], data["scripts"]])
    page.close()
    return snap, sorted(errors)


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.mark.parametrize("path", SIDECARS, ids=[p.stem for p in SIDECARS])
def test_real_page(context: BrowserContext, real: str, path: Path) -> None:
    data = sidecar(path)
    target, leased = data["target"], NUMBERS[data["target"]]
    url = f"{real}/{data['page']}"
    before, errors_before = load(context, url, data, snippet=False)
    after, errors_after = load(context, url, data, snippet=True)

    assert errors_after == errors_before
    assert after["scripts"] == before["scripts"] == [True] * len(data["scripts"])
    assert after["layout"] == before["layout"]
    for i, swap in enumerate(data["must_swap"]):
        if "text" in swap:
            shown = printed(swap["shown"], target, leased)
            expected = squash(swap["text"].replace(swap["shown"], shown))
            assert squash(before["text"]).count(squash(swap["text"])) == swap["count"], swap
            assert squash(after["text"]).count(expected) == swap["count"], swap
        elif swap.get("attr") == "href":
            values = before["swaps"][i]
            assert values and after["swaps"][i] == [tel(v, target, leased) for v in values], swap
        else:
            shown = printed(swap["shown"], target, leased)
            assert before["swaps"][i] and all(swap["shown"] in v for v in before["swaps"][i])
            assert all(shown in v and swap["shown"] not in v for v in after["swaps"][i]), (
                swap,
                after["swaps"][i],
            )
    keeps = [k for k in data["must_keep"] if k.get("css")]
    assert after["keeps"] == before["keeps"] and all(before["keeps"]), keeps
    for keep in data["must_keep"]:
        if "text" in keep:
            wanted = squash(keep["text"])
            count = squash(before["text"]).count(wanted)
            assert count == keep.get("count", count) and count > 0, keep
            assert squash(after["text"]).count(wanted) == count, keep
