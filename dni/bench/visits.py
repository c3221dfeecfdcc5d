"""`dni bench visits`: new visits and heartbeats against a Flask hello-world under the same
gunicorn, for two configurations (2 sync workers; `dni serve`'s defaults), the median of three
wrk runs each; then where the time of one request goes, measured in process.

Uses a private redis-server and a SQLite file in a temporary folder (or DNI_REDIS_URL /
DNI_DATABASE_URL), loads a site with a 60,000-extension pool, and runs one `dni worker` beside
the dni server, as `dni serve` does. `--sweep` measures more gunicorn configurations, the
figures `dni serve`'s defaults were chosen from.
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import Flask

from dni.bench.stores import Scratch, scratch_stores

# Heartbeats every 10 s: leases that never heartbeat (wrk's new visits) are taken back after
# 20 s when the pool runs out, so the pool lasts however long the benchmark runs.
BENCH_SITE = """
[[site]]
key = "bench"
domains = ["127.0.0.1", "localhost"]

[[site.pool]]
name = "all"
target = "400-888-1234"
extensions = "00000-59999"
heartbeat_seconds = 10
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
  -- As the snippet sends it from a page with Google Analytics and Meta's pixel on it.
  local body = string.format('{"site":"bench","visitor":"v%%d-%%d-%%d","url":'
    .. '"http://127.0.0.1/p?utm_source=baidu&utm_medium=cpc&utm_term=kw%%d","referrer":"",'
    .. '"ga":"GA1.2.%%d.1611708469","fbp":"fb.1.1558571054389.%%d"}',
    id, math.random(1, 1000000000), n, n %% 50, n, n)
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
# The two configurations the issue compares; {} is `dni serve`'s own defaults.
CONFIGS: dict[str, dict[str, Any]] = {
    "2 sync workers": {"worker_class": "sync", "workers": 2},
    "dni serve defaults": {},
}
# `--sweep`: what `dni serve`'s defaults were chosen from (DESIGN §7: req/s and p99 at 32).
SWEEP: dict[str, dict[str, Any]] = {
    f"{kind} {workers}x{threads}": {"worker_class": kind, "workers": workers, "threads": threads}
    for kind, workers, threads in (
        ("sync", 2, 1),
        ("sync", 4, 1),
        ("sync", 8, 1),
        ("gthread", 2, 4),
        ("gthread", 4, 2),
        ("gthread", 4, 4),
        ("gthread", 8, 4),
        ("gthread", 8, 8),
    )
}
RUNS = 3


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


def median_of(results: Sequence[LoadResult]) -> LoadResult:
    """Each figure's median over the runs."""
    return LoadResult(
        statistics.median(r.requests_per_second for r in results),
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
    )


def free_port() -> int:
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


def wait_http(url: str, timeout: float = 20) -> None:
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


@contextmanager
def _running(commands: Sequence[list[str]], env: dict[str, str]) -> Iterator[None]:
    """Run the commands meanwhile, their output in one log file of the instance folder."""
    with (Path(env["DNI_INSTANCE_PATH"]) / "bench.log").open("ab") as log:
        processes = [subprocess.Popen(c, env=env, stdout=log, stderr=log) for c in commands]
        try:
            yield
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait()


def _server(which: str, port: int, options: dict[str, Any]) -> list[str]:
    bind = f"127.0.0.1:{port}"
    return [sys.executable, "-m", "dni.bench.visits", which, bind, json.dumps(options)]


@dataclass(frozen=True)
class Figures:
    hello: LoadResult
    visit: LoadResult
    beat: LoadResult


def run_visit_benchmark(
    seconds: int, connections: int, echo: Callable[[str], None], sweep: bool = False
) -> None:
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
        try:
            _run_all(scratch, env, seconds, connections, echo, SWEEP if sweep else CONFIGS)
        except RuntimeError:
            log = scratch.folder / "bench.log"
            if log.exists():
                echo("the servers' log ends:\n" + "\n".join(log.read_text().splitlines()[-30:]))
            raise


def _run_all(
    scratch: Scratch,
    env: dict[str, str],
    seconds: int,
    connections: int,
    echo: Callable[[str], None],
    configs: dict[str, dict[str, Any]],
) -> None:
    cores = os.cpu_count()
    load = f"wrk -t2 -c{connections}, {seconds} s per run, median of {RUNS} runs"
    echo(f"dni bench visits: {cores} cores, {load}; one dni worker beside the server")
    heartbeat_visits: list[str] = []
    figures: dict[str, Figures] = {}
    with _running([[sys.executable, "-m", "dni", "worker"]], env):
        for n, (name, options) in enumerate(configs.items()):
            echo(f"  measuring {name} ({n + 1}/{len(configs)}) …")
            figures[name] = _measure_config(
                scratch, env, options, seconds, connections, heartbeat_visits
            )
    _print_figures(figures, echo)
    _print_breakdown(profile_requests(scratch, 2000), echo)
    if scratch.redis is not None:  # ours to stop
        port = free_port()
        with _running([_server("dni", port, {})], env):
            url = f"http://127.0.0.1:{port}"
            wait_http(url + "/healthz", timeout=60)
            # Warm every worker first: a worker's first request pays for lazy imports.
            run_wrk(url, 2, connections, scratch.folder / "visit.lua")
            _redis_down(scratch, url, echo)


def _measure_config(
    scratch: Scratch,
    env: dict[str, str],
    options: dict[str, Any],
    seconds: int,
    connections: int,
    heartbeat_visits: list[str],
) -> Figures:
    hello_port, dni_port = free_port(), free_port()
    hello_url, dni_url = f"http://127.0.0.1:{hello_port}", f"http://127.0.0.1:{dni_port}"
    servers = [_server("hello", hello_port, options), _server("dni", dni_port, options)]
    with _running(servers, env):
        wait_http(hello_url + "/")
        wait_http(dni_url + "/healthz")
        if not heartbeat_visits:  # once: visits that heartbeat, off probation from the start
            heartbeat_visits += _live_visits(dni_url, 500)
        visit_lua = scratch.folder / "visit.lua"
        visit_lua.write_text(VISIT_SCRIPT % {"headers": HEADERS})
        beat_lua = scratch.folder / "heartbeat.lua"
        listed = ",".join(f'"{v}"' for v in heartbeat_visits)
        beat_lua.write_text(HEARTBEAT_SCRIPT % {"visits": listed, "headers": HEADERS})
        run_wrk(dni_url, 2, connections, visit_lua)  # warm up: caches, connections
        runs: dict[str, list[LoadResult]] = {"hello": [], "visit": [], "beat": []}
        for _ in range(RUNS):  # interleaved, so that drift hits every route alike
            runs["hello"].append(run_wrk(hello_url + "/", seconds, connections, None))
            runs["visit"].append(run_wrk(dni_url, seconds, connections, visit_lua))
            runs["beat"].append(run_wrk(dni_url, seconds, connections, beat_lua))
    return Figures(*(median_of(r) for r in runs.values()))


def _live_visits(dni_url: str, count: int) -> list[str]:
    visits = []
    for i in range(count):
        body = {"site": "bench", "visitor": f"hb-visitor-{i}", "url": "http://127.0.0.1/"}
        status, answer = _post(dni_url + "/v1/visits", body)
        if status == 200:
            visit = str(answer["visit"])
            _post(f"{dni_url}/v1/visits/{visit}/heartbeat", {"url": "http://127.0.0.1/"})
            visits.append(visit)
    return visits


def _print_figures(figures: dict[str, Figures], echo: Callable[[str], None]) -> None:
    columns = f"{'req/s':>8}{'vs hello':>9}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}"
    echo(f"{'configuration':<22}{'route':<13}{columns}")
    for name, f in figures.items():
        for route, result in (
            ("hello world", f.hello),
            ("new visit", f.visit),
            ("heartbeat", f.beat),
        ):
            ratio = result.requests_per_second / f.hello.requests_per_second
            shown = f"{result.requests_per_second:>8.0f}{ratio:>9.2f}{result.p50_ms:>8.2f}"
            echo(f"{name:<22}{route:<13}{shown}{result.p99_ms:>8.2f}{result.errors:>7}")
    echo("targets (DESIGN §7): new visit >= 0.60x hello, heartbeat >= 0.80x, p99 < 25 ms")
    for name, f in figures.items():
        visit_ratio = f.visit.requests_per_second / f.hello.requests_per_second
        beat_ratio = f.beat.requests_per_second / f.hello.requests_per_second
        checks = [
            ("new visit 0.6x", visit_ratio >= 0.6),
            ("heartbeat 0.8x", beat_ratio >= 0.8),
            ("new visit p99", f.visit.p99_ms < 25),
            ("heartbeat p99", f.beat.p99_ms < 25),
        ]
        said = ", ".join(f"{what} {'met' if ok else 'NOT met'}" for what, ok in checks)
        echo(f"  {name}: {said}")


@dataclass(frozen=True)
class Breakdown:
    """Microseconds per request spent in each step, and in the whole request."""

    route: str
    requests: int
    steps: dict[str, float]
    total: float
    lua: float  # of the Redis step: the script's own time inside Redis


class Stopwatch:
    """Times calls of chosen functions by wrapping them (and only while in use)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self._restore: list[tuple[object, str, object]] = []

    def wrap(self, owner: object, name: str, step: str) -> None:
        original = getattr(owner, name)
        self.spent.setdefault(step, 0.0)

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.spent[step] += time.perf_counter() - began

        self._restore.append((owner, name, original))
        setattr(owner, name, timed)

    def restore(self) -> None:
        for owner, name, original in reversed(self._restore):
            setattr(owner, name, original)
        self._restore.clear()


WHOLE = "the whole request"


def profile_requests(scratch: Scratch, requests: int) -> list[Breakdown]:
    """New visits and heartbeats through the real app in this process (Flask's test client,
    no HTTP server), with UA parsing, traffic classification, JSON and the Redis call timed
    inside the WSGI app's own time."""
    from dni import create_app, visits
    from dni.store import Scripts

    stores = {"redis_url": scratch.redis_url, "database_url": scratch.database_url}
    app = create_app(stores | {"instance_path": scratch.folder, "visit_rate_limit": 10**9})
    client = app.test_client()
    headers = {"Content-Type": "text/plain", "User-Agent": UA, "Origin": "http://127.0.0.1"}
    url = "http://127.0.0.1/p?utm_source=baidu&utm_medium=cpc&utm_term=kw"

    def new_visit(i: int) -> Any:
        body = {"site": "bench", "visitor": f"profile-{i}", "url": f"{url}{i % 50}"}
        return client.post("/v1/visits", data=json.dumps(body), headers=headers)

    for _ in range(100):  # the first visit rebuilds the 60,000-slot pool: may time out
        if new_visit(-1).status_code == 200:
            break
        time.sleep(0.2)
    ids = [new_visit(-2 - i).get_json()["visit"] for i in range(50)]

    def heartbeat(i: int) -> Any:
        body = json.dumps({"url": "http://127.0.0.1/p"})
        return client.post(f"/v1/visits/{ids[i % 50]}/heartbeat", data=body, headers=headers)

    hello = hello_app()
    hello_client = hello.test_client()
    redis = app.extensions["dni"].stores.redis
    steps = [
        (visits, "classify_agent", "UA parse"),
        (visits, "classify", "traffic classification"),
        (visits, "choose_numbers", "traffic classification"),
        (json, "dumps", "JSON"),
        (json, "loads", "JSON"),
        (Scripts, "run", "Redis (one script call)"),
    ]
    results = [_time_wsgi(hello, lambda _i: hello_client.get("/"), "hello world", requests, [])]
    for route, send in (("new visit", new_visit), ("heartbeat", heartbeat)):
        redis.config_resetstat()
        timed = _time_wsgi(app, send, route, requests, steps)
        stats = redis.info("commandstats").get("cmdstat_evalsha", {})
        lua = float(stats.get("usec", 0)) / requests
        results.append(Breakdown(route, requests, timed.steps, timed.total, lua))
    return results


def _time_wsgi(
    app: Flask,
    send: Callable[[int], Any],
    route: str,
    requests: int,
    steps: list[tuple[object, str, str]],
) -> Breakdown:
    """`requests` calls of `send` after a warm-up, timing `app`'s WSGI call (the request as
    gunicorn runs it, not the test client) and each (owner, function, step) inside it."""
    for i in range(200):
        send(10**6 + i)
    watch = Stopwatch()
    for owner, name, step in steps:
        watch.wrap(owner, name, step)
    watch.wrap(app, "wsgi_app", WHOLE)
    try:
        for i in range(requests):
            assert send(i).status_code == 200
    finally:
        watch.restore()
    per = 1e6 / requests
    spent = {k: v * per for k, v in watch.spent.items() if k != WHOLE}
    return Breakdown(route, requests, spent, watch.spent[WHOLE] * per, 0.0)


def _print_breakdown(breakdowns: list[Breakdown], echo: Callable[[str], None]) -> None:
    echo("per request, in process (the WSGI app called by Flask's test client, one thread):")
    for b in breakdowns:
        echo(f"  {b.route} ({b.requests} requests): {b.total:.0f} µs in all")
        if not b.steps:
            continue
        rest = b.total - sum(b.steps.values())
        for step, spent in [*b.steps.items(), ("Flask, routing, input checks, the rest", rest)]:
            echo(f"    {step:<40}{spent:>8.0f} µs {spent / b.total:>6.1%}")
        echo(f"      of the Redis call, Lua inside Redis   {b.lua:>8.0f} µs")


def _redis_down(scratch: Scratch, dni_url: str, echo: Callable[[str], None]) -> None:
    assert scratch.redis is not None
    wait_http(dni_url + "/healthz", timeout=60)
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
    """`python -m dni.bench.visits hello|dni HOST:PORT OPTIONS_JSON`: a server as `dni serve`
    runs it, with these gunicorn settings replaced."""
    from dni import create_app
    from dni.serve import run_gunicorn

    which, bind, options = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    sys.argv = sys.argv[:1]  # gunicorn parses argv
    run_gunicorn(hello_app if which == "hello" else create_app, bind, overrides=options)


if __name__ == "__main__":
    main()
