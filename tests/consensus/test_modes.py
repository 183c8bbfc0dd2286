"""Consensus modes: the spellings users write, their canonical text, and how many replicas each involves."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloister.consensus.modes import MAX_N, PPM, ConsensusMode, parse_mode
from cloister.errors import BadRequest, InvalidConsensusMode


@pytest.mark.parametrize(
    ("text", "mode", "canonical", "first_wave", "most"),
    [
        ("single", ConsensusMode("single", 1), "single", 1, 1),
        ("sampling:3", ConsensusMode("sampling", 3), "sampling:3", 3, 3),
        ("sampling:1", ConsensusMode("sampling", 1), "sampling:1", 1, 1),
        ("cross:0.01,1", ConsensusMode("cross", 1, 10_000), "cross:0.01,1", 1, 2),
        ("cross:0.010,2", ConsensusMode("cross", 2, 10_000), "cross:0.01,2", 1, 3),
        ("cross: 0.5 , 2", ConsensusMode("cross", 2, 500_000), "cross:0.5,2", 1, 3),
        ("cross:1,4", ConsensusMode("cross", 4, PPM), "cross:1,4", 1, 5),
        ("cross:1.000000,4", ConsensusMode("cross", 4, PPM), "cross:1,4", 1, 5),
        ("cross:0,3", ConsensusMode("cross", 3, 0), "cross:0,3", 1, 4),
        ("cross:0.000001,1", ConsensusMode("cross", 1, 1), "cross:0.000001,1", 1, 2),
        ("obfuscated:2", ConsensusMode("obfuscated", 2), "obfuscated:2", 3, 3),
        ("  sampling:5\n", ConsensusMode("sampling", 5), "sampling:5", 5, 5),
    ],
)
def test_modes_parse_to_their_canonical_form(
    text: str, mode: ConsensusMode, canonical: str, first_wave: int, most: int
) -> None:
    parsed = parse_mode(text)
    assert parsed == mode
    assert str(parsed) == canonical and parse_mode(canonical) == mode
    assert (parsed.first_wave, parsed.max_replicas) == (first_wave, most)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Single",
        "single:1",
        "sampling",
        "sampling:",
        "sampling:0",
        "sampling:-1",
        "sampling:3.0",
        "sampling:+3",
        "sampling:3x",
        "sampling:99999",
        f"sampling:{MAX_N + 1}",
        "cross:0.1",
        "cross:,2",
        "cross:1.5,1",
        "cross:1.000001,1",
        "cross:-0.1,1",
        "cross:0.1234567,1",
        "cross:.5,1",
        "cross:5e-1,1",
        "cross:0.1,0",
        "obfuscated:0",
        "obfuscated",
        "majority:3",
        "sampling:3;drop table",
    ],
)
def test_bad_modes_are_refused_with_a_400(text: str) -> None:
    with pytest.raises(InvalidConsensusMode) as caught:
        parse_mode(text)
    assert isinstance(caught.value, BadRequest) and caught.value.http_status == 400
    assert "sampling:N" in caught.value.message  # tells the user what is accepted


def test_non_text_is_refused() -> None:
    with pytest.raises(InvalidConsensusMode):
        parse_mode(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "n", "p_ppm"),
    [("single", 2, 0), ("sampling", 0, 0), ("sampling", 3, 5), ("cross", 1, PPM + 1), ("cross", 1, -1),
     ("obfuscated", True, 0), ("quorum", 3, 0)],
)  # fmt: skip
def test_constructor_refuses_impossible_modes(kind: str, n: int, p_ppm: int) -> None:
    with pytest.raises(InvalidConsensusMode):
        ConsensusMode(kind, n, p_ppm)  # type: ignore[arg-type]


@given(
    kind=st.sampled_from(["single", "sampling", "cross", "obfuscated"]),
    n=st.integers(1, MAX_N),
    p_ppm=st.integers(0, PPM),
)
def test_every_mode_round_trips_through_text(kind: str, n: int, p_ppm: int) -> None:
    mode = ConsensusMode(kind, 1 if kind == "single" else n, p_ppm if kind == "cross" else 0)  # type: ignore[arg-type]
    assert parse_mode(str(mode)) == mode
