"""Headers every answer carries, and the CORS preflight policy (issue 10: being filled in)."""

from __future__ import annotations

from flask import Flask


def install(app: Flask) -> None:
    """Register the app-wide response hooks."""
