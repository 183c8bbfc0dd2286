"""Selection: deterministic, uniform (chi-square over fixed seeds, so it cannot flake), and needs enough replicas."""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter

import pytest

from cloister.consensus.modes import ConsensusMode, parse_mode
from cloister.consensus.selection import _Stream, select, selection_seed
from cloister.errors import MalformedInput, NotEnoughReplicas

HEAD, DIGEST = "sha256:" + "ab" * 32, "sha256:" + "cd" * 32
TEN = [f"mc-{i}" for i in range(10)]


def seeds(count: int, label: str = "") -> list[bytes]:
    """Fixed seeds: the statistics below are computed on the same inputs every run."""
    return [hashlib.sha256(f"{label}{i}".encode()).digest() for i in range(count)]


def reference_order(seed: bytes, candidates: list[str]) -> list[str]:
    """The rule as DESIGN states it, written out independently: SHA-256(seed ‖ u64 counter) blocks read as
    big-endian u64 words; a draw below n rejects words ≥ 2^64 - 2^64 mod n; Fisher-Yates from the last slot."""
    words = (
        int.from_bytes(block[i : i + 8], "big")
        for counter in itertools.count()
        for block in [hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()]
        for i in range(0, 32, 8)
    )

    def below(n: int) -> int:
        while (word := next(words)) >= 2**64 - 2**64 % n:
            pass
        return word % n

    order = sorted(candidates)
    for i in range(len(order) - 1, 0, -1):
        j = below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def test_seed_is_the_documented_hash() -> None:
    seed = selection_seed(HEAD, DIGEST, bytes(16))
    assert (
        seed
        == hashlib.sha256(
            b"cloister/selection/v1\x00" + HEAD.encode() + b"\x00" + DIGEST.encode() + b"\x00" + bytes(16)
        ).digest()
    )
    assert seed.hex() == "7d0e284343be89b24295bd0c45dce38451da54225b908cc8736e85bfdb2ab9bb"
    others = {
        selection_seed(HEAD, DIGEST, b"\x01"),
        selection_seed("h2", DIGEST, bytes(16)),
        selection_seed(HEAD, "sha256:" + "ce" * 32, bytes(16)),
        selection_seed(HEAD, DIGEST, bytes(17)),
    }
    assert seed not in others and len(others) == 4


@pytest.mark.parametrize(
    ("head", "digest", "nonce"),
    [("", DIGEST, b"n"), (HEAD, "a\x00b", b"n"), (HEAD, DIGEST, b""), (HEAD, DIGEST, b"n" * 65), (HEAD, DIGEST, "n")],
)
def test_bad_seed_inputs_are_refused(head: str, digest: str, nonce: bytes) -> None:
    with pytest.raises(MalformedInput):
        selection_seed(head, digest, nonce)


def test_selection_is_deterministic_and_matches_the_written_rule() -> None:
    seed = selection_seed(HEAD, DIGEST, bytes(16))
    selection = select(seed, TEN, parse_mode("cross:0.5,2"))
    assert selection.order == ("mc-8", "mc-9", "mc-1", "mc-7", "mc-0", "mc-6", "mc-3", "mc-5", "mc-4", "mc-2")
    assert selection.selected == ("mc-8",) and selection.cross_triggered and selection.referees == ("mc-9", "mc-1")
    assert select(seed, list(reversed(TEN)), parse_mode("cross:0.5,2")) == selection  # input order is irrelevant
    for seed in seeds(200, "ref"):
        assert list(select(seed, TEN, parse_mode("single")).order) == reference_order(seed, TEN)


def test_modes_take_prefixes_of_the_order() -> None:
    seed = seeds(1)[0]
    order = select(seed, TEN, parse_mode("single")).order
    assert select(seed, TEN, parse_mode("single")).selected == order[:1]
    assert select(seed, TEN, parse_mode("sampling:3")).selected == order[:3]
    obfuscated = select(seed, TEN, parse_mode("obfuscated:3"))
    assert obfuscated.selected == order[:4] and obfuscated.referees == () and not obfuscated.cross_triggered
    always = select(seed, TEN, parse_mode("cross:1,3"))
    assert always.selected == order[:1] and always.cross_triggered and always.referees == order[1:4]
    never = select(seed, TEN, parse_mode("cross:0,3"))
    assert never.selected == order[:1] and not never.cross_triggered and never.referees == ()


def test_every_permutation_is_equally_likely() -> None:
    """Chi-square over all 120 orders of 5 candidates, 24,000 fixed seeds (df = 119; 0.1% critical value 173.6)."""
    candidates = ["a", "b", "c", "d", "e"]
    counts = Counter(select(seed, candidates, parse_mode("single")).order for seed in seeds(24_000, "perm"))
    assert len(counts) == 120
    expected = 24_000 / 120
    chi2 = sum((observed - expected) ** 2 / expected for observed in counts.values())
    assert chi2 < 173.6, chi2


def test_each_machine_is_selected_equally_often() -> None:
    """With 7 candidates (not a power of two, so rejection sampling matters) each leads 1/7 of the time."""
    candidates = [f"mc-{i}" for i in range(7)]
    counts = Counter(select(seed, candidates, parse_mode("single")).selected[0] for seed in seeds(14_000, "lead"))
    expected = 14_000 / 7
    chi2 = sum((counts[m] - expected) ** 2 / expected for m in candidates)
    assert chi2 < 22.46, chi2  # df = 6, 0.1% critical value


def test_cross_triggers_with_probability_p() -> None:
    mode = parse_mode("cross:0.25,1")
    runs = 20_000
    triggered = sum(select(seed, TEN, mode).cross_triggered for seed in seeds(runs, "coin"))
    sigma = (runs * 0.25 * 0.75) ** 0.5
    assert abs(triggered - runs * 0.25) < 4 * sigma, triggered
    rare = sum(select(seed, TEN, parse_mode("cross:0.001,1")).cross_triggered for seed in seeds(runs, "rare"))
    assert 0 < rare < 60


def test_not_enough_candidates_is_a_503() -> None:
    seed = seeds(1)[0]
    for mode, pool in (("sampling:3", 2), ("obfuscated:2", 2), ("cross:0.01,2", 2), ("single", 0)):
        with pytest.raises(NotEnoughReplicas) as caught:
            select(seed, TEN[:pool], parse_mode(mode))
        assert caught.value.http_status == 503
        assert caught.value.details["needed"] == parse_mode(mode).max_replicas
    assert select(seed, TEN[:3], parse_mode("cross:0.01,2")).selected  # exactly enough


def test_bad_candidates_and_seeds_are_refused() -> None:
    with pytest.raises(MalformedInput, match="twice"):
        select(seeds(1)[0], ["mc-1", "mc-1", "mc-2"], parse_mode("single"))
    with pytest.raises(MalformedInput):
        select(seeds(1)[0], ["mc 1"], parse_mode("single"))
    with pytest.raises(MalformedInput):
        select(b"short", TEN, parse_mode("single"))


def test_resampling_walks_the_unused_order() -> None:
    selection = select(seeds(1)[0], TEN[:5], ConsensusMode("cross", 2, 1_000_000))
    used = set(selection.selected) | set(selection.referees)
    assert selection.spares == tuple(m for m in selection.order if m not in used)
    assert [selection.resample(i) for i in range(2)] == list(selection.spares)
    with pytest.raises(NotEnoughReplicas):
        selection.resample(2)


def test_rejection_sampling_stays_in_range() -> None:
    """A bound just above 2^63 rejects about half the words; every draw must still land below the bound."""
    stream = _Stream(seeds(1)[0])
    bound = 2**63 + 1
    assert all(stream.below(bound) < bound for _ in range(2000))
    assert {stream.below(1) for _ in range(10)} == {0}
