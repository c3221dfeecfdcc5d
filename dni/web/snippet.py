"""Serving the snippet file to shops' pages."""

from __future__ import annotations

from flask import Blueprint, Response, abort, send_file

from dni.web.runtime import runtime

bp = Blueprint("snippet", __name__)


@bp.get("/dni.js")
def snippet() -> Response:
    path = runtime().settings.snippet_path
    if not path.is_file():
        abort(404, f"snippet not found at {path}; set DNI_SNIPPET_PATH")
    response = send_file(path, mimetype="text/javascript", max_age=300)
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response
