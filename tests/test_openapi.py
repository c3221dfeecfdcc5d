"""dni/web/openapi.yaml describes the app: a valid OpenAPI 3.1 document naming every route and
method the app answers, and nothing it does not; served as /openapi.json."""

from __future__ import annotations

import re

import schemathesis
import yaml
from flask import Flask
from flask.testing import FlaskClient

from dni.web.openapi import SPEC

METHODS = {"get", "post", "put", "patch", "delete", "options"}
# Only with DNI_DEMO (the demo page) or Flask's own: left out of the description on purpose.
UNDESCRIBED = {"demo.shop", "static"}


def described() -> dict[str, set[str]]:
    spec = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    return {path: set(item) & METHODS for path, item in spec["paths"].items()}


def routed(app: Flask) -> dict[str, set[str]]:
    """Each rule as an OpenAPI path with its methods, leaving out what Flask adds by itself."""
    found: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint in UNDESCRIBED:
            continue
        methods = set(rule.methods or ()) - {"HEAD"}
        if getattr(rule, "provide_automatic_options", False):  # set by Flask, not typed
            methods.discard("OPTIONS")
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        found.setdefault(path, set()).update(m.lower() for m in methods)
    return found


def test_the_description_is_valid_openapi_3_1() -> None:
    spec = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    assert spec["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(spec).validate()


def test_every_route_and_method_is_described_and_nothing_else(app: Flask) -> None:
    assert routed(app) == described()


def test_the_description_is_served_as_json(client: FlaskClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.json == yaml.safe_load(SPEC.read_text(encoding="utf-8"))
