"""Serving the built snippet: a stable URL with a short cache, a hashed one cached for a year."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from flask import Blueprint, Response, abort

from dni.snippet import BUILD_HINT, Snippet, read_snippet
from dni.web.runtime import runtime

bp = Blueprint("snippet", __name__)


@lru_cache(maxsize=4)
def _cached(path: Path, mtime_ns: int) -> Snippet:
    return read_snippet(path)


def _current() -> Snippet:
    path = runtime().settings.snippet_path
    try:
        return _cached(path, path.stat().st_mtime_ns)
    except FileNotFoundError:
        abort(404, f"no built snippet at {path}: {BUILD_HINT}")


def _serve(snippet: Snippet, max_age: int, immutable: bool = False) -> Response:
    response = Response(snippet.body, mimetype="text/javascript")
    cache = f"public, max-age={max_age}" + (", immutable" if immutable else "")
    response.headers["Cache-Control"] = cache
    response.headers["Access-Control-Allow-Origin"] = "*"  # for integrity checks (CORS mode)
    response.headers["ETag"] = f'"{snippet.digest}"'
    return response


@bp.get("/dni.js")
def latest() -> Response:
    return _serve(_current(), 300)


@bp.get("/dni.<digest>.js")
def pinned(digest: str) -> Response:
    snippet = _current()
    if digest != snippet.digest:
        abort(404, "no snippet build with that hash here; use /dni.js or `dni snippet`")
    return _serve(snippet, 31_536_000, immutable=True)
