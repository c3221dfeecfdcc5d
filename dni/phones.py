"""Phone numbers: everything dni stores is E.164, parsed with Google's libphonenumber rules.

A number written the way a shop prints it (`400-888-1234`, `021 6123 4567`) is read in the
site's default country.
"""

from __future__ import annotations

import phonenumbers


def to_e164(raw: str, country: str) -> str:
    """Normalise `raw` to E.164 in `country`; raise ValueError when it is not a valid number."""
    try:
        parsed = phonenumbers.parse(raw, country.upper())
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number: {raw!r}") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError(f"not a valid number in {country.upper()}: {raw!r}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def is_valid_region(country: str) -> bool:
    return country.upper() in phonenumbers.SUPPORTED_REGIONS
