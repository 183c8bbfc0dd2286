"""TCB level evaluation against verified Intel collateral: platform, TDX module and Quoting Enclave.

Follows Intel's quote verification library: the platform level is the first (highest) TCB level whose SGX
components and PCE SVN the PCK certificate reaches and whose TDX components TEE_TCB_SVN reaches; for TDX 1.5
modules (TEE_TCB_SVN byte 1 = module version > 0) bytes 0-1 are judged by the module identity ``TDX_<version>``
instead. The QE level is the first whose ISV SVN the QE report reaches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloister.attest.tdx.collateral import IsvLevel, ModuleIdentity, QeIdentity, TcbInfo
from cloister.attest.tdx.pck import PckInfo
from cloister.attest.tdx.quote import EnclaveReport, TdReport
from cloister.errors import CollateralInvalid, VerificationFailed


@dataclass(frozen=True)
class TcbVerdict:
    """The TCB level a component was matched to: Intel's status, the level's date and its advisories."""

    status: str
    date: str
    advisory_ids: tuple[str, ...] = ()
    component: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "status": self.status,
            "date": self.date,
            "advisory_ids": list(self.advisory_ids),
        }


def _masked_equal(value: bytes, mask: bytes, expected: bytes) -> bool:
    return len(value) == len(mask) and bytes(v & m for v, m in zip(value, mask, strict=True)) == expected


def evaluate_platform(info: TcbInfo, pck: PckInfo, body: TdReport) -> TcbVerdict:
    """Match the platform (PCK TCB + TEE_TCB_SVN) to a TCB level of ``info``."""
    start = 2 if body.tee_tcb_svn[1] > 0 else 0
    for level in info.levels:
        if (
            all(have >= need for have, need in zip(pck.tcb_components, level.sgx_components, strict=True))
            and pck.pce_svn >= level.pce_svn
            and all(body.tee_tcb_svn[i] >= level.tdx_components[i] for i in range(start, 16))
        ):
            return TcbVerdict(level.status, level.date, level.advisory_ids, "platform")
    raise CollateralInvalid(
        f"no matching TCB level: TCB not supported by tcbInfo (evaluation data number {info.evaluation_number}) for "
        f"PCK components {list(pck.tcb_components)}, PCESVN {pck.pce_svn}, TEE_TCB_SVN {body.tee_tcb_svn.hex()}; "
        "the platform needs a firmware/microcode update or newer TCB info",
        check="tcb_level",
    )


def _first_isv_level(levels: tuple[IsvLevel, ...], svn: int) -> IsvLevel | None:
    return next((level for level in levels if level.isv_svn <= svn), None)


def evaluate_module(info: TcbInfo, body: TdReport) -> TcbVerdict | None:
    """Check the TDX module's signer and attributes; for TDX 1.5 modules also its identity's TCB level."""
    version, isv_svn = body.tee_tcb_svn[1], body.tee_tcb_svn[0]
    identity: ModuleIdentity = info.module
    if version > 0:
        name = f"TDX_{version:02X}"
        found = next((item for item in info.module_identities if item.id.upper() == name), None)
        if found is None:
            raise CollateralInvalid(
                f"tcbInfo has no TDX module identity {name} (TEE_TCB_SVN {body.tee_tcb_svn.hex()}); "
                "fetch newer TCB info",
                check="tdx_module",
            )
        identity = found
    if identity.mr_signer != body.mr_signer_seam:
        raise VerificationFailed(
            f"MRSIGNERSEAM {body.mr_signer_seam.hex()} is not Intel's TDX module signer {identity.mr_signer.hex()}",
            check="tdx_module",
        )
    if not _masked_equal(body.seam_attributes, identity.attributes_mask, identity.attributes):
        raise VerificationFailed(
            f"SEAM attributes {body.seam_attributes.hex()} do not match the TDX module identity", check="tdx_module"
        )
    if version == 0:
        return None
    level = _first_isv_level(identity.levels, isv_svn)
    if level is None:
        raise CollateralInvalid(
            f"no TCB level of TDX module {identity.id} matches its SVN {isv_svn}: the module is revoked",
            check="tdx_module",
        )
    return TcbVerdict(level.status, level.date, level.advisory_ids, identity.id)


def evaluate_qe(identity: QeIdentity, report: EnclaveReport) -> TcbVerdict:
    """Check the Quoting Enclave against Intel's TD_QE identity and find its TCB level."""
    misc = report.misc_select & identity.misc_select_mask
    if misc != identity.misc_select:
        raise VerificationFailed(f"QE MISCSELECT 0x{misc:08x} does not match the QE identity", check="qe_identity")
    if not _masked_equal(report.attributes, identity.attributes_mask, identity.attributes):
        raise VerificationFailed(
            f"QE attributes {report.attributes.hex()} do not match the QE identity", check="qe_identity"
        )
    if report.mr_signer != identity.mr_signer:
        raise VerificationFailed(
            f"QE MRSIGNER {report.mr_signer.hex()} is not Intel's ({identity.mr_signer.hex()})", check="qe_identity"
        )
    if report.isv_prod_id != identity.isv_prod_id:
        raise VerificationFailed(
            f"QE ISVPRODID {report.isv_prod_id} is not {identity.isv_prod_id}: not Intel's TD Quoting Enclave",
            check="qe_identity",
        )
    level = _first_isv_level(identity.levels, report.isv_svn)
    if level is None:
        raise CollateralInvalid(
            f"no TCB level of the QE identity matches QE ISVSVN {report.isv_svn}: the Quoting Enclave is revoked",
            check="qe_tcb_level",
        )
    return TcbVerdict(level.status, level.date, level.advisory_ids, identity.id)
