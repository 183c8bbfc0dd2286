from __future__ import annotations

import pytest

from cloister.errors import ConfigError
from cloister.ledger.amounts import format_amount, parse_amount


@pytest.mark.parametrize(
    ("text", "units"),
    [("2", 2_000_000), ("0.25", 250_000), ("0", 0), ("1.000001", 1_000_001), (3, 3_000_000)],
)
def test_parse_and_format_round_trip(text: str | int, units: int) -> None:
    assert parse_amount(text) == units
    assert parse_amount(format_amount(units)) == units


@pytest.mark.parametrize("bad", ["-1", "abc", "1.0000001", "nan", "inf", ""])
def test_bad_amounts_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_amount(bad)


def test_format_negative_and_fractions() -> None:
    assert format_amount(-2_500_000) == "-2.5"
    assert format_amount(1) == "0.000001"
