"""API keys for the read API and its writes: created once, shown once, stored as a SHA-256
digest; a key reads one site or all, and only a key with write scope may set outcomes.

Failed authentications are counted per network in Redis; a network with too many is refused
before its next key costs a SQL lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from dni.errors import DniError, RateLimited
from dni.models import ApiKey
from dni.store import RedisClient, auth_failures_key
from dni.visits import network_of

# Unknown keys one network (/24 IPv4, /48 IPv6) may present per window before it is locked out.
FAILURE_LIMIT = 20
FAILURE_WINDOW = 600


class Unauthorized(DniError):
    status = 401
    code = "unauthorized"


class TooManyFailures(RateLimited):
    """A network presented too many unknown keys; `retry_after` seconds until it may try again."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("too many unknown API keys from this network; retry later")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Grant:
    """What a presented key may read, and whether it may write (set outcomes)."""

    name: str
    site_id: int | None  # None: every site
    can_see_callers: bool
    can_write: bool

    def allows(self, site_id: int) -> bool:
        return self.site_id is None or self.site_id == site_id


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _failures_key(ip: str) -> str:
    return auth_failures_key(network_of(ip))


def create_key(
    session: Session,
    name: str,
    site_id: int | None,
    can_see_callers: bool,
    now: datetime,
    *,
    can_write: bool = False,
) -> str:
    """A new key; the caller must show it now, since only its digest is kept. With
    `can_write` it may set outcomes of the calls it can read."""
    key = "dni_" + secrets.token_urlsafe(32)
    session.add(
        ApiKey(
            name=name,
            key_hash=_digest(key),
            site_id=site_id,
            can_see_callers=can_see_callers,
            can_write=can_write,
            created_at=now,
        )
    )
    return key


def check_key(session: Session, redis: RedisClient, authorization: str | None, ip: str) -> Grant:
    """The grant of a `Bearer` key; Unauthorized when missing, unknown or revoked.

    TooManyFailures, without a SQL lookup, once the caller's network has presented
    FAILURE_LIMIT unknown keys within FAILURE_WINDOW seconds.
    """
    parts = (authorization or "").split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise Unauthorized("send Authorization: Bearer <key> (see `dni apikey create`)")
    counter = _failures_key(ip)
    if int(redis.get(counter) or 0) >= FAILURE_LIMIT:
        raise TooManyFailures(max(int(redis.ttl(counter)), 1))
    row = session.scalar(
        select(ApiKey).where(ApiKey.key_hash == _digest(parts[1]), ApiKey.revoked_at.is_(None))
    )
    if row is None:
        with redis.pipeline() as pipe:
            pipe.incr(counter)
            pipe.expire(counter, FAILURE_WINDOW, nx=True)
            pipe.execute()
        raise Unauthorized("unknown or revoked API key")
    return Grant(row.name, row.site_id, row.can_see_callers, row.can_write)
