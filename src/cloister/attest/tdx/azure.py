"""Azure TDX confidential VMs: the paravisor's HCL report binds its runtime data (the vTPM attestation key, as JSON
web keys) to the TD quote through REPORT_DATA[0:32] = SHA-256(runtime data).

Layout: a 32-byte header (``HCLA``, version, report size, request type), the hardware report area (1184 bytes; a
1024-byte TDREPORT for TDX), then the runtime data header (size, version, report type 4 = TDX, hash type
1 = SHA-256, variable data size) and the variable data itself.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cloister.attest.tdx.claims import Claims
from cloister.errors import EvidenceMalformed, VerificationFailed

_HEADER = 0x20
_RUNTIME = 0x4C0
_TDREPORT_DATA = _HEADER + 128
_REPORT_TYPE_TDX = 4
_HASH_SHA256 = 1


def hcl_runtime_data(report: bytes, claims: Claims) -> bytes:
    """The HCL runtime data bound to the verified quote ``claims`` came from; raise if it is not bound."""
    if len(report) < _RUNTIME + 20 or report[:4] != b"HCLA":
        raise EvidenceMalformed("not an Azure HCL report (no 'HCLA' header or too short)", check="hcl_report")
    _, _, report_type, hash_type, size = struct.unpack_from("<IIIII", report, _RUNTIME)
    if report_type != _REPORT_TYPE_TDX or hash_type != _HASH_SHA256:
        raise EvidenceMalformed(
            f"HCL runtime data is report type {report_type} / hash {hash_type}, expected TDX (4) with SHA-256 (1)",
            check="hcl_report",
        )
    if _RUNTIME + 20 + size > len(report):
        raise EvidenceMalformed("HCL runtime data runs past the end of the report", check="hcl_report")
    runtime = report[_RUNTIME + 20 : _RUNTIME + 20 + size]
    if not hmac.compare_digest(report[_TDREPORT_DATA : _TDREPORT_DATA + 64], claims.report_data):
        raise VerificationFailed(
            "the HCL report's TDREPORT is not the one this quote was made from", check="hcl_report"
        )
    if not hmac.compare_digest(hashlib.sha256(runtime).digest(), claims.report_data[:32]):
        raise VerificationFailed(
            "REPORT_DATA[0:32] is not SHA-256 of the HCL runtime data: the runtime data (vTPM key) is not bound",
            check="hcl_report_data",
        )
    return runtime
