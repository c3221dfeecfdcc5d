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


def minor_digits(currency: str) -> int:
    return 0 if currency in NO_MINOR else 2


def to_minor(text: str | int | float | Decimal, currency: str) -> int:
    """An amount in major units as minor units; ValueError says why it is not one.

    Thousands separators (`,`, spaces), a currency sign and surrounding blanks are allowed;
    more decimals than the currency has are rounded half up (consoles print 3).
    """
    if isinstance(text, bool):
        raise ValueError("must be an amount, not true/false")
    if isinstance(text, float):
        text = repr(text)
    written = str(text).strip().replace(",", "").replace(" ", "").replace("\u00a0", "")
    written = SYMBOLS.sub("", written).strip()
    try:
        amount = Decimal(written)
    except InvalidOperation:
        raise ValueError(f"not an amount: {str(text)[:40]!r}") from None
    if not amount.is_finite():
        raise ValueError(f"not an amount: {str(text)[:40]!r}")
    scale = Decimal(10) ** minor_digits(currency)
    if abs(amount * scale) > MAX_MINOR:
        raise ValueError(f"{written[:40]} is more than any amount dni keeps")
    return int((amount * scale).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def to_major(minor: int | None, currency: str) -> float | None:
    """Minor units as a major-unit number for JSON (exact to the cent at these sizes)."""
    if minor is None:
        return None
    return round(minor / 10 ** minor_digits(currency), minor_digits(currency))
