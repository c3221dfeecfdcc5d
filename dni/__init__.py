"""dni: self-hosted call tracking with dynamic number insertion.

`create_app` builds the Flask app; importing this package connects to nothing. The app starts
no thread: background work is `dni worker`'s (dni.worker).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flask import Flask


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from `DNI_*` settings; `overrides` replaces settings fields by name.

    The extra key `clock` (a callable returning an aware datetime) replaces the wall clock.
    """
    from dni.config import Settings
    from dni.db import make_engine, make_sessionmaker
    from dni.sites import SiteDirectory
    from dni.store import Scripts, Stores, connect_redis
    from dni.visits import RateLimit, Visits
    from dni.web import api, calls, errors, metrics, openapi, reads, security, snippet
    from dni.web.inputs import install_body_limits
    from dni.web.runtime import Runtime

    options = dict(overrides or {})
    clock = options.pop("clock", None) or (lambda: datetime.now(UTC))
    settings = Settings.from_env().with_overrides(options)

    app = Flask(__name__, instance_path=str(settings.instance_path.resolve()))
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if settings.proxy_count:
        from werkzeug.middleware.proxy_fix import ProxyFix

        n = settings.proxy_count
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]

    stores = Stores(
        redis=connect_redis(settings),
        scripts=Scripts(),
        sessions=make_sessionmaker(make_engine(settings.effective_database_url)),
    )
    sites = SiteDirectory(stores.sessions, settings.config_cache_seconds)
    visits = Visits(
        stores,
        sites.by_id,
        RateLimit(
            settings.visit_rate_limit,
            settings.visit_rate_window,
            settings.visit_network_limit,
        ),
    )
    app.extensions["dni"] = Runtime(settings, stores, sites, visits, clock)
    app.register_blueprint(api.bp)
    app.register_blueprint(snippet.bp)
    app.register_blueprint(calls.bp)
    app.register_blueprint(reads.bp)
    app.register_blueprint(openapi.bp)
    if settings.demo:
        from dni.web import demo

        app.register_blueprint(demo.bp)
    errors.register(app)
    security.install(app)
    metrics.install(app)
    install_body_limits(app)  # once every route is registered

    return app
