"""The verdict over replicas' commitments: which output wins and which machines committed something else.

One vote per machine. A machine that committed two different outputs for the same request has proven itself
dishonest: it is a dissenter whatever the others say, and it does not vote (so equivocating cannot block a
majority). The output held by a strict majority of the voting machines wins; with no strict majority nothing is
decided and only equivocators are dissenters. The ledger's dispute contract calls :func:`decide` too, so the
gateway and the chain can never disagree about who lied.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cloister.consensus.commitment import Commitment
from cloister.consensus.wire import check_digest, check_flag, check_ids, json_object, malformed

MAX_VOTERS = 1024


@dataclass(frozen=True)
class Verdict:
    """``agreed``: every commitment has the same output. ``majority``/``dissenters`` are sorted machine ids."""

    agreed: bool
    output_digest: str | None
    majority: tuple[str, ...]
    dissenters: tuple[str, ...]

    def __post_init__(self) -> None:
        check_flag(self.agreed, "agreed")
        if self.output_digest is not None:
            check_digest(self.output_digest, "output_digest")
        check_ids(self.majority, "majority", MAX_VOTERS)
        check_ids(self.dissenters, "dissenters", MAX_VOTERS)
        if list(self.majority) != sorted(self.majority) or list(self.dissenters) != sorted(self.dissenters):
            malformed("a verdict lists machines in sorted order")
        if set(self.majority) & set(self.dissenters):
            malformed("a machine cannot be both in the majority and a dissenter")
        if (self.output_digest is None) == bool(self.majority):
            malformed("a verdict has an output digest exactly when it has a majority")
        if self.agreed and (self.output_digest is None or self.dissenters):
            malformed("an agreed verdict has an output and no dissenters")

    def to_json(self) -> dict[str, Any]:
        return {
            "agreed": self.agreed,
            "output_digest": self.output_digest,
            "majority": list(self.majority),
            "dissenters": list(self.dissenters),
        }

    @classmethod
    def from_json(cls, data: object) -> Verdict:
        f = json_object(data, "verdict", ("agreed", "output_digest", "majority", "dissenters"))
        for name in ("majority", "dissenters"):
            if not isinstance(f[name], list):
                malformed(f"verdict.{name} must be a list of machine ids")
        return cls(f["agreed"], f["output_digest"], tuple(f["majority"]), tuple(f["dissenters"]))


def decide(commitments: Sequence[Commitment]) -> Verdict:
    """The verdict over commitments to one request; mixing requests, params or deployments is malformed."""
    if not commitments:
        malformed("a verdict needs at least one commitment")
    if len({commitment.subject for commitment in commitments}) != 1:
        malformed(
            "the commitments are not about one thing: they name different deployments, requests, decoding "
            "parameters or deployment digests, so they cannot be compared"
        )
    outputs: dict[str, set[str]] = {}
    for commitment in commitments:
        outputs.setdefault(commitment.machine_id, set()).add(commitment.output_digest)
    equivocators = {machine for machine, digests in outputs.items() if len(digests) > 1}
    votes = {machine: next(iter(digests)) for machine, digests in outputs.items() if machine not in equivocators}
    tally = Counter(votes.values()).most_common(1)
    if not tally or 2 * tally[0][1] <= len(votes):
        return Verdict(False, None, (), tuple(sorted(equivocators)))
    winner = tally[0][0]
    majority = tuple(sorted(machine for machine, digest in votes.items() if digest == winner))
    dissenters = tuple(sorted(set(outputs) - set(majority)))
    return Verdict(not dissenters, winner, majority, dissenters)
