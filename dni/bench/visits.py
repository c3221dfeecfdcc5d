"""`dni bench visits`: the visit API against a hello-world Flask route, same gunicorn, one run.

Uses a private redis-server and a SQLite file in a temporary folder (or DNI_REDIS_URL /
DNI_DATABASE_URL), loads a site with a 60,000-extension pool, and loads each server with wrk.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask

from dni.bench.stores import Scratch, scratch_stores

BENCH_SITE = """
[[site]]
key = "bench"
domains = ["127.0.0.1", "localhost"]

[[site.pool]]
name = "all"
target = "400-888-1234"
extensions = "00000-59999"
match = "*"
"""
UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
HEADERS = f'{{["Content-Type"]="text/plain", ["Origin"]="http://127.0.0.1", ["User-Agent"]="{UA}"}}'
VISIT_SCRIPT = """
local n = 0
local id = 0
setup = function(thread) id = id + 1; thread:set("id", id) end
request = function()
  n = n + 1
  local body = string.format('{"site":"bench","visitor":"v%%d-%%d-%%d","url":'
    .. '"http://127.0.0.1/p?utm_source=baidu&utm_medium=cpc&utm_term=kw%%d","referrer":""}',
    id, math.random(1, 1000000000), n, n %% 50)
  return wrk.format("POST", "/v1/visits", %(headers)s, body)
end
"""
HEARTBEAT_SCRIPT = """
local visits = {%(visits)s}
local n = 0
request = function()
  n = n + 1
  local visit = visits[(n %% #visits) + 1]
  return wrk.format("POST", "/v1/visits/" .. visit .. "/heartbeat", %(headers)s,
    '{"url":"http://127.0.0.1/p"}')
end
"""


def hello_app() -> Flask:
    app = Flask("hello")

    @app.get("/")
    def hello() -> str:
        return "Hello, World!"

    return app


@dataclass(frozen=True)
class LoadResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if found is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    value, unit = found.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(url: str, seconds: int, connections: int, script: Path | None) -> LoadResult:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    try:
        return _parse_wrk(out)
    except (AttributeError, ValueError) as exc:
        raise RuntimeError(f"could not read wrk's output:\n{out}") from exc


def _parse_wrk(out: str) -> LoadResult:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    count = int(bad.group(1)) if bad else 0
    if errors:
        count += sum(int(g) for g in errors.groups())
    return LoadResult(rps, p50, p99, count)


def _wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def _post(url: str, body: dict[str, str]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "text/plain", "User-Agent": UA, "Origin": "http://127.0.0.1"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}


def _serve(which: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dni.bench.visits", which, f"127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def run_visit_benchmark(seconds: int, connections: int, echo: Callable[[str], None]) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    given = os.environ.get("DNI_REDIS_URL", ""), os.environ.get("DNI_DATABASE_URL", "")
    with scratch_stores(BENCH_SITE, datetime.now(UTC), *given) as scratch:
        env = dict(os.environ)
        env |= {
            "DNI_REDIS_URL": scratch.redis_url,
            "DNI_DATABASE_URL": scratch.database_url,
            "DNI_VISIT_RATE_LIMIT": str(10**9),
            "DNI_INSTANCE_PATH": str(scratch.folder),
        }
        hello_port, dni_port = _port(), _port()
        servers = [_serve("hello", hello_port, env), _serve("dni", dni_port, env)]
        try:
            _measure(scratch, f"http://127.0.0.1:{hello_port}", f"http://127.0.0.1:{dni_port}",
                     seconds, connections, echo)  # fmt: skip
        finally:
            for server in servers:
                server.terminate()
                server.wait()


def _measure(
    scratch: Scratch,
    hello_url: str,
    dni_url: str,
    seconds: int,
    connections: int,
    echo: Callable[[str], None],
) -> None:
    folder = scratch.folder
    _wait_http(hello_url + "/")
    _wait_http(dni_url + "/healthz")
    visit_lua = folder / "visit.lua"
    visit_lua.write_text(VISIT_SCRIPT % {"headers": HEADERS})
    run_wrk(dni_url, 2, connections, visit_lua)  # warm up: pool sync, caches

    visits = []
    for i in range(500):
        status, body = _post(
            dni_url + "/v1/visits",
            {"site": "bench", "visitor": f"hb-visitor-{i}", "url": "http://127.0.0.1/"},
        )
        if status == 200:
            visits.append(str(body["visit"]))
    beat_lua = folder / "heartbeat.lua"
    listed = ",".join(f'"{v}"' for v in visits)
    beat_lua.write_text(HEARTBEAT_SCRIPT % {"visits": listed, "headers": HEADERS})

    hello = run_wrk(hello_url + "/", seconds, connections, None)
    visit = run_wrk(dni_url, seconds, connections, visit_lua)
    beat = run_wrk(dni_url, seconds, connections, beat_lua)

    cores = os.cpu_count()
    echo(f"dni bench visits: {cores} cores, {connections} connections, {seconds} s per run,")
    echo("gunicorn gthread workers as `dni serve` runs them, SQLite, private Redis")
    echo(f"{'route':<14}{'req/s':>10}{'vs hello':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for name, result in (("hello world", hello), ("new visit", visit), ("heartbeat", beat)):
        ratio = result.requests_per_second / hello.requests_per_second
        echo(
            f"{name:<14}{result.requests_per_second:>10.0f}{ratio:>9.0%} "
            f"{result.p50_ms:>8.2f} {result.p99_ms:>8.2f}{result.errors:>8}"
        )
    if scratch.redis is None:
        return  # not ours to stop
    scratch.redis.stop()
    timings = []
    for i in range(20):
        began = time.monotonic()
        status, _ = _post(
            dni_url + "/v1/visits",
            {"site": "bench", "visitor": f"down-visitor-{i}", "url": "http://127.0.0.1/"},
        )
        timings.append((time.monotonic() - began) * 1000)
        assert status == 503, status
    echo(
        f"Redis down: 503 in median {statistics.median(timings):.1f} ms, "
        f"max {max(timings):.1f} ms (20 requests)"
    )


def main() -> None:
    """`python -m dni.bench.visits hello|dni HOST:PORT`: a server as `dni serve` runs it."""
    from dni import create_app
    from dni.serve import run_gunicorn

    which, bind = sys.argv[1], sys.argv[2]
    sys.argv = sys.argv[:1]  # gunicorn parses argv
    run_gunicorn(hello_app if which == "hello" else create_app, bind)


if __name__ == "__main__":
    main()
