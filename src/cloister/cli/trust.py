"""The appraisal policy and roots a command judges machines by: a policy file, else the devnet's."""

from __future__ import annotations

from pathlib import Path

import typer

from cloister.attest.der import Certificate, parse_pem_certificates
from cloister.attest.policy import AppraisalPolicy
from cloister.cli.common import options
from cloister.client.devnet import Devnet

Roots = dict[str, tuple[Certificate, ...]]


def trust(ctx: typer.Context, policy: Path | None, sim_roots: Path | None = None) -> tuple[AppraisalPolicy, Roots]:
    """``--policy`` and ``--sim-roots`` if given; otherwise the devnet's policy and its simulated vendor's root."""
    devnet_policy, devnet_roots = Devnet(options(ctx).resolved_home).trust()
    chosen = AppraisalPolicy.load(policy) if policy else devnet_policy
    roots = {"sim": tuple(parse_pem_certificates(sim_roots.read_bytes()))} if sim_roots else devnet_roots
    return chosen, roots
