"""Money as dni keeps it: whole minor units of one currency (fen, cents), never floats.

Amounts are read from what people and consoles write ("1,234.56", "¥1 234.5", "1234") and
shown in major units; one currency per site, no exchange rates.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# ISO 4217 currencies without minor units (the rest used by shops have two).
NO_MINOR = frozenset({"JPY", "KRW", "VND", "CLP", "ISK", "UGX", "PYG", "XAF", "XOF"})
CURRENCY = re.compile(r"[A-Z]{3}")
# The largest amount taken: far inside a signed 64-bit column, far above any shop's day.
MAX_MINOR = 10**15
SYMBOLS = re.compile(r"^[¥￥$€£]|^(CNY|RMB|USD|EUR|元)|(元|CNY|RMB|USD|EUR)$")
# Thousands separators: a comma, a space, a no-break or narrow no-break space; only ever in
# groups of three, one kind per amount ("12,50" may be 12.50 or 1250: refused).
SEPARATORS = re.compile(r"[, \u00a0\u202f]")
GROUPED = re.compile(r"[+-]?[0-9]{1,3}([, \u00a0\u202f])[0-9]{3}(?:\1[0-9]{3})*(?:\.[0-9]*)?")


def minor_digits(currency: str) -> int:
    return 0 if currency in NO_MINOR else 2


def to_minor(text: str | int | float | Decimal, currency: str, *, exact: bool = False) -> int:
    """An amount in major units as minor units; ValueError says why it is not one.

    A currency sign, surrounding blanks and thousands separators in groups of three
    ("1,234.56", "12 345") are allowed; decimals are written with a dot. More decimals than the
    currency has are rounded half up (consoles print 3), or refused when `exact`.
    """
    if isinstance(text, bool):
        raise ValueError("must be an amount, not true/false")
    if isinstance(text, float):
        text = repr(text)
    written = SYMBOLS.sub("", str(text).strip()).strip()
    grouped = SEPARATORS.search(written) is not None
    try:
        amount = Decimal(SEPARATORS.sub("", written))
    except InvalidOperation:
        raise ValueError(f"not an amount: {str(text)[:40]!r}") from None
    if grouped and not GROUPED.fullmatch(written):
        raise ValueError(
            f"ambiguous digit grouping in {str(text)[:40]!r}: separate thousands in groups "
            "of three (1,234.50) and write decimals with a dot"
        )
    if not amount.is_finite():
        raise ValueError(f"not an amount: {str(text)[:40]!r}")
    scale = Decimal(10) ** minor_digits(currency)
    if abs(amount * scale) > MAX_MINOR:
        raise ValueError(f"{written[:40]} is more than any amount dni keeps")
    minor = (amount * scale).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    if exact and minor != amount * scale:
        smallest = Decimal(1).scaleb(-minor_digits(currency))
        raise ValueError(
            f"finer than {currency}'s smallest unit ({smallest}): dni keeps whole minor units"
        )
    return int(minor)


def to_major(minor: int | None, currency: str) -> float | None:
    """Minor units as a major-unit number for JSON (exact to the cent at these sizes)."""
    if minor is None:
        return None
    return round(minor / 10 ** minor_digits(currency), minor_digits(currency))
