"""Settings from the environment: defaults that work, strict parsing that names the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from dni.config import Settings, SettingsError


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.effective_database_url.startswith("sqlite:///")
    assert settings.effective_redis_url == f"unix://{settings.instance_path / 'redis.sock'}"
    assert settings.flush_seconds == 1.0  # bounds what a Redis that loses its data loses


def test_values_are_read_and_typed() -> None:
    settings = Settings.from_env(
        {"DNI_REDIS_CLUSTER": "yes", "DNI_VISIT_RATE_LIMIT": "5", "DNI_INSTANCE_PATH": "/srv/dni"}
    )
    assert settings.redis_cluster is True
    assert settings.visit_rate_limit == 5
    assert settings.instance_path == Path("/srv/dni")


@pytest.mark.parametrize(
    ("name", "value"),
    [("DNI_REDIS_CLUSTER", "maybe"), ("DNI_VISIT_RATE_LIMIT", "lots"), ("DNI_FLUSH_SECONDS", "-1")],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_importing_dni_connects_to_nothing() -> None:
    import importlib

    import dni

    importlib.reload(dni)
    assert callable(dni.create_app)
