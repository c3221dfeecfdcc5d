"""The per-app bundle of settings, stores and services that request handlers use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from dni.config import Settings
from dni.sites import SiteDirectory
from dni.store import Stores
from dni.visits import Visits


@dataclass
class Runtime:
    settings: Settings
    stores: Stores
    sites: SiteDirectory
    visits: Visits
    now: Callable[[], datetime]

    def check_stores(self) -> dict[str, bool]:
        try:
            redis_ok = bool(self.stores.redis.ping())
        except RedisError:
            redis_ok = False
        try:
            with self.stores.sessions() as session:
                session.execute(text("SELECT 1"))
            database_ok = True
        except SQLAlchemyError:
            database_ok = False
        return {"redis": redis_ok, "database": database_ok}


def runtime() -> Runtime:
    rt: Runtime = current_app.extensions["dni"]
    return rt
