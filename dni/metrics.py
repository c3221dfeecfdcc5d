"""Prometheus metrics at /metrics (issue 10: being filled in)."""

from __future__ import annotations

from flask import Flask


def install(app: Flask) -> None:
    """Register the metrics route and request hooks."""
