"""**Validate** verified TDX claims against a policy: which TDs, modules and TCB levels are acceptable.

Defaults are safe: debug TDs are refused, Intel collateral (TCB info and QE identity) and both CRLs must have been
verified, and every TCB status must be UpToDate. Measurement allow-lists are empty by default, meaning "any": a
production policy names its MRTDs (and usually RTMRs).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, fields
from typing import Any

from cloister.attest.checks import Checklist
from cloister.attest.tdx.claims import Claims
from cloister.attest.tdx.collateral import TCB_STATUSES
from cloister.errors import AttestationError, ConfigError, PolicyViolation

Rtmrs = tuple[bytes | None, bytes | None, bytes | None, bytes | None]
_HEX_SIZES = {
    "mr_config_id": 48,
    "mr_owner": 48,
    "mr_owner_config": 48,
    "td_attributes": 8,
    "xfam": 8,
    "report_data": 64,
    "minimum_tee_tcb_svn": 16,
    "qe_vendor_id": 16,
}
_RTMR_KEYS = ("rtmr0", "rtmr1", "rtmr2", "rtmr3")


@dataclass(frozen=True)
class Policy:
    allow_debug: bool = False
    """Accept TDs whose TD_ATTRIBUTES DEBUG bit is set (their memory is readable by the host)."""
    mr_td: tuple[bytes, ...] = ()
    """Allowed MRTDs (the TD's firmware measurement); empty = any."""
    rtmrs: Rtmrs = (None, None, None, None)
    """Exact RTMR0..3 values; None = any (TOML keys ``rtmr0`` … ``rtmr3``)."""
    mr_seam: tuple[bytes, ...] = ()
    """Allowed TDX module measurements; empty = any."""
    mr_config_id: bytes | None = None
    mr_owner: bytes | None = None
    mr_owner_config: bytes | None = None
    td_attributes: bytes | None = None
    """Exact TD_ATTRIBUTES (8 bytes as in the quote)."""
    xfam: bytes | None = None
    """Exact XFAM (8 bytes as in the quote)."""
    report_data: bytes | None = None
    """Exact 64-byte REPORT_DATA."""
    qe_vendor_id: bytes | None = None
    """Exact QE vendor id (Intel's is 939a7233f79c4ca9940a0db3957f0607)."""
    minimum_tee_tcb_svn: bytes | None = None
    """Each of the 16 TEE_TCB_SVN bytes must be ≥ the same byte here."""
    minimum_qe_svn: int = 0
    """Minimum ISVSVN of the Quoting Enclave, from its PCK-signed report (the quote header's QE SVN is reserved)."""
    minimum_pce_svn: int = 0
    """Minimum PCESVN, from the PCK certificate (the quote header's PCE SVN is reserved)."""
    tcb_statuses: tuple[str, ...] = ("UpToDate",)
    """Acceptable Intel TCB statuses; each established one (platform, TDX module, QE) must be listed."""
    require_collateral: bool = True
    """TCB info and QE identity must have been verified, so the platform and QE TCB statuses are known."""
    require_revocation_check: bool = True
    """The PCK CRL and the root CA CRL must have been verified."""
    require_rtmr_replay: bool = False
    """A CCEL event log must have replayed to the quote's RTMRs."""

    @classmethod
    def from_toml(cls, table: dict[str, Any]) -> Policy:
        """The ``[tdx]`` table of a policy file; hex strings for byte values."""
        if not isinstance(table, dict):
            raise ConfigError("the [tdx] policy must be a table")
        known = {item.name for item in fields(cls)} - {"rtmrs"} | set(_RTMR_KEYS)
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in the [tdx] policy; known keys: {sorted(known)}")
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key in _RTMR_KEYS:
                continue
            if key in _HEX_SIZES:
                values[key] = _hex(value, _HEX_SIZES[key], key)
            elif key in ("mr_td", "mr_seam"):
                if not isinstance(value, list):
                    raise ConfigError(f"[tdx] {key} must be a list of hex strings")
                values[key] = tuple(_hex(item, 48, key) for item in value)
            elif key == "tcb_statuses":
                if not isinstance(value, list) or not all(
                    isinstance(item, str) and item in TCB_STATUSES for item in value
                ):
                    raise ConfigError(f"[tdx] tcb_statuses must be a list drawn from {sorted(TCB_STATUSES)}")
                values[key] = tuple(value)
            elif key in ("minimum_qe_svn", "minimum_pce_svn"):
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
                    raise ConfigError(f"[tdx] {key} must be an integer 0..65535")
                values[key] = value
            elif not isinstance(value, bool):
                raise ConfigError(f"[tdx] {key} must be true or false")
            else:
                values[key] = value
        rtmrs = tuple(_hex(table[key], 48, key) if key in table else None for key in _RTMR_KEYS)
        return cls(rtmrs=(rtmrs[0], rtmrs[1], rtmrs[2], rtmrs[3]), **values)

    def to_json(self) -> dict[str, Any]:
        """The policy as a ``[tdx]`` table (``from_toml`` reads it back): recorded with every verdict."""
        table: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "rtmrs":
                table.update({key: rtmr.hex() for key, rtmr in zip(_RTMR_KEYS, value, strict=True) if rtmr})
            elif isinstance(value, bytes):
                table[item.name] = value.hex()
            elif item.name in ("mr_td", "mr_seam"):
                table[item.name] = [entry.hex() for entry in value]
            elif item.name == "tcb_statuses":
                table[item.name] = list(value)
            elif value is not None:
                table[item.name] = value
        return table


def _hex(value: Any, size: int, key: str) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or len(raw) != size:
        raise ConfigError(f"[tdx] {key} must be {size} bytes of hex ({2 * size} hex digits)")
    return raw


def validate(claims: Claims, policy: Policy, *, checklist: Checklist | None = None) -> None:
    """Raise :class:`PolicyViolation` naming the first rule ``claims`` break; record each rule that holds."""
    checklist = checklist if checklist is not None else Checklist()
    try:
        _validate(claims, policy, checklist)
    except AttestationError as exc:
        checklist.fail(exc)


def _require(checklist: Checklist, ok: bool, check: str, failure: str, success: str = "") -> None:
    if not ok:
        raise PolicyViolation(failure, check=check)
    checklist.passed(check, success)


def _exact(checklist: Checklist, check: str, have: bytes, want: bytes | None) -> None:
    if want is not None:
        _require(
            checklist, hmac.compare_digest(have, want), check, f"{check} is {have.hex()}, policy requires {want.hex()}"
        )


def _validate(claims: Claims, policy: Policy, checklist: Checklist) -> None:
    body = claims.body
    _require(
        checklist,
        policy.allow_debug or not claims.debug,
        "debug",
        "TD_ATTRIBUTES DEBUG bit is set, but the policy does not allow debug TDs (their memory is not confidential)",
        "debug TD allowed" if claims.debug else "not a debug TD",
    )
    if policy.mr_td:
        _require(
            checklist,
            body.mr_td in policy.mr_td,
            "measurement",
            f"MRTD {body.mr_td.hex()} is not in the policy's allow-list",
            f"MRTD {body.mr_td.hex()}",
        )
    if policy.mr_seam:
        _require(
            checklist,
            body.mr_seam in policy.mr_seam,
            "mr_seam",
            f"MRSEAM {body.mr_seam.hex()} is not in the policy's allow-list",
        )
    for index, want in enumerate(policy.rtmrs):
        _exact(checklist, f"rtmr{index}", body.rtmrs[index], want)
    _exact(checklist, "mr_config_id", body.mr_config_id, policy.mr_config_id)
    _exact(checklist, "mr_owner", body.mr_owner, policy.mr_owner)
    _exact(checklist, "mr_owner_config", body.mr_owner_config, policy.mr_owner_config)
    _exact(checklist, "td_attributes", body.td_attributes, policy.td_attributes)
    _exact(checklist, "xfam", body.xfam, policy.xfam)
    _exact(checklist, "report_data", body.report_data, policy.report_data)
    _exact(checklist, "qe_vendor_id", claims.header.qe_vendor_id, policy.qe_vendor_id)
    if policy.minimum_tee_tcb_svn is not None:
        have, need = body.tee_tcb_svn, policy.minimum_tee_tcb_svn
        _require(
            checklist,
            all(h >= n for h, n in zip(have, need, strict=True)),
            "tee_tcb_svn",
            f"TEE TCB security-version number {list(have)} is less than the required minimum {list(need)}",
        )
    _require(
        checklist,
        claims.qe_report.isv_svn >= policy.minimum_qe_svn,
        "qe_svn",
        f"QE security-version number {claims.qe_report.isv_svn} is less than the required minimum "
        f"{policy.minimum_qe_svn}",
    )
    _require(
        checklist,
        claims.pck.pce_svn >= policy.minimum_pce_svn,
        "pce_svn",
        f"PCE security-version number {claims.pck.pce_svn} is less than the required minimum {policy.minimum_pce_svn}",
    )
    _validate_tcb(claims, policy, checklist)


def _validate_tcb(claims: Claims, policy: Policy, checklist: Checklist) -> None:
    if policy.require_collateral:
        _require(
            checklist,
            claims.platform_tcb is not None and claims.qe_tcb is not None,
            "collateral_required",
            "the TCB status is unknown: verify the quote with Intel PCS collateral (TCB info and QE identity), "
            "or set require_collateral = false",
        )
    statuses = claims.tcb_statuses
    bad = {name: status for name, status in statuses.items() if status not in policy.tcb_statuses}
    _require(
        checklist,
        not bad,
        "tcb_status",
        f"TCB status {bad} is not acceptable (policy accepts {list(policy.tcb_statuses)}); update the platform",
        ", ".join(f"{name} {status}" for name, status in statuses.items()) or "no collateral",
    )
    if policy.require_revocation_check:
        _require(
            checklist,
            claims.revocation_checked,
            "revocation_required",
            "revocation was not checked: supply the PCK CRL and root CA CRL, or set require_revocation_check = false",
        )
    if policy.require_rtmr_replay:
        _require(
            checklist,
            claims.rtmrs_replayed,
            "rtmr_replay_required",
            "no CCEL event log was replayed against the RTMRs; supply ccel_table.bin and ccel_data.bin",
        )
