"""`dni bench reports` on a small month (PostgreSQL only: it writes its data by PostgreSQL's
SQL): it runs to the end and its own check agrees with the report."""

from __future__ import annotations

import re

import pytest
from sqlalchemy.orm import Session, sessionmaker

from dni.bench.reports import run_reports_benchmark


def test_the_reports_benchmark_prints_every_report_and_its_check(
    sessions: sessionmaker[Session], database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("the benchmark writes its month by PostgreSQL's SQL")
    lines: list[str] = []
    run_reports_benchmark(20_000, database_url, 1, lines.append)
    printed = "\n".join(lines)
    assert "call counts by the real code" in printed
    assert re.search(r"a stale day counted again: one new call [\d,]+ ms", printed)
    assert re.search(r"^keyword\s+[\d,]+\s+\d+\s+\d+$", printed, re.MULTILINE)
    shown = re.search(
        r"top row with spend: keyword (.*?), visits .*calls (\d+), .*sales (\d+),", printed
    )
    counted = re.search(
        r"counted from the tables:  calls (\d+) \(spam (\d+)\), sales (\d+)", printed
    )
    assert shown and counted
    assert int(shown[2]) == int(counted[1]) - int(counted[2])  # the report counts spam apart
    assert shown[3] == counted[3]
