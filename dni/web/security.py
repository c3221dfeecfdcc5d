"""Headers every answer carries, whatever route or error handler made it.

API answers (JSON, CSV, JavaScript, text) may echo attacker strings, so they get the strictest
policy; the one HTML page (/demo) runs inline script and keeps only the framing ban. The CORS
policy of the snippet API lives in dni/web/api.py.
"""

from __future__ import annotations

from flask import Flask, Response, request

EVERY_ANSWER = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
# Nothing an API answer contains may load, run or be framed, even if a browser renders it.
API_ANSWER = EVERY_ANSWER | {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
PAGE = EVERY_ANSWER | {
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Referrer-Policy": "strict-origin-when-cross-origin",
}
HSTS = "max-age=31536000"


def secure_headers(response: Response) -> Response:
    """Add the headers a handler did not set itself."""
    policy = PAGE if response.mimetype == "text/html" else API_ANSWER
    for name, value in policy.items():
        response.headers.setdefault(name, value)
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response


def install(app: Flask) -> None:
    """Register the app-wide response hooks."""
    app.after_request(secure_headers)
