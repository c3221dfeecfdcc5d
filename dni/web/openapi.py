"""The OpenAPI description of every route: dni/web/openapi.yaml, served as JSON at /openapi.json.

The file is located relative to the repository, like the snippet build (dni/config.py), and
parsed once per process.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint, Response, jsonify

SPEC = Path(__file__).resolve().parent / "openapi.yaml"  # package data

bp = Blueprint("openapi", __name__)


@cache
def read_spec() -> dict[str, Any]:
    """dni/web/openapi.yaml as a dict, parsed on first use."""
    spec: dict[str, Any] = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    return spec


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(read_spec())
