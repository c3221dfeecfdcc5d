"""One place that turns errors into responses: JSON for the API, never a stack trace."""

from __future__ import annotations

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from dni.errors import DniError


def _json(status: int, body: dict[str, object]) -> tuple[Response, int]:
    return jsonify(body), status


def register(app: Flask) -> None:
    @app.errorhandler(DniError)
    def dni_error(error: DniError) -> tuple[Response, int]:
        return _json(error.status, error.to_json())

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        code = (error.name or "error").lower().replace(" ", "_")
        return _json(error.code or 500, {"error": error.description or "", "code": code})

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> tuple[Response, int]:
        app.logger.exception("unhandled error")
        return _json(500, {"error": "internal error", "code": "internal"})
