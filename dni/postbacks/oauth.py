"""The OAuth 2.0 refresh-token grant of the platforms that take an access token (Google Ads,
Microsoft Advertising): a refresh token from the sites file becomes an access token, kept in
this process until a minute before it expires, so one token serves many conversions.
https://datatracker.ietf.org/doc/html/rfc6749#section-6
https://developers.google.com/identity/protocols/oauth2/web-server#offline
https://learn.microsoft.com/advertising/guides/authentication-oauth-get-tokens
"""

from __future__ import annotations

import threading
import time

import requests

from dni.postbacks import Destination, PostbackError, read_json

GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/common/oauth2/v2.0/token"
MICROSOFT_SCOPE = "https://ads.microsoft.com/msads.manage offline_access"
TIMEOUT = (5, 10)
EARLY = 60.0  # seconds before `expires_in` when a cached token is no longer used

_tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
_lock = threading.Lock()


class TokenUnavailable(Exception):
    """The token endpoint did not answer, or failed (5xx, 429): worth a retry later."""


def access_token(
    http: requests.Session,
    destination: Destination,
    default_url: str,
    client_id: str,
    client_secret: str,
    refresh_token: str,
    scope: str = "",
) -> str:
    """An access token for these credentials, from the cache or the token endpoint (the
    destination's `url` in its place). PostbackError when the provider refuses the grant
    (`invalid_grant` …), TokenUnavailable when it cannot say."""
    url = destination.endpoint(default_url)
    key = (url, client_id, refresh_token)
    with _lock:
        token, until = _tokens.get(key, ("", 0.0))
    if token and time.monotonic() < until:
        return token
    form = {"grant_type": "refresh_token", "client_id": client_id, "refresh_token": refresh_token}
    if client_secret:
        form["client_secret"] = client_secret
    if scope:
        form["scope"] = scope
    try:
        answer = http.post(url, data=form, timeout=TIMEOUT, allow_redirects=False)
    except requests.RequestException as error:
        raise TokenUnavailable(f"token endpoint: {type(error).__name__}") from error
    document = read_json(answer.content)
    found = document if isinstance(document, dict) else {}
    if answer.status_code >= 500 or answer.status_code in (408, 429):
        raise TokenUnavailable(f"token endpoint: HTTP {answer.status_code}")
    if answer.status_code != 200:
        said = ": ".join(str(found[k]) for k in ("error", "error_description") if found.get(k))
        raise PostbackError(f"token refresh refused (HTTP {answer.status_code}): {said[:300]}")
    fresh = found.get("access_token")
    if not isinstance(fresh, str) or not fresh:
        raise TokenUnavailable("token endpoint: an answer without an access_token")
    try:
        seconds = float(found.get("expires_in", 3600))
    except (TypeError, ValueError):
        seconds = 3600.0
    with _lock:
        _tokens[key] = (fresh, time.monotonic() + seconds - EARLY)
    return fresh
