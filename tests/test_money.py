"""Amounts as people and consoles write them, read into whole minor units or refused."""

from __future__ import annotations

from decimal import Decimal

import pytest

from dni.money import to_major, to_minor


@pytest.mark.parametrize(
    ("written", "minor"),
    [
        ("1234", 123400),
        ("1,234.56", 123456),
        ("12,345", 1234500),
        ("1,234,567.891", 123456789),  # consoles print 3 decimals: rounded half up
        ("1 234.5", 123450),
        ("¥1 234.5", 123450),
        ("1\u00a0234", 123400),
        ("  ￥1,280.50 ", 128050),
        ("1,299元", 129900),
        ("-1,234", -123400),
        (12.5, 1250),
        (3, 300),
        (Decimal("0.005"), 1),
    ],
)
def test_amounts_with_thousands_groups_of_three_are_read(written: str, minor: int) -> None:
    assert to_minor(written, "CNY") == minor


@pytest.mark.parametrize("written", ["12,50", "1,2345", "1 234,5", "1.234,56", "1,234 567", ",123"])
def test_a_comma_or_space_that_is_no_thousands_separator_is_refused(written: str) -> None:
    with pytest.raises(ValueError, match="ambiguous digit grouping .* write decimals with a dot"):
        to_minor(written, "CNY")


@pytest.mark.parametrize("written", ["abc", "1 2 3x", "NaN", "", True])
def test_what_is_no_amount_says_so(written: str) -> None:
    with pytest.raises(ValueError, match="not an amount|not true/false"):
        to_minor(written, "CNY")


def test_an_exact_amount_refuses_a_fraction_of_the_smallest_unit() -> None:
    assert to_minor("0.120", "CNY", exact=True) == 12
    assert to_minor("1,000", "JPY", exact=True) == 1000
    with pytest.raises(ValueError, match=r"finer than CNY's smallest unit \(0.01\)"):
        to_minor("0.125", "CNY", exact=True)
    with pytest.raises(ValueError, match=r"finer than JPY's smallest unit \(1\)"):
        to_minor("1.5", "JPY", exact=True)


def test_minor_units_are_shown_in_major_units() -> None:
    assert to_major(123456, "CNY") == 1234.56
    assert to_major(1000, "JPY") == 1000
    assert to_major(None, "CNY") is None
