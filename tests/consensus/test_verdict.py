"""The verdict: strict majority of distinct machines, equivocators always dissent, ties decide nothing."""

from __future__ import annotations

import dataclasses

import pytest
from tests.consensus.samples import BAD_TOKENS, GOOD_TOKENS, MACHINES, REPLICAS

from cloister.consensus.commitment import Commitment
from cloister.consensus.verdict import Verdict, decide
from cloister.errors import MalformedInput

A, B, C, D, E = MACHINES[:5]
OTHER = (9, 9, 9)


def votes(*pairs: tuple[str, tuple[int, ...]]) -> list[Commitment]:
    return [REPLICAS[machine].commit(tokens).commitment for machine, tokens in pairs]


def good(machine: str) -> tuple[str, tuple[int, ...]]:
    return machine, GOOD_TOKENS


def bad(machine: str, tokens: tuple[int, ...] = BAD_TOKENS) -> tuple[str, tuple[int, ...]]:
    return machine, tokens


def test_unanimous_and_single() -> None:
    verdict = decide(votes(good(C), good(A), good(B)))
    assert verdict.agreed and verdict.majority == (A, B, C) and verdict.dissenters == ()
    assert verdict.output_digest == votes(good(A))[0].output_digest
    assert decide(votes(good(A))) == Verdict(True, verdict.output_digest, (A,), ())


def test_strict_majority_wins_and_the_rest_dissent() -> None:
    verdict = decide(votes(good(A), bad(B), good(C)))
    assert not verdict.agreed
    assert (verdict.majority, verdict.dissenters) == ((A, C), (B,))
    three_way = decide(votes(good(A), good(B), good(C), bad(D), bad(E, OTHER)))
    assert (three_way.majority, three_way.dissenters) == ((A, B, C), (D, E))


@pytest.mark.parametrize(
    "pairs",
    [
        (good(A), bad(B)),
        (good(A), good(B), bad(C), bad(D)),
        (good(A), bad(B), bad(C, OTHER)),
        (good(A), good(B), bad(C), bad(D, OTHER), bad(E, (5,))),
    ],
)
def test_no_strict_majority_decides_nothing(pairs: tuple[tuple[str, tuple[int, ...]], ...]) -> None:
    assert decide(votes(*pairs)) == Verdict(False, None, (), ())


def test_a_machine_votes_once() -> None:
    """Two identical commitments by one machine are one vote, so A cannot outvote B by committing twice."""
    assert decide(votes(good(A), good(A), bad(B))) == Verdict(False, None, (), ())
    assert decide(votes(good(A), good(A))).agreed


def test_equivocators_always_dissent_and_do_not_vote() -> None:
    honest = decide(votes(good(A), good(B), good(C), bad(C)))
    assert (honest.majority, honest.dissenters, honest.agreed) == ((A, B), (C,), False)
    # with the equivocator out, A alone is a strict majority of the voters
    alone = decide(votes(good(A), good(B), bad(B)))
    assert (alone.output_digest is not None, alone.majority, alone.dissenters) == (True, (A,), (B,))
    # a tie among the voters decides nothing, but the equivocator is still named
    tie = decide(votes(good(A), bad(B), good(C), bad(C)))
    assert tie == Verdict(False, None, (), (C,))
    only = decide(votes(good(A), bad(A)))
    assert only == Verdict(False, None, (), (A,))


def test_mixed_subjects_are_malformed() -> None:
    base = votes(good(A))[0]
    for field, value in (
        ("request_digest", "sha256:" + "00" * 32),
        ("params_digest", "sha256:" + "01" * 32),
        ("deployment_digest", "sha256:" + "02" * 32),
        ("deployment_id", "or-other"),
    ):
        other = dataclasses.replace(votes(good(B))[0], **{field: value})
        with pytest.raises(MalformedInput, match="not about one thing"):
            decide([base, other])
    with pytest.raises(MalformedInput):
        decide([])


def test_verdict_json_round_trip_and_refusals() -> None:
    verdict = decide(votes(good(A), bad(B), good(C)))
    assert Verdict.from_json(verdict.to_json()) == verdict
    digest = verdict.output_digest
    for broken in (
        {**verdict.to_json(), "majority": [C, A]},
        {**verdict.to_json(), "majority": [A, B], "dissenters": [B]},
        {**verdict.to_json(), "output_digest": None},
        {**verdict.to_json(), "agreed": 1},
        {**verdict.to_json(), "majority": "A"},
        {"agreed": True, "output_digest": digest, "majority": [A], "dissenters": [B]},
        {"agreed": False, "output_digest": None, "majority": [A], "dissenters": []},
        {**verdict.to_json(), "extra": 1},
    ):
        with pytest.raises(MalformedInput):
            Verdict.from_json(broken)
