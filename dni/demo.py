"""`dni demo`: a demo site and a demo shop page, so a new user sees a swap within a minute."""

from __future__ import annotations

from flask import Blueprint, render_template

DEMO_SITES = """
[[site]]
key = "demo"
name = "鲜花商城 (demo)"
domains = ["localhost", "127.0.0.1"]
timezone = "Asia/Shanghai"
country = "CN"
forward_to = "+862161234567"

[[site.pool]]
name = "paid"
target = "400-888-1234"
numbers = ["400-100-0001", "400-100-0002", "400-100-0003", "400-100-0004"]
match = { medium = ["cpc", "paid"] }

[[site.pool]]
name = "everyone"
target = "400-888-1234"
extensions = "8000-8099"
match = "*"

[[site.source_number]]
number = "400-200-0001"
target = "400-888-1234"
match = { source = "baidu", medium = "organic" }
"""

bp = Blueprint("demo", __name__)


@bp.get("/demo")
def shop() -> str:
    return render_template("demo.html")
