"""One sim vendor and its chips for the attestation tests, issued at a fixed time so `now` is under test control."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from cloister.attest import sim

ISSUED = datetime(2030, 1, 1, tzinfo=UTC)
NOW = ISSUED + timedelta(days=30)
VENDOR = sim.SimVendor.generate(now=ISSUED)
CPU_CHIP = VENDOR.issue_chip("node-1", now=ISSUED, tcb_version=3)
GPU_CHIP = VENDOR.issue_chip("gpu-1", kind="gpu", now=ISSUED, tcb_version=2)
MEASUREMENT = hashlib.sha384(b"loader image").digest()
GPU_BLOCKS = (hashlib.sha384(b"gpu firmware").digest(), b"\x01\x02", hashlib.sha384(b"vbios").digest())
OPTIONS = sim.VerifyOptions(now=NOW, roots=(VENDOR.certificate,))


def cpu_report(report_data: bytes = bytes(range(64)), **fields: object) -> bytes:
    return CPU_CHIP.cpu_report(report_data, measurement=MEASUREMENT, **fields)  # type: ignore[arg-type]


def gpu_report(nonce: bytes = bytes(range(32)), **fields: object) -> bytes:
    return GPU_CHIP.gpu_report(nonce, measurements=GPU_BLOCKS, **fields)  # type: ignore[arg-type]
