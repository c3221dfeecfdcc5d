"""`dni bench attribution` runs end to end and pools its months honestly."""

from __future__ import annotations

from click.testing import CliRunner

from dni.bench.attribution import (
    RUNS,
    peak_concurrency,
    run_attribution_benchmark,
    run_month,
    simulate,
)
from dni.cli import main


def test_the_accuracy_bench_pools_its_months() -> None:
    lines: list[str] = []
    run_attribution_benchmark(days=1, per_day=120, seed=3, months=2, echo=lines.append)
    assert "2 x 1 days (seeds 3-4)" in lines[0]
    rows = lines[3:]
    assert len(rows) == 4 * len(RUNS)
    assert [row.split(":")[0] for row in rows[:: len(RUNS)]] == ["0.25x", "0.5x", "1.0x", "2.0x"]
    months = []
    for seed in (3, 4):
        visits = simulate(1, 120, seed)
        size = max(1, round(peak_concurrency(visits) * 0.5))
        months.append(run_month(visits, size, "no grace, no signals"))
    pooled = months[0] + months[1]
    assert pooled.calls == months[0].calls + months[1].calls > 0
    assert rows[len(RUNS) + 3] == pooled.line("    no grace, no signals")


def test_bad_pool_sizes_are_named() -> None:
    for sizes, why in (("1,x", "numbers separated by commas"), ("0.5,0", "above 0")):
        result = CliRunner().invoke(main, ["bench", "attribution", "--sizes", sizes])
        assert result.exit_code == 2 and "--sizes" in result.output and why in result.output
