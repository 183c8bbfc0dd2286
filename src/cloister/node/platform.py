"""Where a node's TCB comes from: the platform is a parameter, so the node code is the same everywhere.

A devnet node uses :class:`SimPlatform` (a chip issued by the devnet's :class:`~cloister.attest.sim.SimVendor`).
A node inside a confidential VM uses :class:`ConfigfsTsmPlatform`: SEV-SNP or TDX evidence from the kernel's
configfs-tsm (:mod:`cloister.attest.collect`) and NVIDIA GPU evidence from NVML, for the same report data
(:func:`cloister.attest.tcb.expected_report_data`). :func:`detect_platform` picks one for ``cloister node run``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Protocol

from cloister.attest.collect import TSM_REPORT_ROOT, ConfigfsTsm, TsmReport, collect_nvidia_gpu_evidence
from cloister.attest.nvgpu import PLATFORM as NVGPU
from cloister.attest.nvgpu import Evidence as GpuEvidenceList
from cloister.attest.nvgpu import GpuEvidence
from cloister.attest.nvgpu.evidence import read_certificates
from cloister.attest.sim import SimChip, SimVendor
from cloister.attest.snp import PLATFORM as SNP
from cloister.attest.snp import Evidence as SnpEvidence
from cloister.attest.tcb import PlatformEvidence, Tcb, build_sim_tcb, expected_report_data
from cloister.attest.tdx import PLATFORM as TDX
from cloister.attest.tdx import Evidence as TdxEvidence
from cloister.crypto.identity import PublicIdentity
from cloister.errors import CollectionError, ConfigError

SIM_LOADER_IMAGE = b"cloister sim loader image v1"
TSM_PROVIDERS: Final = {"sev_guest": SNP, "tdx_guest": TDX}
"""configfs-tsm ``provider`` (the kernel driver that signed the report) → the attestation platform that reads it."""
NVIDIA_GPUS: Final = Path("/proc/driver/nvidia/gpus")
"""One folder per GPU the NVIDIA driver has bound: GPU evidence is collected when this is not empty."""
EVIDENCE_DIR: Final = "evidence"
COLLATERAL_DIR: Final = "collateral"
RIMS_DIR: Final = "rims"

GpuCollector = Callable[[bytes], Sequence[tuple[bytes, bytes]]]
"""``nonce`` → per GPU (SPDM attestation report, certificate chain); :func:`collect_nvidia_gpu_evidence`."""


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


@dataclass(frozen=True)
class ConfigfsTsmPlatform:
    """The confidential VM this process runs in: an SNP report or TDX quote from configfs-tsm, GPUs from NVML.

    The collected evidence is written to ``folder`` in the formats ``cloister verify evidence`` reads, then loaded
    through those same readers, which add the operator's ``collateral`` folder (AMD KDS certificates and CRL, or
    Intel PCS collateral) and ``rims`` (NVIDIA reference measurements) that the kernel does not supply.
    """

    folder: Path
    tsm: ConfigfsTsm = field(default_factory=ConfigfsTsm)
    gpus: GpuCollector | None = None
    collateral: Path | None = None
    rims: Path | None = None
    privlevel: int | None = None
    """SNP VMPL to request the report at (None: the kernel's default)."""
    entry: str | None = None
    """An existing report folder under the TSM root to reuse; None makes (and removes) a fresh one per report."""

    def collect(self, loader: PublicIdentity, nonce: bytes, specs: dict[str, Any]) -> Tcb:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        gpu = self._gpu_evidence(nonce)
        report = self.tsm.report(expected_report_data(loader, gpu, nonce), privlevel=self.privlevel, entry=self.entry)
        return Tcb(self._cpu_evidence(report), gpu, loader, nonce, specs)

    def _gpu_evidence(self, nonce: bytes) -> PlatformEvidence | None:
        found = list(self.gpus(nonce)) if self.gpus is not None else []
        if not found:
            return None
        listing = [GpuEvidence(report, read_certificates(chain), nonce=nonce).to_json() for report, chain in found]
        path = self.folder / f"{NVGPU}-evidence.json"
        path.write_text(json.dumps(listing, indent=1))
        return PlatformEvidence(NVGPU, GpuEvidenceList.from_files(path, rims=self.rims).to_json())

    def _cpu_evidence(self, report: TsmReport) -> PlatformEvidence:
        platform = TSM_PROVIDERS.get(report.provider)
        if platform is None:
            raise CollectionError(
                f"configfs-tsm report provider {report.provider or '(none)'!r} is not one Cloister reads; it reads "
                f"{', '.join(TSM_PROVIDERS)}: boot an AMD SEV-SNP or Intel TDX guest with the sev-guest or tdx-guest "
                "driver loaded",
                check="provider",
            )
        path = self.folder / f"{platform}-report.bin"
        path.write_bytes(report.outblob)
        certs = self.folder / f"{platform}-certs.bin"  # the SNP certificate table (VCEK, ASK, ARK) if the host has it
        if platform == SNP and report.auxblob:
            certs.write_bytes(report.auxblob)
        else:
            certs.unlink(missing_ok=True)
        reader = SnpEvidence if platform == SNP else TdxEvidence
        evidence = reader.from_files(path, certs=certs if certs.exists() else None, collateral=self.collateral)
        return PlatformEvidence(platform, evidence.to_json())


class PlatformChoice(StrEnum):
    """``cloister node run --platform``."""

    auto = "auto"
    sim = "sim"
    configfs_tsm = "configfs-tsm"


def detect_platform(
    choice: PlatformChoice,
    folder: Path,
    *,
    sim: Callable[[], TeePlatform],
    tsm_root: Path = TSM_REPORT_ROOT,
    nvidia_gpus: Path = NVIDIA_GPUS,
) -> TeePlatform:
    """The platform for a node whose files live in ``folder``: configfs-tsm when the kernel offers it; the
    simulator only when asked for by name, so a real machine never registers simulated evidence by accident.

    ``folder/collateral`` and ``folder/rims`` are used when they exist; GPUs are attested when the NVIDIA driver
    lists any.
    """
    if choice is PlatformChoice.sim:
        return sim()
    tsm = ConfigfsTsm(tsm_root)
    if not tsm.available():
        hint = (
            "to join a devnet with a simulated TEE, pass `--platform sim`"
            if choice is PlatformChoice.auto
            else "run the node inside the confidential VM, or pass `--platform sim` on a devnet"
        )
        raise ConfigError(
            f"no TEE found: {tsm_root} does not exist, so this is not a confidential VM with configfs-tsm (AMD SEV-SNP "
            f"or Intel TDX guest, Linux ≥ 6.7, configfs mounted); {hint}"
        )
    has_gpus = nvidia_gpus.is_dir() and any(nvidia_gpus.iterdir())
    return ConfigfsTsmPlatform(
        folder=folder / EVIDENCE_DIR,
        tsm=tsm,
        gpus=collect_nvidia_gpu_evidence if has_gpus else None,
        collateral=_folder(folder / COLLATERAL_DIR),
        rims=_folder(folder / RIMS_DIR),
    )


def _folder(path: Path) -> Path | None:
    return path if path.is_dir() else None
