"""Consensus for one request: who runs it, waiting for their commitments, replacing laggards, settling disagreement.

1. Selection: the seeded permutation of the live replicas (:mod:`cloister.consensus.selection`); the first wave
   runs at once (referees too, when cross's coin says so). Nobody is told who else runs the request.
2. A replica that does not commit in ``commit_timeout`` is reported (``replica.timeout``, slashed) and the next
   spare of the permutation takes its place; an unreachable one is marked down and replaced the same way. The
   receipt's ``resampled`` lists the replacements, which a verifier checks are exactly the next spares.
3. Disagreement: referees (the next spares, role ``referee``) re-execute until some output holds a strict
   majority (at least one referee, if any spare is left); then every commitment goes to the ledger
   (``dispute.open``), which slashes the dissenters and rewards the majority.
4. With streaming, the first selected replica streams to the user as it generates; finality comes when every
   replica has committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cloister.consensus.commitment import REFEREE, SELECTED, Role
from cloister.consensus.modes import ConsensusMode
from cloister.consensus.selection import Selection, select, selection_seed
from cloister.consensus.verdict import Verdict, decide
from cloister.errors import BadRequest, ConsensusFailed, NotEnoughReplicas, ReplicaFailed
from cloister.gateway.deployments import Deployment, Directory
from cloister.gateway.upstream import Answer, ChunkSink, Expected, Replica, ReplicaFailure, Upstream
from cloister.ledger.protocol import Head

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One request to run: ``body`` is ``{"request": …}`` or ``{"sealed": …}`` as the replicas take it."""

    deployment: Deployment
    mode: ConsensusMode
    body: dict[str, Any]
    expected: Expected
    seed_digest: str
    """The request digest, or for a sealed request the digest of its sealed bytes."""
    nonce: bytes
    head: Head
    created_at: int
    sink: ChunkSink | None = None


@dataclass(frozen=True)
class Outcome:
    """How the request ended: the answer the user gets and everything the receipt records."""

    answer: Answer
    answers: tuple[Answer, ...]
    verdict: Verdict
    selection: Selection
    resampled: tuple[str, ...]
    dispute_id: str | None
    streamed: Answer | None
    """The answer whose text was streamed to the user, if any."""
    replicas: Mapping[str, Replica]
    """The candidates, by machine: every replica the receipt may name."""


class Reporter(Protocol):
    """How the orchestrator tells the ledger about a timed-out replica and about a dispute."""

    def timeout(self, order_id: str, machine_id: str, request_digest: str) -> None:
        """Report in the background: the user's answer does not wait for the slash."""

    async def dispute(self, order_id: str, request_digest: str, answers: Sequence[Answer]) -> str | None:
        """Open the dispute; its id, or ``None`` if the ledger did not record it."""


@dataclass
class _Run:
    """The mutable state of one request's consensus."""

    job: Job
    selection: Selection
    replicas: dict[str, Replica]
    resampled: list[str] = field(default_factory=list)
    timeouts: list[str] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    subject: tuple[str, str] | None = None
    streamer: str | None = None
    """The machine whose answer is being streamed to the user."""
    streamed: Answer | None = None
    forwarded: bool = False
    """Whether any chunk reached the user: after that, the streamer's failure cannot be hidden."""

    def next_spare(self) -> str:
        machine = self.selection.resample(len(self.resampled))
        self.resampled.append(machine)
        return machine

    def spares_left(self) -> int:
        return len(self.selection.spares) - len(self.resampled)

    def request_digest(self) -> str:
        """The digest replicas commit to (for a sealed request: learnt from the first answer)."""
        if self.subject is not None:
            return self.subject[0]
        return self.job.expected.request_digest or self.job.seed_digest


class Orchestrator:
    def __init__(self, upstream: Upstream, directory: Directory, reporter: Reporter, commit_timeout: float) -> None:
        self.upstream = upstream
        self.directory = directory
        self.reporter = reporter
        self.commit_timeout = commit_timeout

    async def run(self, job: Job) -> Outcome:
        """Run ``job`` under its mode; raise a typed error if no answer can be given."""
        live = {replica.machine_id: replica for replica in self.directory.live(job.deployment)}
        seed = selection_seed(job.head.hash, job.seed_digest, job.nonce)
        selection = select(seed, sorted(live), job.mode)
        run = _Run(job, selection, live)
        try:
            return await self._consensus(run)
        finally:
            for machine_id in run.timeouts:
                self.reporter.timeout(job.deployment.order_id, machine_id, run.request_digest())

    async def _consensus(self, run: _Run) -> Outcome:
        selection, order_id = run.selection, run.job.deployment.order_id
        first: list[tuple[str, Role]] = [(m, SELECTED) for m in selection.selected]
        first += [(m, REFEREE) for m in selection.referees]
        await self._wave(run, first, required=True)
        verdict = decide([a.commitment for a in run.answers])
        referees_asked = 0
        while not verdict.agreed and (referees_asked == 0 or verdict.output_digest is None):
            wanted = min(_referees_needed(run.answers), run.spares_left())
            if wanted == 0:
                break
            await self._wave(run, [(run.next_spare(), REFEREE) for _ in range(wanted)], required=False)
            referees_asked += wanted
            verdict = decide([a.commitment for a in run.answers])
        dispute_id = None
        if not verdict.agreed:
            dispute_id = await self.reporter.dispute(order_id, run.request_digest(), run.answers)
        if verdict.output_digest is None:
            raise ConsensusFailed(
                f"the replicas of {order_id} disagree and no answer holds a strict majority "
                f"(dispute {dispute_id or 'not recorded'}); retry the request",
                dispute_id=dispute_id,
            )
        return Outcome(
            answer=_majority_answer(run, verdict),
            answers=tuple(run.answers),
            verdict=verdict,
            selection=selection,
            resampled=tuple(run.resampled),
            dispute_id=dispute_id,
            streamed=run.streamed,
            replicas=run.replicas,
        )

    async def _wave(self, run: _Run, assignments: list[tuple[str, Role]], *, required: bool) -> None:
        """Run each assignment until it commits, replacing failures with spares; all at once, none told of others."""
        tasks: dict[asyncio.Task[Answer], tuple[str, Role]] = {}

        def start(machine_id: str, role: Role) -> None:
            if run.job.sink is not None and run.streamer is None and run.streamed is None:
                run.streamer = machine_id
            tasks[asyncio.create_task(self._attempt(run, machine_id, role))] = (machine_id, role)

        for machine_id, role in assignments:
            start(machine_id, role)
        try:
            while tasks:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    machine_id, role = tasks.pop(task)
                    failure = task.exception()
                    if failure is None:
                        failure = self._accept(run, task.result())
                        if failure is None:
                            continue
                    if not isinstance(failure, ReplicaFailure):
                        raise failure
                    self._failed(run, machine_id, failure)
                    if run.spares_left() > 0:
                        start(run.next_spare(), role)
                    elif required:
                        raise NotEnoughReplicas(
                            f"replica {machine_id} of {run.job.deployment.order_id} failed ({failure.message}) "
                            "and no spare replica is left to take its place; retry later",
                        )
        finally:
            for task in tasks:
                task.cancel()

    async def _attempt(self, run: _Run, machine_id: str, role: Role) -> Answer:
        sink: ChunkSink | None = None
        user_sink = run.job.sink
        if user_sink is not None and run.streamer == machine_id:

            async def forward(chunk: dict[str, Any]) -> None:
                run.forwarded = True
                await user_sink(chunk)

            sink = forward
        answer = await self.upstream.execute(
            run.replicas[machine_id],
            run.job.body,
            role,
            run.job.expected,
            timeout=self.commit_timeout,
            created_at=run.job.created_at,
            sink=sink,
        )
        if sink is not None:
            run.streamed = answer
        return answer

    def _accept(self, run: _Run, answer: Answer) -> ReplicaFailure | None:
        """Keep a checked answer, or say why it does not count (a sealed request's first answer fixes its digests)."""
        commitment = answer.commitment
        subject = (commitment.request_digest, commitment.params_digest)
        if run.subject is None:
            run.subject = subject
        if subject != run.subject:
            return ReplicaFailure("invalid", f"machine {commitment.machine_id} committed to another request")
        self.directory.mark(answer.replica.machine_id, up=True)
        run.answers.append(answer)
        return None

    def _failed(self, run: _Run, machine_id: str, failure: ReplicaFailure) -> None:
        """Account for a failed replica; a refusal is the request's fault (replicas run the same deterministic
        code, so every honest one would refuse it too): the user gets it as a 400."""
        log.warning("replica %s failed (%s): %s", machine_id, failure.kind, failure.message)
        if failure.kind == "refused":
            raise BadRequest(f"the deployment refused the request: {failure.message}", param=failure.param)
        if failure.kind == "timeout":
            run.timeouts.append(machine_id)
        else:
            self.directory.mark(machine_id, up=False)
        if run.streamer == machine_id:
            if run.forwarded:
                raise ReplicaFailed(
                    f"replica {machine_id} failed in the middle of streaming its answer ({failure.message}); "
                    "retry the request"
                )
            run.streamer = None


def _referees_needed(answers: Sequence[Answer]) -> int:
    """Fewest extra votes that could give the leading output a strict majority (at least one)."""
    votes = {a.replica.machine_id: a.commitment.output_digest for a in answers}
    leader = Counter(votes.values()).most_common(1)[0][1]
    return max(1, len(votes) - 2 * leader + 1)


def _majority_answer(run: _Run, verdict: Verdict) -> Answer:
    """The answer the user gets: the streamed one if it won, else the first majority answer in seeded order."""
    if run.streamed is not None and run.streamed.commitment.output_digest == verdict.output_digest:
        return run.streamed
    winners = [a for a in run.answers if a.commitment.output_digest == verdict.output_digest]
    order = {machine: index for index, machine in enumerate(run.selection.order)}
    return min(winners, key=lambda a: order[a.replica.machine_id])
