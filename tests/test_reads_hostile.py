"""The read API under garbage: every bad parameter or header is a 4xx naming it, never a 500,
and the CSV report never hands a spreadsheet a live formula."""

from __future__ import annotations

import csv
import io
from typing import Any
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient

from dni.csvsafe import safe_cell
from dni.history import flush_history
from dni.web.runtime import Runtime
from tests.factories import start_visit
from tests.test_reads import DAY, data, get

__all__ = ["data"]  # the fixture, shared with test_reads

# Keywords as visitors can send them (dni trims surrounding whitespace, so tab and CR are unit
# tested below).
FORMULAS = ["=1+1", "+cmd|' /C calc'!A0", "-2+3", "@SUM(1)", '=HYPERLINK("http://x.example")']


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (DAY | {"limit": "²"}, "limit"),
        (DAY | {"offset": "²"}, "offset"),
        (DAY | {"limit": "١٠"}, "limit"),  # Arabic-Indic digits: isdigit() yet not ASCII
        (DAY | {"limit": "9" * 400}, "limit"),
        (DAY | {"from": "9999-12-31", "to": "9999-12-31"}, "from"),
        (DAY | {"from": "0001-01-01", "to": "0001-01-01"}, "from"),
        (DAY | {"from": "2026-11-02", "to": "9999-12-31"}, "to"),
        (DAY | {"from": "20261102"}, "from"),
        (DAY | {"from": "2026-W45-1"}, "from"),
        (DAY | {"site": "\x00"}, "site"),
        (DAY | {"site": "shop\x00"}, "site"),
        (DAY | {"site": "<script>alert(1)</script>"}, "site"),
    ],
)
def test_garbage_parameters_are_a_400_naming_the_field(
    client: FlaskClient, data: dict[str, Any], query: dict[str, str], field: str
) -> None:
    response = get(client, "/v1/calls", data["keys"]["plain"], **query)
    assert response.status_code == 400
    assert field in response.get_json()["fields"]


@pytest.mark.parametrize("template", ["bearer  {key} ", "BEARER {key}", "Bearer\t{key}"])
def test_the_scheme_is_case_insensitive_and_spaces_are_forgiven(
    client: FlaskClient, data: dict[str, Any], template: str
) -> None:
    authorization = template.format(key=data["keys"]["plain"])
    response = client.get("/v1/calls", query_string=DAY, headers={"Authorization": authorization})
    assert response.status_code == 200 and len(response.get_json()["calls"]) == 2


@pytest.mark.parametrize(
    "authorization",
    ["Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Bearer a b", "Bearer éÿ", "dni_abc"],
)
def test_malformed_authorization_is_a_401(
    client: FlaskClient, data: dict[str, Any], authorization: str
) -> None:
    response = client.get("/v1/calls", query_string=DAY, headers={"Authorization": authorization})
    assert response.status_code == 401 and response.get_json()["code"] == "unauthorized"


def test_csv_report_cells_are_never_live_formulas(
    client: FlaskClient, data: dict[str, Any], rt: Runtime
) -> None:
    for n, keyword in enumerate(FORMULAS):
        url = f"https://shop.example.cn/?utm_source=baidu&utm_medium=cpc&utm_term={quote(keyword)}"
        start_visit(rt, f"visitor-formula-{n}", url)
    flush_history(rt.stores, rt.now())
    response = get(
        client, "/v1/reports/calls", data["keys"]["plain"], group_by="keyword", format="csv", **DAY
    )
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True), newline="")))
    keywords = {row[0] for row in rows[1:]}
    assert {"'" + keyword for keyword in FORMULAS} <= keywords
    assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for r in rows for cell in r)


def test_counts_and_hours_stay_numbers(client: FlaskClient, data: dict[str, Any]) -> None:
    response = get(
        client, "/v1/reports/calls", data["keys"]["plain"], group_by="hour", format="csv", **DAY
    )
    line = response.get_data(as_text=True).splitlines()[1]
    assert line == "12,2,2,1,1,1,1,0,0,0.0,0.0,,,,0.0,"


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("-2", "'-2"),
        ("=1+1", "'=1+1"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("a=1", "a=1"),
        ("", ""),
        (-2, -2),
        (12, 12),
        (None, None),
    ],
)
def test_only_text_cells_are_defused(value: object, written: object) -> None:
    assert safe_cell(value) == written
