"""One place that turns errors into responses: JSON for the API, never a stack trace.

A store that cannot be reached (SQL or Redis errors escaping the domain layer) is a 503, and
every 503 carries `Retry-After`; anything else unexpected is a logged 500.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

from dni.errors import DniError, Unavailable

RETRY_AFTER_SECONDS = 5


def _json(status: int, body: dict[str, object]) -> tuple[Response, int]:
    return jsonify(body), status


def _unreachable(error: DBAPIError) -> bool:
    """Whether a DBAPI error means the database cannot serve now (unreachable, shutting down,
    restarting, overloaded): worth a retry, unlike a bad statement or a broken constraint."""
    return (
        isinstance(error, (OperationalError, InterfaceError))
        or error.connection_invalidated
        # psycopg's AdminShutdown / CannotConnectNow (SQLSTATE 57P01..57P03) and connection
        # exceptions (class 08), however SQLAlchemy wrapped them
        or str(getattr(error.orig, "sqlstate", "") or "").startswith(("57P", "08"))
    )


def register(app: Flask) -> None:
    @app.after_request
    def retry_after(response: Response) -> Response:
        """Every 503 (errors and /healthz alike) tells the caller when to try again."""
        if response.status_code == 503:
            response.headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
        return response

    @app.errorhandler(DniError)
    def dni_error(error: DniError) -> tuple[Response, int]:
        return _json(error.status, error.to_json())

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        code = (error.name or "error").lower().replace(" ", "_")
        return _json(error.code or 500, {"error": error.description or "", "code": code})

    @app.errorhandler(DBAPIError)
    def database_error(error: DBAPIError) -> tuple[Response, int]:
        if not _unreachable(error):
            return unexpected(error)
        app.logger.warning("database unavailable: %s", error.orig)
        return dni_error(Unavailable("the database is unavailable"))

    @app.errorhandler(RedisError)
    def redis_error(error: RedisError) -> tuple[Response, int]:
        app.logger.warning("redis unavailable: %s", error)
        return dni_error(Unavailable("redis is unavailable"))

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> tuple[Response, int]:
        app.logger.exception("unhandled error")
        return _json(500, {"error": "internal error", "code": "internal"})
