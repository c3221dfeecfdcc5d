"""`dni worker`: the app starts no thread; several workers at once flush and attribute each row
exactly once; a stopped worker makes a last round."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dni import create_app
from dni.models import Call, Lease, Visit
from dni.visits import RateLimit
from dni.web.runtime import Runtime
from tests.factories import DESKTOP_UA, report_call, start_visit

SHOP = "https://shop.example.cn/"
PAID = SHOP + "?utm_source=baidu&utm_medium=cpc"


@pytest.fixture(autouse=True)
def unlimited(rt: Runtime, shop: None) -> None:
    rt.visits.rate_limit = RateLimit(10**9, 60)


def count(sessions: sessionmaker[Session], what: Any) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(what)) or 0)


attributed = select(Call).where(Call.attribution_method.is_not(None)).subquery()


@contextmanager
def workers(
    n: int, redis_url: str, database_url: str, tmp_path: Path, interval: float = 0.05
) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = os.environ | {
        "DNI_REDIS_URL": redis_url,
        "DNI_DATABASE_URL": database_url,
        "DNI_INSTANCE_PATH": str(tmp_path),
        "DNI_FLUSH_SECONDS": str(interval),
    }
    logs = [(tmp_path / f"worker-{i}.log").open("wb") for i in range(n)]
    command = [sys.executable, "-m", "dni", "worker"]
    started = [subprocess.Popen(command, env=env, stdout=log, stderr=log) for log in logs]
    try:
        for log in logs:  # each has installed its signal handlers once it says so
            path = Path(log.name)
            wait_for(lambda: b"dni worker: a round every" in path.read_bytes())  # noqa: B023
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait()
        for log in logs:
            log.close()


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_create_app_starts_no_thread(app: object, tmp_path: Path, redis_url: str) -> None:
    before = threading.active_count()
    create_app({"redis_url": redis_url, "instance_path": tmp_path, "flush_seconds": 1})
    assert threading.active_count() == before


def test_several_workers_flush_and_attribute_each_row_once(
    rt: Runtime, sessions: sessionmaker[Session], redis_url: str, database_url: str, tmp_path: Path
) -> None:
    with workers(3, redis_url, database_url, tmp_path) as running:
        answers = [start_visit(rt, f"visitor-w{n:03d}", PAID) for n in range(3)]
        answers += [
            start_visit(rt, f"visitor-u{n:03d}", "https://shop.example.cn/") for n in range(60)
        ]
        for n, answer in enumerate(answers[:3]):
            report_call(rt, rt.now(), to=answer.numbers[0].number_e164, n=n)
        leased = sum(len(a.numbers) for a in answers)
        wait_for(lambda: count(sessions, Visit) == 63 and count(sessions, Lease) == leased)
        wait_for(lambda: count(sessions, attributed) == 3)
        for process in running:
            process.send_signal(signal.SIGTERM)
        for process in running:
            assert process.wait(timeout=30) == 0
    for log in tmp_path.glob("worker-*.log"):
        assert "Traceback" not in log.read_text()
    assert count(sessions, Visit) == 63 and count(sessions, Lease) == leased
    with sessions() as session:
        credited = session.execute(select(Call.provider_call_id, Call.visit_id)).all()
    assert {visit for _, visit in credited} == {a.visit for a in answers[:3]}


def test_a_stopped_worker_makes_a_last_round(
    rt: Runtime, sessions: sessionmaker[Session], redis_url: str, database_url: str, tmp_path: Path
) -> None:
    with workers(1, redis_url, database_url, tmp_path, interval=3600) as (worker,):
        time.sleep(0.5)  # its first round is done; the next would be in an hour
        start_visit(rt, "visitor-last", PAID)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    assert count(sessions, Visit) == 1


def test_dni_serve_runs_a_worker_beside_gunicorn(
    sessions: sessionmaker[Session], redis_url: str, database_url: str, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {
        "DNI_REDIS_URL": redis_url,
        "DNI_DATABASE_URL": database_url,
        "DNI_INSTANCE_PATH": str(tmp_path),
        "DNI_FLUSH_SECONDS": "0.1",
    }
    command = [
        sys.executable,
        "-m",
        "dni",
        "serve",
        "--workers",
        "1",
        "--bind",
        f"127.0.0.1:{port}",
    ]
    with (tmp_path / "serve.log").open("wb") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        try:
            body = json.dumps({"site": "shop", "visitor": "visitor-served", "url": PAID}).encode()
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/visits",
                data=body,
                headers={"Content-Type": "text/plain", "User-Agent": DESKTOP_UA},
            )

            def visited() -> bool:
                try:
                    with urllib.request.urlopen(request, timeout=2) as answer:
                        return bool(answer.status == 200)
                except OSError:
                    return False

            wait_for(visited)
            wait_for(lambda: count(sessions, Visit) == 1)  # only a worker writes SQL
        finally:
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=60) == 0
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
