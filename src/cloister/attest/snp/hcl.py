"""The Azure confidential-VM "HCL report": an SNP report wrapped by Azure's paravisor with its runtime data.

Layout: a 32-byte header starting ``HCLA`` (with the total size at 0x08), the 1184-byte SNP report at 0x20, then
the IGVM request data: data size, version, report type (2 = SNP), hash type, variable-data size, variable data.
The variable data (JSON holding the vTPM keys) is bound to the hardware by ``report_data[0:n]`` = its digest, so
it is trusted only once that digest matches and the SNP report verifies.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cloister.attest.snp.report import REPORT_SIZE
from cloister.errors import EvidenceMalformed, VerificationFailed

MAGIC = b"HCLA"
_HEADER = 0x20
_REQUEST = _HEADER + REPORT_SIZE
_REQUEST_HEADER = 20
_SNP_REPORT_TYPE = 2
_HASHES = {1: "sha256", 2: "sha384", 3: "sha512"}


@dataclass(frozen=True)
class HclReport:
    report: bytes
    """The wrapped 1184-byte SNP report."""
    runtime_data: bytes
    """The variable data (UTF-8 JSON) whose digest the SNP report's report_data starts with."""
    hash_name: str


def is_hcl(data: bytes) -> bool:
    return data[:4] == MAGIC


def _u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def parse_hcl(data: bytes) -> HclReport:
    """Split an HCL report (as read from the vTPM NV index, zero padded) into its parts."""
    if not is_hcl(data) or len(data) < _REQUEST + _REQUEST_HEADER:
        raise EvidenceMalformed("HCL report: too short or no HCLA header", check="report_format")
    total = _u32(data, 0x08)
    data_size, report_type = _u32(data, _REQUEST), _u32(data, _REQUEST + 8)
    hash_type, variable_size = _u32(data, _REQUEST + 12), _u32(data, _REQUEST + 16)
    if report_type != _SNP_REPORT_TYPE:
        raise EvidenceMalformed(
            f"HCL report type {report_type} is not SNP (2); a TDX CVM's HCL report goes to the tdx verifier",
            check="report_format",
        )
    if hash_type not in _HASHES:
        raise EvidenceMalformed(f"HCL report: unknown runtime-data hash type {hash_type}", check="report_format")
    if data_size != _REQUEST_HEADER + variable_size or total != _REQUEST + data_size or total > len(data):
        raise EvidenceMalformed("HCL report: the header sizes are inconsistent or truncated", check="report_format")
    return HclReport(
        report=data[_HEADER:_REQUEST],
        runtime_data=data[_REQUEST + _REQUEST_HEADER : total],
        hash_name=_HASHES[hash_type],
    )


def check_runtime_data(hcl: HclReport, report_data: bytes) -> None:
    """The runtime data is what the SNP report vouches for: report_data starts with its digest."""
    digest = hashlib.new(hcl.hash_name, hcl.runtime_data).digest()
    if report_data[: len(digest)] != digest:
        raise VerificationFailed(
            f"HCL runtime data {hcl.hash_name} digest {digest.hex()} does not match the SNP report data: the runtime "
            "data (vTPM keys) was altered or belongs to another report; collect the HCL report again",
            check="hcl_report_data",
        )
