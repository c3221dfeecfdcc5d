"""The OpenAPI description of every route, served at /openapi.json (issue 10: being filled in)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("openapi", __name__)
