"""`dni bench faults`: what holds when the stores fail under load (issue 10). Each scenario gets
fresh stores (a private redis-server with AOF, SQLite or a private PostgreSQL), a real
`dni serve`, simulated visitors (dni/faults_load.py) and one fault; afterwards what the server
acknowledged is checked against SQL and one row per scenario is printed.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import func, select

from dni.bench.faults_load import CDR_SECRET, SITE, Load, Record, Reply
from dni.bench.stores import Scratch, private_postgres, scratch_stores
from dni.bench.visits import free_port, wait_http
from dni.history import FLUSH_LOCK, flush_history
from dni.models import Call, Lease, TrackingNumber
from dni.store import PrivateRedis, Scripts, Stores

WORKERS = 4
FLUSH_SECONDS = 1.0
SAMPLE_PATIENCE = 30.0  # seconds a Redis sample waits for a restarted server
SITE_TOML = f"""
[[site]]
key = "{SITE}"
domains = ["127.0.0.1", "localhost"]
cdr_secret = "{CDR_SECRET}"

[[site.pool]]
name = "paid"
target = "400-888-1234"
extensions = "{{first}}-{{last}}"
match = "*"
lease_seconds = 60
heartbeat_seconds = {{heartbeat}}
overflow = "{{overflow}}"
"""

Window = tuple[float, float]  # monotonic times a fault began and was undone


@dataclass
class Stage:
    """One scenario's running parts, for its fault to act on."""

    redis: PrivateRedis
    server: subprocess.Popen[bytes]
    database_url: str
    seconds: float
    began: float

    def sleep_until(self, share: float) -> None:
        time.sleep(max(0.0, self.began + share * self.seconds - time.monotonic()))


def _no_fault(stage: Stage) -> list[Window]:
    return []


def _restart_redis(stage: Stage, wipe: bool) -> list[Window]:
    stage.sleep_until(0.4)
    began = time.monotonic()
    process = stage.redis.process
    assert process is not None
    process.kill()
    process.wait()
    stage.redis.process = None
    try:
        time.sleep(max(1.0, 0.1 * stage.seconds))
        if wipe:
            shutil.rmtree(stage.redis.folder / "appendonlydir", ignore_errors=True)
            (stage.redis.folder / "dump.rdb").unlink(missing_ok=True)
    finally:
        stage.redis.start()
    return [(began, time.monotonic())]


def _kill_workers(stage: Stage) -> list[Window]:
    windows: list[Window] = []
    every = max(1.0, stage.seconds / 5)
    stage.sleep_until(0.2)
    while time.monotonic() < stage.began + 0.8 * stage.seconds:
        children = Path(f"/proc/{stage.server.pid}/task/{stage.server.pid}/children")
        pids = [int(p) for p in children.read_text().split()]
        if pids:
            os.kill(pids[len(windows) % len(pids)], signal.SIGKILL)
            windows.append((time.monotonic(), time.monotonic()))
        time.sleep(every)
    return windows


def _stop_postgres(stage: Stage) -> list[Window]:
    stage.sleep_until(0.35)
    began = time.monotonic()
    _pg_ctl(stage.database_url, "stop")
    try:
        time.sleep(max(1.0, 0.2 * stage.seconds))
    finally:
        _pg_ctl(stage.database_url, "start")
    return [(began, time.monotonic())]


def _pg_ctl(url: str, action: str) -> None:
    """Stop or start again the server of `private_postgres()` that `url` names."""
    query = parse_qs(urlsplit(url).query)
    folder, port = query["host"][0], query["port"][0]
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4])
    )
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    command = [*as_owner, found[-1], "-D", f"{folder}/data", "-w", "-l", f"{folder}/log"]
    if action == "stop":
        command += ["-m", "fast", "stop"]
    else:
        command += ["-o", f"-k {folder} -p {port} -c listen_addresses='' -c fsync=off", "start"]
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True)


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: Callable[[Stage], list[Window]]
    postgres: bool = False
    slots: int = 200
    overflow: str = "fallback"
    lanes: int = 8
    per_lane: int = 8
    attackers: int = 0


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("redis-kill", lambda s: _restart_redis(s, wipe=False)),
        Scenario("redis-wipe", lambda s: _restart_redis(s, wipe=True)),
        Scenario("worker-kill", _kill_workers),
        Scenario("postgres-stop", _stop_postgres, postgres=True),
        Scenario("drain", _no_fault, lanes=4, per_lane=2, attackers=4),
        Scenario("share-soak", _no_fault, slots=10, overflow="share"),
    )
}


@dataclass(frozen=True)
class RedisStats:
    memory_mb: float
    lua_calls: int  # EVALSHA and EVAL calls since the server started
    lua_usec: int


def redis_stats(redis: PrivateRedis) -> RedisStats:
    client = Redis(unix_socket_path=str(redis.socket), socket_timeout=2)
    try:
        memory = int(client.info("memory")["used_memory"])
        stats = client.info("commandstats")
    finally:
        client.close()
    lua = [stats[k] for k in ("cmdstat_evalsha", "cmdstat_eval") if k in stats]
    calls = sum(int(s["calls"]) for s in lua)
    return RedisStats(memory / 2**20, calls, sum(int(s["usec"]) for s in lua))


def _sample(redis: PrivateRedis, moments: list[float], into: list[RedisStats]) -> None:
    """Redis figures at each monotonic moment (taken beside the fault: Redis may be down)."""
    for moment in moments:
        time.sleep(max(0.0, moment - time.monotonic()))
        deadline = time.monotonic() + SAMPLE_PATIENCE
        while True:
            try:
                into.append(redis_stats(redis))
                break
            except RedisError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.1)


def lua_us(before: RedisStats, after: RedisStats) -> float:
    """Mean microseconds per script call between two samples (since a restart in between)."""
    if after.lua_calls < before.lua_calls:
        before = RedisStats(0.0, 0, 0)
    calls = after.lua_calls - before.lua_calls
    return (after.lua_usec - before.lua_usec) / calls if calls else 0.0


@dataclass(frozen=True)
class Outcome:
    """One scenario's figures; None where a figure does not apply (no fault)."""

    name: str
    database: str
    requests: int
    server_errors: int  # 5xx other than 503
    unanswered: int  # no HTTP answer at all (connection refused or reset)
    unavailable_ms: list[float]  # latency of each 503
    first_200_s: float | None
    kept: tuple[int, int] | None  # visitors who kept their number, of those seen across a fault
    tracked: tuple[int, int]  # real visitors whose first visit got a tracking number, of all
    leases_missing: tuple[int, int]  # acknowledged lease starts not in SQL, of acknowledged
    calls_missing: tuple[int, int]
    duplicates: int  # lease or call rows stored more than once
    memory_mb: tuple[float, float]  # Redis memory used a fifth into the run, at its end
    lua_us: tuple[float, float]  # per script call over the first fifth, over the last one


def _first_200(replies: list[Reply], windows: list[Window]) -> float | None:
    """Slowest recovery: from a fault's undoing to the first 200 of a kind it had failed."""
    worst = None
    for began, undone in windows:
        failed = {r.kind for r in replies if began <= r.at <= undone and r.status in (0, 503)}
        kinds = failed or {r.kind for r in replies}
        done = [
            r.at + r.ms / 1000
            for r in replies
            if r.at >= undone and r.status == 200 and r.kind in kinds
        ]
        wait = min(done) - undone if done else float("inf")
        worst = wait if worst is None else max(worst, wait)
    return worst


def _kept(record: Record, windows: list[Window]) -> tuple[int, int] | None:
    """Of visitors shown a number before the first fault and answered after the last one's
    undoing, those shown the same number then."""
    if not windows:
        return None
    began, undone = windows[0][0], windows[-1][1]
    kept = across = 0
    for answers in record.seen.values():
        before = [slot for at, slot in answers if at < began]
        after = [slot for at, slot in answers if at >= undone]
        if before and before[-1] is not None and after:
            across += 1
            kept += after[0] == before[-1]
    return kept, across


def _check_sql(scratch: Scratch, record: Record) -> tuple[tuple[int, int], tuple[int, int], int]:
    with scratch.sessions() as session:
        rows = session.execute(
            select(Lease.visit_id, TrackingNumber.number_e164, TrackingNumber.extension).join(
                TrackingNumber, Lease.number_id == TrackingNumber.id
            )
        ).all()
        calls = set(session.scalars(select(Call.provider_call_id)))
        twice = 0
        for model, columns in (
            (Lease, (Lease.visit_id, Lease.number_id, Lease.started_at)),
            (Call, (Call.site_id, Call.provider, Call.provider_call_id)),
        ):
            counts = select(func.count().label("n")).select_from(model).group_by(*columns)
            twice += sum(n - 1 for n in session.scalars(counts) if n > 1)
    stored = {(visit, number, extension) for visit, number, extension in rows}
    leases = (len(record.leases - stored), len(record.leases))
    return leases, (len(record.calls - calls), len(record.calls)), twice


def _serve(scratch: Scratch, port: int) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "DNI_REDIS_URL": scratch.redis_url,
        "DNI_DATABASE_URL": scratch.database_url,
        "DNI_INSTANCE_PATH": str(scratch.folder),
        "DNI_PROXY_COUNT": "1",
        "DNI_FLUSH_SECONDS": str(FLUSH_SECONDS),
    }
    command = [
        sys.executable,
        "-c",
        "from dni.cli import main; main()",
        "serve",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(WORKERS),
    ]
    # Its own session: the cleanup stops gunicorn's workers too, even if the master died.
    with (scratch.folder / "gunicorn.log").open("wb") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)


def _stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    try:
        os.killpg(server.pid, signal.SIGKILL)  # any worker the master left behind
    except ProcessLookupError:
        pass


@contextmanager
def _stores(scenario: Scenario, seconds: int) -> Iterator[Scratch]:
    # Heartbeats, and so the probation of new leases (two of them), scale with the run.
    heartbeat = max(1, min(30, seconds // 4))
    sites = SITE_TOML.format(
        first=8000, last=8000 + scenario.slots - 1, heartbeat=heartbeat, overflow=scenario.overflow
    )
    with ExitStack() as stack:
        url = stack.enter_context(private_postgres()) if scenario.postgres else ""
        yield stack.enter_context(scratch_stores(sites, datetime.now(UTC), "", url))


def run_scenario(scenario: Scenario, seconds: int) -> Outcome:
    """Fresh stores and server, `seconds` of load with the scenario's fault, then the checks."""
    with _stores(scenario, seconds) as scratch, ExitStack() as stack:
        assert scratch.redis is not None
        port = free_port()
        server = _serve(scratch, port)
        stack.callback(_stop_server, server)
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        began = time.monotonic()
        samples: list[RedisStats] = []
        moments = [began, began + 0.2 * seconds, began + 0.8 * seconds]
        sampler = threading.Thread(
            target=_sample, args=(scratch.redis, moments, samples), daemon=True
        )
        sampler.start()
        load = Load(port, scenario.lanes, scenario.per_lane, stay=seconds * 0.8, seed=7)
        stage = Stage(scratch.redis, server, scratch.database_url, seconds, began)
        load.start(scenario.attackers)
        stack.callback(load.stop)
        windows = scenario.fault(stage)
        stage.sleep_until(1.0)
        load.stop()
        time.sleep(FLUSH_SECONDS * 2 + 0.5)  # the workers' flushers move what is queued
        sampler.join()
        _sample(scratch.redis, [time.monotonic()], samples)
        if len(samples) != len(moments) + 1:
            raise RuntimeError(f"Redis did not answer within {SAMPLE_PATIENCE:g} s")
        _stop_server(server)
        client = Redis.from_url(scratch.redis_url)
        client.delete(FLUSH_LOCK)  # every flusher is gone; a SIGKILLed one may have held it
        flush_history(Stores(client, Scripts(), scratch.sessions))  # what the workers left
        client.close()
        leases, calls, twice = _check_sql(scratch, load.record)
    replies = load.record.replies
    first = load.record.first_tracked
    return Outcome(
        name=scenario.name,
        database="PostgreSQL" if scenario.postgres else "SQLite",
        requests=len(replies),
        server_errors=sum(1 for r in replies if r.status >= 500 and r.status != 503),
        unanswered=sum(1 for r in replies if r.status == 0),
        unavailable_ms=[r.ms for r in replies if r.status == 503],
        first_200_s=_first_200(replies, windows) if windows else None,
        kept=_kept(load.record, windows),
        tracked=(sum(first), len(first)),
        leases_missing=leases,
        calls_missing=calls,
        duplicates=twice,
        memory_mb=(samples[1].memory_mb, samples[3].memory_mb),
        lua_us=(lua_us(samples[0], samples[1]), lua_us(samples[2], samples[3])),
    )


HEADER = (
    f"{'scenario':<14}{'SQL':<11}{'requests':>9}{'5xx':>6}{'no ans':>7}{'503s':>6}"
    f"{'503 p50':>8}{'503 max':>8}{'1st 200':>8}{'kept':>12}{'tracked':>13}"
    f"{'lease miss':>12}{'call miss':>10}{'dups':>5}{'Redis MB':>13}{'Lua us/call':>13}"
)


def _share(pair: tuple[int, int] | None) -> str:
    if pair is None:
        return "-"
    done, of = pair
    return f"{done / of:.0%} of {of}" if of else "0 of 0"


def _missing(pair: tuple[int, int]) -> str:
    return f"{pair[0]}/{pair[1]}"


def format_row(o: Outcome) -> str:
    """One fixed-width line of HEADER's columns."""
    p50 = f"{statistics.median(o.unavailable_ms):.1f}" if o.unavailable_ms else "-"
    top = f"{max(o.unavailable_ms):.1f}" if o.unavailable_ms else "-"
    first = "-" if o.first_200_s is None else f"{o.first_200_s:.2f}s"
    if o.first_200_s == float("inf"):
        first = "never"
    memory = "{:.1f}->{:.1f}".format(*o.memory_mb)
    lua = "{:.0f}->{:.0f}".format(*o.lua_us)
    return (
        f"{o.name:<14}{o.database:<11}{o.requests:>9}{o.server_errors:>6}{o.unanswered:>7}"
        f"{len(o.unavailable_ms):>6}{p50:>8}{top:>8}{first:>8}{_share(o.kept):>12}"
        f"{_share(o.tracked):>13}{_missing(o.leases_missing):>12}"
        f"{_missing(o.calls_missing):>10}{o.duplicates:>5}{memory:>13}{lua:>13}"
    )


def run_fault_benchmark(seconds: int, scenarios: str, echo: Callable[[str], None]) -> list[Outcome]:
    """Run the named scenarios (comma-separated, or "all") and print one row each."""
    names = list(SCENARIOS) if scenarios == "all" else [n.strip() for n in scenarios.split(",")]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}: one of {', '.join(SCENARIOS)}")
    outcomes = []
    for name in names:
        print(f"dni bench faults: {name} ({seconds} s) ...", file=sys.stderr, flush=True)
        began = time.monotonic()
        outcomes.append(run_scenario(SCENARIOS[name], seconds))
        took = time.monotonic() - began
        print(f"dni bench faults: {name} done in {took:.0f} s", file=sys.stderr, flush=True)
    echo(
        f"dni bench faults: {seconds} s per scenario, {WORKERS} gunicorn workers, "
        f"flush every {FLUSH_SECONDS:g} s, private Redis (AOF everysec)"
    )
    echo("kept: visitors shown the same number after the fault, of those shown one before it;")
    echo("tracked: real visitors whose first visit got a pool number; miss: acknowledged, not")
    echo("in SQL after a final flush; 1st 200: from the fault's undoing; no ans: no HTTP answer")
    echo(HEADER)
    for outcome in outcomes:
        echo(format_row(outcome))
    return outcomes
