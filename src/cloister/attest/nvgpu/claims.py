"""What verified GPU evidence proves, per GPU and for the machine: the claims a policy and a TCB judge.

They say nothing about acceptability; :mod:`.policy` does. Bytes are hex in ``to_json`` so claims can travel inside
a TCB record.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cloister.attest.nvgpu.evidence import PLATFORM
from cloister.attest.nvgpu.rim import Comparison
from cloister.attest.nvgpu.spdm import MeasurementBlock


@dataclass(frozen=True)
class RimUsed:
    """Which signed RIM a GPU was compared against."""

    kind: str
    version: str
    tag_id: str
    manufacturer_id: str
    signer: str
    signer_expires: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "version": self.version,
            "tag_id": self.tag_id,
            "manufacturer_id": self.manufacturer_id,
            "signer": self.signer,
            "signer_expires": self.signer_expires.isoformat(),
        }


@dataclass(frozen=True)
class GpuClaims:
    """What one GPU's verified report proves."""

    arch: str
    hwmodel: str
    chip: str
    ueid: str
    oem_id: str
    driver_version: str
    vbios_version: str
    fwid: bytes | None
    nonce: bytes
    measurement_digest: bytes
    """SHA-256 of the signed measurement record: every block the GPU reported, in order."""
    blocks: tuple[MeasurementBlock, ...] = field(repr=False)
    opaque: tuple[tuple[str, str], ...] = field(repr=False)
    rims: tuple[RimUsed, ...] = ()
    comparison: Comparison | None = None
    """None when no RIMs were given."""

    @property
    def measurements_matched(self) -> bool | None:
        return self.comparison.matched if self.comparison is not None else None

    @property
    def debug(self) -> bool:
        """True unless every active measurement matched NVIDIA's RIMs.

        The report has no debug bit; NVIDIA's own verifier reports "debug disabled" exactly when the measurements
        match the production RIMs, since debug firmware measures differently. Without RIMs nothing proves it off.
        """
        return self.measurements_matched is not True

    def to_json(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "hwmodel": self.hwmodel,
            "chip": self.chip,
            "ueid": self.ueid,
            "oem_id": self.oem_id,
            "driver_version": self.driver_version,
            "vbios_version": self.vbios_version,
            "fwid": self.fwid.hex() if self.fwid is not None else None,
            "nonce": self.nonce.hex(),
            "measurement": self.measurement_digest.hex(),
            "measurements_matched": self.measurements_matched,
            "debug": self.debug,
            "blocks": [{"index": b.index, "value_type": b.value_type, "value": b.value.hex()} for b in self.blocks],
            "opaque": dict(self.opaque),
            "rims": [rim.to_json() for rim in self.rims],
            "comparison": self.comparison.to_json() if self.comparison is not None else None,
        }


@dataclass(frozen=True)
class Claims:
    """All GPUs of one machine; they answered the same nonce and are distinct devices."""

    gpus: tuple[GpuClaims, ...]

    @property
    def platform(self) -> str:
        return PLATFORM

    @property
    def report_data(self) -> bytes:
        """The nonce every GPU signed: what a composite TCB binds the GPU evidence to."""
        return self.gpus[0].nonce

    @property
    def measurement(self) -> str:
        """SHA-256 over the GPUs' measurement digests in evidence order (hex)."""
        return hashlib.sha256(b"".join(gpu.measurement_digest for gpu in self.gpus)).hexdigest()

    @property
    def debug(self) -> bool:
        return any(gpu.debug for gpu in self.gpus)

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "report_data": self.report_data.hex(),
            "measurement": self.measurement,
            "debug": self.debug,
            "gpus": [gpu.to_json() for gpu in self.gpus],
        }
