"""`dni bench snippet`: the snippet's cost on a large page in headless Chromium.

Serves the real app (private redis-server, SQLite in a temporary folder) and a shop page with
about 5,000 text nodes from another origin, then prints, as medians over several loads: the time
from navigation to the swap, the gap between the visit answer and the swap, and the main-thread
time the snippet adds (task time with the snippet minus the same page with it blocked).
"""

from __future__ import annotations

import logging
import shutil
import statistics
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from dni.bench.stores import scratch_stores

SITE = """
[[site]]
key = "bench"
domains = ["shop.bench.test"]

[[site.pool]]
name = "all"
target = "400-888-1234"
extensions = "0000-9999"
match = "*"
"""
UA = (
    "Mozilla/5.0 (Linux; Android 13; V2227A) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Mobile Safari/537.36"
)
ROW = (
    "<tr><td>商品 {i}</td><td>¥ {price}.00</td><td>库存 {i}</td>"
    "<td>订单 {order}</td><td>{phone}</td></tr>"
)
PHONES = ("400-888-1234", "400 888 1234", "<b>400</b>-888-1234", "客服", "+86 400 888 1234")


SETTLE_MS = 2000
WATCH = (
    "addEventListener('DOMContentLoaded', () => { (function wait() {"
    " if (!window.DNI) return setTimeout(wait, 1);"
    " DNI.onSwap(() => { window.__swappedAt = window.__swappedAt || performance.now(); });"
    "})(); });"
)


def big_page(api: str, rows: int = 1000) -> str:
    """A product table of `rows` rows: five text nodes each, some holding the hotline."""
    body = "".join(
        ROW.format(i=i, price=100 + i, order=4008881234000 + i, phone=PHONES[i % 50 % 5])
        if i % 50 < 5
        else ROW.format(i=i, price=100 + i, order=4008881234000 + i, phone="-")
        for i in range(rows)
    )
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        f'<script async src="{api}/dni.js" data-site="bench"></script></head>'
        f"<body><header>热线 400-888-1234</header><table>{body}</table></body></html>"
    )


def _serve(app: Any) -> tuple[Any, int]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, int(server.port)


def run_snippet_benchmark(loads: int, echo: Callable[[str], None]) -> None:
    from dni import create_app

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("Chromium is not installed: apt-get install chromium")
    servers = []
    with scratch_stores(SITE, datetime.now(UTC)) as scratch:
        try:
            app = create_app(
                {
                    "database_url": scratch.database_url,
                    "redis_url": scratch.redis_url,
                    "instance_path": scratch.folder,
                    "visit_rate_limit": 10**6,
                    "flush_seconds": 0,
                }
            )
            api_server, api_port = _serve(app)
            html = big_page(f"http://api.bench.test:{api_port}")

            @Request.application
            def page(request: Request) -> Response:
                return Response(html, mimetype="text/html")

            page_server, page_port = _serve(page)
            servers = [api_server, page_server]
            figures = _in_chromium(chromium, f"http://shop.bench.test:{page_port}/", loads)
        finally:
            for server in servers:
                server.shutdown()
    text_nodes = figures.pop("text nodes")
    echo(f"dni bench snippet: headless Chromium, {text_nodes:.0f} text nodes, median of {loads}")
    for name, values in figures.items():
        echo(f"{name:<44}{statistics.median(values):>8.1f} ms")


def _in_chromium(chromium: str, shop: str, loads: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    rules = "MAP shop.bench.test 127.0.0.1, MAP api.bench.test 127.0.0.1"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                f"--host-resolver-rules={rules}",
            ],
        )
        figures = _measure(browser, shop, loads)
        browser.close()
    return figures


def _open(context: Any, shop: str, init_script: str = "") -> tuple[Any, Any]:
    """A page loaded with CDP performance metrics on from before navigation."""
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable")
    if init_script:
        page.add_init_script(init_script)
    page.goto(shop)
    return page, cdp


def _task_ms(cdp: Any) -> float:
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return float(metrics["TaskDuration"]) * 1000


def _measure(browser: Any, shop: str, loads: int) -> dict[str, Any]:
    swap, gap, added, rescan = [], [], [], []
    nodes = 0.0
    for _ in range(loads):
        plain = browser.new_context(user_agent=UA)
        plain.route("**/dni.js", lambda route: route.abort())
        page, cdp = _open(plain, shop)
        page.wait_for_timeout(SETTLE_MS)
        baseline = _task_ms(cdp)
        plain.close()

        context = browser.new_context(user_agent=UA)
        page, cdp = _open(context, shop, WATCH)
        page.wait_for_timeout(SETTLE_MS)  # the same wait as above: polling would add tasks
        added.append(_task_ms(cdp) - baseline)
        swap.append(page.evaluate("window.__swappedAt"))
        gap.append(
            page.evaluate(
                "window.__swappedAt - performance.getEntriesByType('resource')"
                ".find(e => e.name.endsWith('/v1/visits')).responseEnd"
            )
        )
        rescan.append(
            page.evaluate(
                "(() => { const t = performance.now(); DNI.rescan();"
                " return performance.now() - t; })()"
            )
        )
        nodes = page.evaluate(
            "(() => { let n = 0; const w = document.createTreeWalker(document.body, 4);"
            " while (w.nextNode()) n++; return n; })()"
        )
        context.close()
    return {
        "text nodes": nodes,
        "navigation start to swap": swap,
        "visit answer to swap": gap,
        "main-thread time added by the snippet": added,
        "DNI.rescan() of the whole page": rescan,
    }
