"""API keys for the read API: created once, shown once, stored as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from dni.errors import DniError
from dni.models import ApiKey


class Unauthorized(DniError):
    status = 401
    code = "unauthorized"


@dataclass(frozen=True)
class Grant:
    """What a presented key may read."""

    site_id: int | None  # None: every site
    can_see_callers: bool

    def allows(self, site_id: int) -> bool:
        return self.site_id is None or self.site_id == site_id


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    session: Session, name: str, site_id: int | None, can_see_callers: bool, now: datetime
) -> str:
    """A new key; the caller must show it now, since only its digest is kept."""
    key = "dni_" + secrets.token_urlsafe(32)
    session.add(
        ApiKey(
            name=name,
            key_hash=_digest(key),
            site_id=site_id,
            can_see_callers=can_see_callers,
            created_at=now,
        )
    )
    return key


def check_key(session: Session, authorization: str | None) -> Grant:
    """The grant of a `Bearer` key; Unauthorized when missing, unknown or revoked."""
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("send Authorization: Bearer <key> (see `dni apikey create`)")
    row = session.scalar(
        select(ApiKey).where(ApiKey.key_hash == _digest(key.strip()), ApiKey.revoked_at.is_(None))
    )
    if row is None:
        raise Unauthorized("unknown or revoked API key")
    return Grant(row.site_id, row.can_see_callers)
