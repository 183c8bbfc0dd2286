"""Where a node's TCB comes from: the platform is a parameter, so the node code is the same everywhere.

A devnet node uses :class:`SimPlatform` (a chip issued by the devnet's :class:`~cloister.attest.sim.SimVendor`).
A node on real hardware supplies a platform that collects SNP/TDX evidence with
:mod:`cloister.attest.collect` (configfs-tsm) and GPU evidence with NVIDIA's SPDM report, for the same report
data (:func:`cloister.attest.tcb.expected_report_data`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from cloister.attest.sim import SimChip, SimVendor
from cloister.attest.tcb import Tcb, build_sim_tcb
from cloister.crypto.identity import PublicIdentity

SIM_LOADER_IMAGE = b"cloister sim loader image v1"


class TeePlatform(Protocol):
    """Produces a TCB binding the loader keys and answering the ledger's challenge nonce."""

    def collect(self, loader: PublicIdentity, nonce: bytes, specs: dict[str, Any]) -> Tcb: ...


@dataclass
class SimPlatform:
    """A simulated TEE: a chip certified by ``vendor``; ``debug`` makes a debuggable guest (keepers refuse it)."""

    vendor: SimVendor
    chip_id: str
    measurement: bytes = field(default_factory=lambda: hashlib.sha384(SIM_LOADER_IMAGE).digest())
    debug: bool = False
    _chip: SimChip | None = field(default=None, repr=False)

    def collect(self, loader: PublicIdentity, nonce: bytes, specs: dict[str, Any]) -> Tcb:
        if self._chip is None:
            self._chip = self.vendor.issue_chip(self.chip_id)
        return build_sim_tcb(
            self._chip, None, loader=loader, nonce=nonce, specs=specs, measurement=self.measurement, debug=self.debug
        )
