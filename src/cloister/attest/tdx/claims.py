"""What a verified TDX quote proves, as typed claims for the policy and for the composite TCB."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloister.attest.tdx.pck import PckInfo
from cloister.attest.tdx.quote import BODY_TDX15, EnclaveReport, Header, TdReport
from cloister.attest.tdx.tcb import TcbVerdict

# TD_ATTRIBUTES bits (TDX module ABI): the ones a policy reader cares about.
TD_ATTRIBUTE_BITS = {"debug": 0, "sept_ve_disable": 28, "pks": 30, "key_locker": 31, "perfmon": 63}


def td_attribute(attributes: bytes, name: str) -> bool:
    return bool(int.from_bytes(attributes, "little") >> TD_ATTRIBUTE_BITS[name] & 1)


@dataclass(frozen=True)
class Claims:
    header: Header
    body_type: int
    body: TdReport
    qe_report: EnclaveReport
    pck: PckInfo
    platform_tcb: TcbVerdict | None = None
    """The platform's TCB level from verified TCB info; None when no TCB info was supplied."""
    module_tcb: TcbVerdict | None = None
    """The TDX 1.5 module identity's TCB level (None for TDX 1.0 modules or without TCB info)."""
    qe_tcb: TcbVerdict | None = None
    """The Quoting Enclave's TCB level from a verified QE identity."""
    tcb_evaluation_number: int | None = None
    revocation_checked: bool = False
    """Both the PCK CRL and the root CA CRL were verified and revoke nothing in the chain."""
    rtmrs_replayed: bool = False
    """A CCEL event log was supplied and replays exactly to RTMR0..3."""

    @property
    def platform(self) -> str:
        return "tdx"

    @property
    def report_data(self) -> bytes:
        return self.body.report_data

    @property
    def measurement(self) -> str:
        """MRTD: the TD's initial memory and configuration (the virtual firmware)."""
        return self.body.mr_td.hex()

    @property
    def debug(self) -> bool:
        return td_attribute(self.body.td_attributes, "debug")

    @property
    def tcb_statuses(self) -> dict[str, str]:
        """Every TCB status established, by component (platform, module, QE)."""
        verdicts = {"platform": self.platform_tcb, "tdx_module": self.module_tcb, "qe": self.qe_tcb}
        return {name: verdict.status for name, verdict in verdicts.items() if verdict is not None}

    def to_json(self) -> dict[str, Any]:
        body = self.body
        return {
            "platform": self.platform,
            "measurement": self.measurement,
            "debug": self.debug,
            "report_data": body.report_data.hex(),
            "quote_version": self.header.version,
            "tdx_version": "1.5" if self.body_type == BODY_TDX15 else "1.0",
            "header": {
                "tee_type": self.header.tee_type,
                "qe_svn": self.header.qe_svn,
                "pce_svn": self.header.pce_svn,
                "qe_vendor_id": self.header.qe_vendor_id.hex(),
                "user_data": self.header.user_data.hex(),
            },
            "body": {
                "tee_tcb_svn": body.tee_tcb_svn.hex(),
                "mr_seam": body.mr_seam.hex(),
                "mr_signer_seam": body.mr_signer_seam.hex(),
                "seam_attributes": body.seam_attributes.hex(),
                "td_attributes": body.td_attributes.hex(),
                "xfam": body.xfam.hex(),
                "mr_td": body.mr_td.hex(),
                "mr_config_id": body.mr_config_id.hex(),
                "mr_owner": body.mr_owner.hex(),
                "mr_owner_config": body.mr_owner_config.hex(),
                "rtmrs": [rtmr.hex() for rtmr in body.rtmrs],
                "tee_tcb_svn2": None if body.tee_tcb_svn2 is None else body.tee_tcb_svn2.hex(),
                "mr_service_td": None if body.mr_service_td is None else body.mr_service_td.hex(),
            },
            "td_attributes": {name: td_attribute(body.td_attributes, name) for name in TD_ATTRIBUTE_BITS},
            "qe": {
                "isv_svn": self.qe_report.isv_svn,
                "isv_prod_id": self.qe_report.isv_prod_id,
                "mr_signer": self.qe_report.mr_signer.hex(),
                "mr_enclave": self.qe_report.mr_enclave.hex(),
            },
            "pck": {
                "fmspc": self.pck.fmspc.hex(),
                "pce_id": self.pck.pce_id.hex(),
                "pce_svn": self.pck.pce_svn,
                "tcb_components": list(self.pck.tcb_components),
                "cpu_svn": self.pck.cpu_svn.hex(),
                "ppid": self.pck.ppid.hex(),
                "platform_instance_id": None
                if self.pck.platform_instance_id is None
                else self.pck.platform_instance_id.hex(),
            },
            "tcb": {
                "evaluation_number": self.tcb_evaluation_number,
                "platform": None if self.platform_tcb is None else self.platform_tcb.to_json(),
                "tdx_module": None if self.module_tcb is None else self.module_tcb.to_json(),
                "qe": None if self.qe_tcb is None else self.qe_tcb.to_json(),
            },
            "revocation_checked": self.revocation_checked,
            "rtmrs_replayed": self.rtmrs_replayed,
        }
