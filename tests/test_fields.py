"""The input vocabulary: each reader's typed value, and the problem it keeps under the path."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

import pytest

from dni.errors import ConfigError, InvalidInput
from dni.fields import (
    Fields,
    json_object,
    json_value,
    storage_problem,
    text_problem,
    whole_number,
)

EARLIEST, LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)


def read(data: dict[str, Any], reader: str, name: str = "x", **options: Any) -> tuple[Any, Any]:
    """What `Fields.<reader>` returns for `name` of `data`, and the problem it recorded."""
    fields = Fields(data)
    value = getattr(fields, reader)(name, **options)
    return value, fields.errors.get(name)


@pytest.mark.parametrize(
    ("value", "expected", "problem"),
    [
        ("abc", "abc", None),
        (None, "", "required"),
        ("", "", "required"),
        (5, "", "must be a string"),
        ("abcde", "", "must be at most 4 characters"),
        ("a\x00", "", "must not contain NUL characters"),
        ("\ud800", "", "must not contain lone UTF-16 surrogates"),
        ("a\x07", "", "must not contain control characters"),
    ],
)
def test_text_is_storable_and_capped(value: Any, expected: str, problem: str | None) -> None:
    assert read({"x": value}, "text", max_len=4) == (expected, problem)


def test_optional_text_may_be_missing_and_a_pattern_must_match_whole() -> None:
    assert read({}, "text", max_len=4, required=False) == ("", None)
    letters = re.compile("[a-z]+")
    assert read({"x": "ab1"}, "text", max_len=9, pattern=letters) == ("", "must match [a-z]+")


@pytest.mark.parametrize(
    ("value", "digits", "expected", "problem"),
    [
        (7, False, 7, None),
        (None, False, 3, None),
        (True, False, 3, "must be a whole number from 0 to 10"),
        (7.0, False, 3, "must be a whole number from 0 to 10"),
        (11, False, 3, "must be a whole number from 0 to 10"),
        ("7", False, 3, "must be a whole number from 0 to 10"),
        ("7", True, 7, None),
        ("²", True, 3, "must be a whole number from 0 to 10"),
        ("١", True, 3, "must be a whole number from 0 to 10"),
        ("9" * 5000, True, 3, "must be a whole number from 0 to 10"),
    ],
)
def test_integers_are_whole_and_in_range(
    value: Any, digits: bool, expected: int, problem: str | None
) -> None:
    got = read({"x": value}, "integer", low=0, high=10, default=3, digits=digits)
    assert got == (expected, problem)


def test_whole_number_never_takes_a_bool_or_a_float() -> None:
    assert [whole_number(v) for v in (False, 1.0, "1", 2**70)] == [None, None, None, 2**70]
    assert whole_number(" 1", digits=True) is None


def test_one_of_has_a_default_or_is_required() -> None:
    choices = ("json", "csv")
    assert read({"x": "csv"}, "one_of", choices=choices) == ("csv", None)
    assert read({}, "one_of", choices=choices, default="json") == ("json", None)
    assert read({}, "one_of", choices=choices) == ("", "required")
    assert read({"x": ["csv"]}, "one_of", choices=choices) == ("", "must be one of json, csv")


def test_booleans_are_json_booleans() -> None:
    assert read({"x": True}, "boolean") == (True, None)
    assert read({}, "boolean") == (False, None)
    assert read({"x": "yes"}, "boolean") == (False, "must be true or false")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-02", date(2026, 11, 2)),
        ("2026-13-01", None),
        ("20261102", None),
        ("2026-W45-1", None),
        ("1999-12-31", None),
        ("+2026-11-02", None),
    ],
)
def test_days_are_written_yyyy_mm_dd_within_bounds(value: str, expected: date | None) -> None:
    day, problem = read({"x": value}, "day", first=date(2000, 1, 1), last=date(2999, 12, 31))
    assert day == expected
    assert (problem is None) == (expected is not None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-02T12:00:05+08:00", datetime(2026, 11, 2, 4, 0, 5, tzinfo=UTC)),
        ("2026-11-02T12:00:05Z", datetime(2026, 11, 2, 12, 0, 5, tzinfo=UTC)),
        ("2026-11-02 12:00:05", None),  # no offset: a local time of some unknown zone
        ("0001-01-01T00:00:00+14:00", None),  # before year 1 in UTC
        ("9999-12-31T23:59:59-12:00", None),  # after year 9999 in UTC
        ("2100-01-01T00:00:00+00:00", None),
        ("yesterday", None),
    ],
)
def test_moments_have_an_offset_and_a_plausible_year(value: str, expected: datetime | None) -> None:
    moment, problem = read({"x": value}, "moment", earliest=EARLIEST, latest=LATEST)
    assert moment == expected
    if expected is None:
        assert problem == "must be ISO 8601 with a UTC offset, from 2000 to 2100"


def test_phones_come_out_e164_or_name_the_number() -> None:
    assert read({"x": "400-888-1234"}, "phone", country="CN") == ("+864008881234", None)
    assert read({"x": "12"}, "phone", country="CN") == ("", "not a valid number in CN: '12'")
    assert read({}, "phone", country="CN", required=False) == ("", None)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("https://shop.example.cn/p?q=1", True),
        ("http://127.0.0.1:8000/", True),
        ("javascript:alert(1)", False),
        ("https:no-host", False),
        ("http://[broken/", False),
        ("https://x.cn/" + "a" * 3000, False),
    ],
)
def test_urls_are_absolute_http_with_a_host(value: str, ok: bool) -> None:
    url, problem = read({"x": value}, "url")
    assert (url == value, problem is None) == (ok, ok)


def test_lists_are_read_item_by_item_at_their_own_paths() -> None:
    fields = Fields({"n": ["a", 5, "b"], "one": "c", "bad": "d"}, "t")
    items = fields.each("n")
    assert [items.text(at, max_len=5) for at in items.data] == ["a", "", "b"]
    lone = fields.each("one", single=True)
    assert [lone.text(at, max_len=5) for at in lone.data] == ["c"]
    assert fields.each("bad").data == {}
    assert fields.each("missing", required=True, message="list some").data == {}
    assert fields.errors == {
        "t.n[1]": "must be a string",
        "t.bad": "must be a list",
        "t.missing": "list some",
    }


def test_nested_tables_share_their_problems_and_the_first_one_per_field_wins() -> None:
    top = Fields({"pool": {"size": 0, "colour": "red"}})
    pool = top.within("pool[paid]", top.data["pool"])
    pool.unknown({"size"})
    pool.integer("size", low=1, high=2, default=1)
    pool.fail("size", "a second problem")
    assert top.errors == {
        "pool[paid].colour": "unknown setting",
        "pool[paid].size": "must be a whole number from 1 to 2",
    }


def test_quoting_readers_end_their_messages_with_the_bad_value() -> None:
    fields = Fields({"x": "panic", "y": "z" * 500}, quote=True)
    fields.one_of("x", ("fallback", "share"))
    fields.boolean("y")
    assert fields.errors["x"] == "must be one of fallback, share, not 'panic'"
    assert fields.errors["y"].startswith("must be true or false, not 'zzz")
    assert len(fields.errors["y"]) < 120


def test_check_raises_the_callers_error_naming_every_field() -> None:
    fields = Fields({"a": 1})
    fields.check()  # nothing wrong: nothing raised
    fields.text("a", max_len=3)
    fields.text("b", max_len=3)
    with pytest.raises(InvalidInput) as caught:
        fields.check("invalid query")
    assert caught.value.message == "invalid query"
    assert caught.value.fields == {"a": "must be a string", "b": "required"}
    with pytest.raises(ConfigError):
        fields.check("bad file", ConfigError)


def test_text_problem_and_storage_problem_name_what_cannot_be_stored() -> None:
    assert text_problem("tab\tnew\nline\r") is None
    assert text_problem("\x7f") == "must not contain control characters"
    assert storage_problem({"a": [1, {"b": float("nan")}]}) == ("a[1].b", "must be a finite number")
    assert storage_problem({"\x00": 1}) == ("\x00", "must not contain NUL characters")
    assert storage_problem([2**63]) == ("[0]", "number out of range")
    assert storage_problem({"a": "fine", "n": -(2**63) + 1}) is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [(b"not json", "not JSON"), (b"[1]", "not an object"), (b"[" * 10**5, "not JSON")],
)
def test_json_bodies_are_objects_or_a_400_naming_the_body(body: bytes, problem: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        json_object(body)
    assert caught.value.fields == {"body": problem}
    assert json_value(b"[1]") == [1]
