"""Token amounts: integers of base units on the ledger, decimal strings for people."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from cloister.errors import ConfigError
from cloister.ledger.genesis import UNITS_PER_TOKEN

_DECIMALS = len(str(UNITS_PER_TOKEN)) - 1


def parse_amount(text: str | int) -> int:
    """``"2"`` → 2_000_000 units; at most six decimals; never negative."""
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise ConfigError(f"{text!r} is not an amount; write tokens like 2 or 0.25") from None
    if not value.is_finite() or value < 0:
        raise ConfigError(f"{text!r} is not a non-negative amount")
    units = value * UNITS_PER_TOKEN
    if units != units.to_integral_value():
        raise ConfigError(f"{text!r} has more than {_DECIMALS} decimals")
    return int(units)


def format_amount(units: int) -> str:
    """2_500_000 → ``"2.5"``."""
    whole, frac = divmod(abs(units), UNITS_PER_TOKEN)
    sign = "-" if units < 0 else ""
    if not frac:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{str(frac).rjust(_DECIMALS, '0').rstrip('0')}"
