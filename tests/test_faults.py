"""`dni bench faults` runs every scenario end to end, and what must hold under each fault holds.

One short run (4 s of load per scenario, about two minutes in all) shared by the tests. It
starts its own stores, a PostgreSQL server included, so it runs in the SQLite pass only.
"""

from __future__ import annotations

import math
import os
import re

import pytest

from dni.bench.faults import HEADER, SCENARIOS, Outcome, run_fault_benchmark

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("DNI_TEST_DATABASE_URL")),
    reason="starts its own PostgreSQL: runs in the SQLite pass",
)
SECONDS = 4
FAULTS = ["redis-kill", "redis-wipe", "worker-kill", "postgres-stop"]
NOTHING_LOST = ["redis-kill", "worker-kill", "postgres-stop"]


@pytest.fixture(scope="module")
def run() -> tuple[list[str], dict[str, Outcome]]:
    lines: list[str] = []
    outcomes = run_fault_benchmark(SECONDS, "all", lines.append)
    return lines, {o.name: o for o in outcomes}


def test_every_scenario_prints_a_row_of_figures(run: tuple[list[str], dict[str, Outcome]]) -> None:
    lines, outcomes = run
    rows = lines[lines.index(HEADER) + 1 :]
    assert [row.split()[0] for row in rows] == list(SCENARIOS) == list(outcomes)
    for row in rows:
        assert re.search(r"\s\d+\s+\d+\s+\d+\s+\d+\s", row), row  # requests, 5xx, no answer, 503s
        assert re.search(r"\d+/\d+\s+\d+/\d+\s+\d+\s+[\d.]+->[\d.]+\s+\d+->\d+$", row), row
    for outcome in outcomes.values():
        assert outcome.requests > 0 and outcome.tracked[1] > 0
        assert outcome.leases_missing[1] > 0  # numbers were handed out and checked


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_no_server_error_but_503(run: tuple[list[str], dict[str, Outcome]], name: str) -> None:
    assert run[1][name].server_errors == 0


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_nothing_is_stored_twice(run: tuple[list[str], dict[str, Outcome]], name: str) -> None:
    assert run[1][name].duplicates == 0


@pytest.mark.parametrize("name", FAULTS)
def test_service_answers_again_after_the_fault(
    run: tuple[list[str], dict[str, Outcome]], name: str
) -> None:
    first = run[1][name].first_200_s
    assert first is not None and math.isfinite(first)


@pytest.mark.parametrize("name", NOTHING_LOST)
def test_nothing_acknowledged_is_lost(run: tuple[list[str], dict[str, Outcome]], name: str) -> None:
    outcome = run[1][name]
    assert outcome.leases_missing[0] == 0
    assert outcome.calls_missing[0] == 0


def test_redis_outage_is_answered_503_at_once(run: tuple[list[str], dict[str, Outcome]]) -> None:
    waits = run[1]["redis-kill"].unavailable_ms
    assert waits and max(waits) < 1000


def test_unknown_scenario_is_named() -> None:
    with pytest.raises(SystemExit, match="unknown scenario.*nope"):
        run_fault_benchmark(1, "redis-kill,nope", print)
