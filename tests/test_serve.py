"""Running the service: embedded stores, health, the snippet and demo routes."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker

from dni import create_app
from dni.config import Settings
from dni.serve import embedded_stores
from dni.snippet import read_snippet
from dni.store import INSTALL_HINT, PrivateRedis

ROOT = Path(__file__).resolve().parent.parent


def test_embedded_stores_start_a_private_persistent_redis_and_a_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DNI_REDIS_URL", raising=False)
    settings = Settings(instance_path=tmp_path)
    with embedded_stores(settings):
        client = Redis(unix_socket_path=str(settings.redis_socket))
        assert client.ping()
        assert client.config_get("appendonly")["appendonly"] == "yes"
        app = create_app({"instance_path": tmp_path, "flush_seconds": 0})
        response = app.test_client().get("/healthz")
        assert response.get_json() == {"ok": True, "redis": True, "database": True}
    assert (tmp_path / "dni.sqlite3").exists()
    assert not settings.redis_socket.exists() or not _answers(settings.redis_socket)


def _answers(socket: Path) -> bool:
    try:
        return bool(Redis(unix_socket_path=str(socket), socket_connect_timeout=0.2).ping())
    except Exception:
        return False


def test_missing_redis_server_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="apt-get install redis-server"):
        PrivateRedis(tmp_path, tmp_path / "redis.sock").start()
    assert "DNI_REDIS_URL" in INSTALL_HINT


def test_health_reports_redis_down(client: FlaskClient, redis_server: object) -> None:
    redis_server.stop()  # type: ignore[attr-defined]
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["redis"] is False


def test_snippet_is_served_at_a_stable_and_a_hashed_url(client: FlaskClient) -> None:
    snippet = read_snippet(Settings().snippet_path)
    latest = client.get("/dni.js")
    assert latest.status_code == 200 and latest.mimetype == "text/javascript"
    assert latest.headers["Access-Control-Allow-Origin"] == "*"
    assert latest.headers["Cache-Control"] == "public, max-age=300"
    pinned = client.get(f"/{snippet.hashed_name}")
    assert pinned.data == latest.data == snippet.body
    assert pinned.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert client.get("/dni.0000000000000000.js").status_code == 404


def test_built_snippet_is_within_its_size_budget() -> None:
    body = read_snippet(Settings().snippet_path).body
    assert len(gzip.compress(body, 9)) <= 3072, "the snippet is over 3 KB gzipped"


def test_snippet_build_is_reproducible(tmp_path: Path) -> None:
    """package.json's own build, run again, gives the served bytes."""
    package = json.loads((ROOT / "package.json").read_text())
    build = package["scripts"]["build"].split()
    assert build[0] == "terser" and build[-2:] == ["--output", "dni/static/dni.min.js"]
    out = tmp_path / "again.min.js"
    terser = ["npx", "--no-install", *build[:-1], str(out)]
    subprocess.run(terser, cwd=ROOT, check=True, capture_output=True)
    assert out.read_bytes() == read_snippet(Settings().snippet_path).body


def test_embed_code_pins_the_build_with_integrity(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from dni.cli import main

    monkeypatch.setenv("DNI_INSTANCE_PATH", str(tmp_path))
    result = CliRunner().invoke(main, ["snippet", "shop", "--base-url", "https://dni.example.cn/"])
    snippet = read_snippet(Settings().snippet_path)
    assert result.output.strip() == (
        f'<script async src="https://dni.example.cn/{snippet.hashed_name}" '
        f'integrity="{snippet.integrity}" crossorigin="anonymous" data-site="shop"></script>'
    )


def test_demo_page_only_in_demo_mode(client: FlaskClient, app: object, tmp_path: Path) -> None:
    assert client.get("/demo").status_code == 404
    demo = create_app({"instance_path": tmp_path, "flush_seconds": 0, "demo": True})
    page = demo.test_client().get("/demo")
    assert page.status_code == 200 and b'data-site="demo"' in page.data


def test_unknown_route_and_method_answer_json(client: FlaskClient) -> None:
    assert client.get("/v1/nothing").get_json()["code"] == "not_found"
    assert client.get("/v1/visits").status_code == 405


def test_demo_calls_fill_the_keyword_report(
    rt: Any, sessions: sessionmaker[Session], clock: Any
) -> None:
    from dni.callcounts import bring_up_to_date
    from dni.reports import call_report, period
    from dni.web.demo import DEMO_SITES, add_demo_calls
    from tests.factories import load_toml

    load_toml(sessions, DEMO_SITES)
    site = rt.sites.get("demo")
    assert add_demo_calls(rt.stores, site, clock()) == 6  # 5 from the page, 1 from the radio
    bring_up_to_date(sessions, site.id)
    with sessions() as session:
        day = clock().date()
        rows = {
            row["keyword"]: row
            for row in call_report(session, site, period(site, day, day), "keyword")
        }
        channels = {
            row["channel"]: row
            for row in call_report(session, site, period(site, day, day), "channel")
        }
    assert {
        "keyword": "玫瑰",
        "visits": 2,
        "calls": 2,
        "answered": 1,
        "first_time": 2,
        "qualified": 1,
        "sales": 1,
        "revenue": 1280.0,
        "cost": 123.5,  # 120 of spend, 3.50 for handling its answered call
        "roi": 936.4,
    }.items() <= rows["玫瑰"].items()
    radio = channels["radio / offline"]
    assert (radio["calls"], radio["visits"], radio["cost"]) == (
        1,
        0,
        round(300 + 100 / 30 + 3.5, 2),
    )
