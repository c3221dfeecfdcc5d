"""Untrusted input read into typed values: one vocabulary for every door dni has.

The snippet API, the read API, the sites file and the call providers all read through `Fields`:
text with a length cap and nothing unstorable in it, whole numbers in a range, one-of choices,
booleans, days, times, phone numbers, URLs and lists. Each problem is kept under the field's
path (`site[shop].pool[paid].lease_seconds`, `[3].duration`) and the caller raises the error it
answers with (InvalidInput, ConfigError) naming all of them at once.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

from dni.errors import DniError, InvalidInput
from dni.money import to_minor
from dni.phones import to_e164

MAX_URL = 2048
# Characters no stored text may hold: NUL and the other C0 controls except tab, newline and
# carriage return, DEL, and lone UTF-16 surrogates (SQL drivers cannot encode them; PostgreSQL
# refuses NUL). Every text field the API or a provider accepts is checked against it.
UNSAFE_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
# ASCII only (str.isdigit() takes "²" and "١٠" too), and short enough for int() and 64 bits.
DIGITS = re.compile(r"[0-9]{1,18}")
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# How much of a bad value a message quotes.
SHOWN = 80


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None when it can."""
    found = UNSAFE_TEXT.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return "must not contain NUL characters"
    if "\ud800" <= found.group() <= "\udfff":
        return "must not contain lone UTF-16 surrogates"
    return "must not contain control characters"


def storage_problem(value: Any, path: str = "") -> tuple[str, str] | None:
    """Where and why a JSON-like payload cannot be stored, or None when it can: text with NUL,
    controls or lone surrogates (keys too), non-finite numbers, integers beyond 64 bits."""
    problem: tuple[str, str] | None = None
    if isinstance(value, str):
        why = text_problem(value)
        problem = None if why is None else (path, why)
    elif isinstance(value, float) and not math.isfinite(value):
        problem = (path, "must be a finite number")
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        problem = (path, "number out of range")
    elif isinstance(value, dict):
        for key, item in value.items():
            where = join(path, str(key))
            key_problem = text_problem(str(key))
            problem = (where, key_problem) if key_problem else storage_problem(item, where)
            if problem:
                break
    elif isinstance(value, list):
        for i, item in enumerate(value):
            problem = storage_problem(item, f"{path}[{i}]")
            if problem:
                break
    return problem


def whole_number(value: Any, *, digits: bool = False) -> int | None:
    """`value` as an int: an int that is not a bool or, with `digits`, ASCII digits; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if digits and isinstance(value, str) and DIGITS.fullmatch(value):
        return int(value)
    return None


def json_value(body: bytes | str) -> Any:
    """A request body as JSON; InvalidInput naming `body` when it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidInput("request body is not valid JSON", {"body": "not JSON"}) from None


def json_object(body: bytes | str) -> dict[str, Any]:
    """A request body as a JSON object; InvalidInput naming `body` for anything else."""
    data = json_value(body)
    if not isinstance(data, dict):
        raise InvalidInput("request body must be a JSON object", {"body": "not an object"})
    return data


def join(at: str, name: str) -> str:
    """The path of `name` inside `at`: `site[shop]` + `key`, `numbers` + `[1]`, `at` + ``."""
    if not at or not name:
        return at or name
    return f"{at}{name}" if name.startswith("[") else f"{at}.{name}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


class Fields:
    """Typed values out of one mapping, keeping the first problem of each field by its path.

    A field that is absent, null or "" is missing: "required", or the reader's default. With
    `quote`, messages end with the bad value (for an operator fixing a file; API answers do
    not echo what a caller sent).
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        at: str = "",
        *,
        quote: bool = False,
        errors: dict[str, str] | None = None,
    ) -> None:
        self.data = data
        self.at = at
        self.quote = quote
        self.errors: dict[str, str] = {} if errors is None else errors

    def path(self, name: str) -> str:
        """Where a field of this mapping is named in errors."""
        return join(self.at, name)

    def fail(self, name: str, message: str) -> None:
        """Record a problem of `name` (a field of this mapping) unless it already has one."""
        self.errors.setdefault(self.path(name), message)

    def refuse(self, name: str, message: str, value: Any) -> None:
        """`fail`, quoting the bad value when this reader quotes."""
        self.fail(name, f"{message}, not {_shown(value)}" if self.quote else message)

    def check(self, message: str = "invalid request", error: type[DniError] = InvalidInput) -> None:
        """Raise `error` naming every bad field, if there is one."""
        if self.errors:
            raise error(message, dict(self.errors))

    def within(self, name: str, data: Mapping[str, Any]) -> Fields:
        """The fields of a table nested at `name`, their problems kept with these."""
        return Fields(data, self.path(name), quote=self.quote, errors=self.errors)

    def unknown(self, allowed: set[str], message: str = "unknown setting") -> None:
        """Name every field not in `allowed`."""
        for name in sorted(set(self.data) - allowed):
            self.fail(name, message)

    def given(self, name: str, required: bool = True) -> Any:
        """The raw value of `name`, None when it is missing ("required" if it must be there)."""
        value = self.data.get(name)
        if value is None or value == "" or value == []:
            if required:
                self.fail(name, "required")
            return None
        return value

    def each(
        self,
        name: str,
        *,
        required: bool = False,
        single: bool = False,
        message: str = "must be a list",
    ) -> Fields:
        """The items of the list at `name` as fields `name[0]`, `name[1]` …; with `single` a
        lone value is read as the only item, at `name` itself."""
        value = self.data.get(name)
        items: dict[str, Any] = {}
        if isinstance(value, list) and value:
            items = {f"[{i}]": item for i, item in enumerate(value)}
        elif value is None or value == []:
            if required:
                self.fail(name, message)
        elif single:
            items = {"": value}
        else:
            self.refuse(name, message, value)
        return self.within(name, items)

    def text(
        self,
        name: str,
        *,
        max_len: int,
        required: bool = True,
        pattern: re.Pattern[str] | None = None,
    ) -> str:
        """Storable text of at most `max_len` characters (matching `pattern`); "" if bad."""
        value = self.given(name, required)
        if value is None:
            return ""
        if not isinstance(value, str):
            self.refuse(name, "must be a string", value)
            return ""
        if len(value) > max_len:
            self.fail(name, f"must be at most {max_len} characters")
            return ""
        problem = text_problem(value)
        if problem is not None:
            self.fail(name, problem)
            return ""
        if pattern is not None and not pattern.fullmatch(value):
            self.refuse(name, f"must match {pattern.pattern}", value)
            return ""
        return value

    def one_of(self, name: str, choices: tuple[str, ...], default: str | None = None) -> str:
        """One of `choices`; `default` when missing (required without one); "" if bad."""
        value = self.given(name, required=default is None)
        if value is None:
            return default or ""
        if not isinstance(value, str) or value not in choices:
            self.refuse(name, f"must be one of {', '.join(choices)}", value)
            return default or ""
        return value

    def integer(self, name: str, *, low: int, high: int, default: int, digits: bool = False) -> int:
        """A whole number from `low` to `high` (with `digits`, written as ASCII digits too:
        query strings, forms, spreadsheet cells); `default` when missing or bad."""
        value = self.given(name, required=False)
        if value is None:
            return default
        number = whole_number(value, digits=digits)
        if number is None or not low <= number <= high:
            self.refuse(name, f"must be a whole number from {low} to {high}", value)
            return default
        return number

    def boolean(self, name: str, default: bool = False) -> bool:
        """JSON true or false, nothing that merely looks like one."""
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            self.refuse(name, "must be true or false", value)
            return default
        return value

    def day(self, name: str, *, first: date, last: date) -> date | None:
        """A required day written YYYY-MM-DD, from `first` to `last`."""
        raw = self.text(name, max_len=10)
        if not raw:
            return None
        try:
            found = date.fromisoformat(raw) if DAY.fullmatch(raw) else None
        except ValueError:
            found = None
        if found is None or not first <= found <= last:
            self.refuse(name, f"must be a date as YYYY-MM-DD from {first} to {last}", raw)
            return None
        return found

    def moment(self, name: str, *, earliest: datetime, latest: datetime) -> datetime | None:
        """A required ISO 8601 time with a UTC offset, from `earliest` to before `latest`, in
        UTC."""
        raw = self.text(name, max_len=40)
        if not raw:
            return None
        try:
            written = datetime.fromisoformat(raw)
            found = written.astimezone(UTC) if written.tzinfo is not None else None
        except (ValueError, OverflowError):
            found = None
        if found is None or not earliest <= found < latest:
            span = f"from {earliest.year} to {latest.year}"
            self.refuse(name, f"must be ISO 8601 with a UTC offset, {span}", raw)
            return None
        return found

    def phone(self, name: str, country: str, *, required: bool = True) -> str:
        """A valid phone number written as in `country`, in E.164; "" if missing or bad."""
        raw = self.text(name, max_len=64, required=required)
        if not raw:
            return ""
        try:
            return to_e164(raw, country)
        except ValueError as exc:  # its message quotes the number
            self.fail(name, str(exc))
            return ""

    def amount(
        self, name: str, currency: str, *, required: bool = True, exact: bool = False
    ) -> int | None:
        """Money written in major units ("1,234.50", 1234.5) as minor units of `currency`,
        at least 0; None if missing or bad. `exact`: finer than a minor unit is bad too."""
        value = self.given(name, required)
        if value is None:
            return None
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            self.refuse(name, "must be an amount such as 1234.50", value)
            return None
        try:
            minor = to_minor(value, currency, exact=exact)
        except ValueError as exc:
            self.fail(name, str(exc))
            return None
        if minor < 0:
            self.refuse(name, "must not be negative", value)
            return None
        return minor

    def url(self, name: str, *, required: bool = True) -> str:
        """An absolute http(s) URL with a host, at most MAX_URL characters; "" if bad."""
        value = self.text(name, max_len=MAX_URL, required=required)
        if not value:
            return ""
        try:
            parts = urlsplit(value)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            valid = False
        if not valid:
            self.refuse(name, "must be an absolute http(s) URL", value)
            return ""
        return value
