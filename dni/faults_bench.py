"""`dni bench faults`: stores killed under load, a pool-drain attacker, a share soak (issue 10:
being filled in)."""

from __future__ import annotations

from collections.abc import Callable


def run_fault_benchmark(seconds: int, scenarios: str, echo: Callable[[str], None]) -> None:
    raise NotImplementedError
