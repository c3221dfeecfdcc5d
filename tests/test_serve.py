"""Running the service: embedded stores, health, the snippet and demo routes."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask.testing import FlaskClient
from redis import Redis

from dni import create_app
from dni.config import Settings
from dni.redisdb import INSTALL_HINT, PrivateRedis
from dni.serve import embedded_stores


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


def test_snippet_is_served_with_cors_and_cache_headers(client: FlaskClient) -> None:
    response = client.get("/dni.js")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "max-age=300" in response.headers["Cache-Control"]
    assert b"window" in response.data


def test_demo_page_only_in_demo_mode(client: FlaskClient, app: object, tmp_path: Path) -> None:
    assert client.get("/demo").status_code == 404
    demo = create_app({"instance_path": tmp_path, "flush_seconds": 0, "demo": True})
    page = demo.test_client().get("/demo")
    assert page.status_code == 200 and b'data-site="demo"' in page.data


def test_unknown_route_and_method_answer_json(client: FlaskClient) -> None:
    assert client.get("/v1/nothing").get_json()["code"] == "not_found"
    assert client.get("/v1/visits").status_code == 405
