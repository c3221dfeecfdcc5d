"""dni/web/openapi.yaml against a live `dni serve` on SQLite, checked by schemathesis.

The server runs as in production (gunicorn, a private redis-server, a SQLite file) in a
temporary instance folder, with one site loaded, a read key and a few calls pushed through
the signed CDR route; schemathesis then generates requests for every operation of the spec
and fails on a 5xx or on any status, content type or body the spec does not describe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dni.providers.cdr import sign
from tests.factories import shop_toml
from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SPEC = ROOT / "dni" / "web" / "openapi.yaml"
CDR_SECRET = "schemathesis-cdr-secret-0123456789"
# Per operation: about 90 s for the whole test on 2 cores.
MAX_EXAMPLES = 250
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance"
)

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("DNI_TEST_DATABASE_URL")),
    reason="run on SQLite only, not in the PostgreSQL pass",
)


def _env(instance: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DNI_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        DNI_INSTANCE_PATH=str(instance),
        DNI_VISIT_RATE_LIMIT="1000000",
        DNI_VISIT_NETWORK_LIMIT="1000000",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def _dni(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / "dni"), *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"dni {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


def _wait_until_up(base: str, server: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError("dni serve exited at start")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            time.sleep(0.1)
    raise AssertionError("dni serve did not come up")


def _push_calls(base: str) -> None:
    """A batch of calls through the signed generic CDR route, as a provider sends them."""
    started = datetime.now(UTC) - timedelta(minutes=5)
    records = [
        {
            "call_id": f"seed-{i}",
            "from": f"+86138123456{i:02d}",
            "to": "400-100-0001" if i % 2 else "400-888-1234",
            "extension": "" if i % 2 else str(8000 + i),
            "started_at": (started + timedelta(seconds=i)).isoformat(),
            "status": "completed",
            "duration": 30 + i,
        }
        for i in range(5)
    ]
    body = json.dumps(records).encode()
    timestamp = str(int(time.time()))
    request = urllib.request.Request(
        base + "/v1/calls/cdr/shop",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-DNI-Timestamp": timestamp,
            "X-DNI-Signature": sign(CDR_SECRET, timestamp, body),
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 207), response.read()


def _tail(path: Path, lines: int = 80) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def test_the_spec_holds_against_a_live_server(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    instance.mkdir()
    env = _env(instance)
    sites = tmp_path / "sites.toml"
    sites.write_text(
        shop_toml().replace('"env:DNI_TEST_CDR_SECRET"', json.dumps(CDR_SECRET)),
        encoding="utf-8",
    )
    _dni(env, "db", "upgrade")
    _dni(env, "load", str(sites))
    key = _dni(
        env, "apikey", "create", "--name", "schemathesis", "--show-callers", "--write"
    ).strip()
    assert key and " " not in key, key

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with log.open("wb") as stderr:
        server = subprocess.Popen(
            [str(BIN / "dni"), "serve", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
            env=env,
            stdout=stderr,
            stderr=stderr,
        )
        try:
            _wait_until_up(base, server)
            _push_calls(base)
            run = subprocess.run(
                [
                    str(BIN / "schemathesis"),
                    "run",
                    str(SPEC),
                    "--url",
                    base,
                    "--checks",
                    CHECKS,
                    "--max-examples",
                    str(MAX_EXAMPLES),
                    "--seed",
                    "1",
                    "--workers",
                    "2",
                    "--request-timeout",
                    "10",
                    "--header",
                    f"Authorization: Bearer {key}",
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                cwd=tmp_path,
            )
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    assert run.returncode == 0, (
        f"schemathesis failed ({run.returncode}):\n{run.stdout}\n{run.stderr}\n"
        f"--- dni serve stderr (tail) ---\n{_tail(log)}"
    )
