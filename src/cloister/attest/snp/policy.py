"""SEV-SNP **validate**: does an authentic report satisfy the relying party's policy?

Modelled on go-sev-guest's ``validate.Options``. Defaults are the safe ones: debug guests and migration agents are
refused, and firmware may run ahead of its committed version but never behind it; everything else is unchecked until
the policy names a value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from cloister.attest.checks import Checklist
from cloister.attest.snp.report import Tcb
from cloister.attest.snp.verify import Claims
from cloister.errors import ConfigError, PolicyViolation

TcbMinimum = int | Mapping[str, int]
"""A raw TCB_VERSION (as go-sev-guest prints it, decoded by the report's product layout) or components by name:
``bootloader``, ``tee``, ``snp``, ``microcode`` and, on Turin, ``fmc``."""
_TCB_PARTS = ("fmc", "bootloader", "tee", "snp", "microcode")


@dataclass(frozen=True)
class Policy:
    allow_debug: bool = False
    """Accept guests whose policy lets the host debug (decrypt) them: never for real secrets."""
    allow_smt: bool = True
    """Accept guests whose policy allows simultaneous multithreading on the host."""
    allow_migration_agent: bool = False
    """Accept guests that may be bound to a migration agent (which can read their memory)."""
    require_single_socket: bool = False
    minimum_guest_svn: int = 0
    measurements: tuple[bytes, ...] = ()
    """Allowed launch measurements (48 bytes each); empty = any. A real policy should always set this."""
    report_data: bytes | None = None
    """Exact 64-byte REPORT_DATA."""
    host_data: bytes | None = None
    """Exact 32-byte HOST_DATA (set by the host at launch, e.g. a config digest)."""
    family_id: bytes | None = None
    image_id: bytes | None = None
    chip_ids: tuple[bytes, ...] = ()
    """Allowed CHIP_IDs (64 bytes each); empty = any machine."""
    vmpl: int | None = None
    """Exact VMPL the report was requested from (0 = most privileged)."""
    minimum_tcb: TcbMinimum | None = None
    """Floor for the current and the reported TCB, component by component."""
    minimum_launch_tcb: TcbMinimum | None = None
    """Floor for the TCB the guest was launched on."""
    minimum_version: tuple[int, int] | None = None
    """Floor (major, minor) for the current and committed firmware."""
    minimum_build: int = 0
    """Floor for the current and committed firmware build."""
    permit_provisional_firmware: bool = True
    """Accept firmware (typically microcode) running newer than what is committed, as production clouds do;
    False requires current == committed. Running *older* than committed is refused either way."""
    require_id_block: bool = False
    """The guest must have been launched with an ID block (non-zero ID_KEY_DIGEST)."""
    require_author_key: bool = False
    """The ID block must be signed by an author key (AUTHOR_KEY_EN)."""
    id_key_digests: tuple[bytes, ...] = ()
    """Allowed ID_KEY_DIGESTs (48 bytes each); empty = any."""
    author_key_digests: tuple[bytes, ...] = ()
    """Allowed AUTHOR_KEY_DIGESTs (48 bytes each); empty = any."""
    platform_info: int | None = None
    """The PLATFORM_INFO bits the platform may have set (e.g. 1 = SMT enabled); None = any."""

    @classmethod
    def from_toml(cls, table: Mapping[str, Any]) -> Policy:
        """The ``[snp]`` table of a policy file; hex strings for bytes. Raises :class:`ConfigError` when malformed."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(
                f"[snp] policy: unknown keys {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
            )
        values: dict[str, Any] = {}
        for name, value in table.items():
            try:
                values[name] = _CONVERTERS[name](value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"[snp] policy: {name} = {value!r}: {exc}") from None
        return cls(**values)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("expected true or false")
    return value


def _uint(bits: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << bits:
            raise ValueError(f"expected an integer from 0 to {(1 << bits) - 1}")
        return value

    return convert


def _hex(size: int) -> Callable[[Any], bytes]:
    def convert(value: Any) -> bytes:
        if not isinstance(value, str):
            raise TypeError("expected a hex string")
        data = bytes.fromhex(value)
        if len(data) != size:
            raise ValueError(f"expected {size} bytes, got {len(data)}")
        return data

    return convert


def _hex_list(size: int) -> Callable[[Any], tuple[bytes, ...]]:
    def convert(value: Any) -> tuple[bytes, ...]:
        if not isinstance(value, list):
            raise TypeError("expected a list of hex strings")
        return tuple(_hex(size)(item) for item in value)

    return convert


def _tcb_minimum(value: Any) -> TcbMinimum:
    if isinstance(value, dict):
        unknown = set(value) - set(_TCB_PARTS)
        if unknown:
            raise ValueError(f"unknown TCB components {sorted(unknown)}; use {', '.join(_TCB_PARTS)}")
        return {name: _uint(8)(level) for name, level in value.items()}
    return _uint(64)(value)


def _version(value: Any) -> tuple[int, int]:
    if not isinstance(value, str):
        raise TypeError('expected "major.minor", e.g. "1.55"')
    major, dot, minor = value.partition(".")
    if not dot or not major.isdigit() or not minor.isdigit() or int(major) > 0xFF or int(minor) > 0xFF:
        raise ValueError('expected "major.minor", e.g. "1.55"')
    return int(major), int(minor)


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "allow_debug": _bool,
    "allow_smt": _bool,
    "allow_migration_agent": _bool,
    "require_single_socket": _bool,
    "minimum_guest_svn": _uint(32),
    "measurements": _hex_list(48),
    "report_data": _hex(64),
    "host_data": _hex(32),
    "family_id": _hex(16),
    "image_id": _hex(16),
    "chip_ids": _hex_list(64),
    "vmpl": _uint(2),
    "minimum_tcb": _tcb_minimum,
    "minimum_launch_tcb": _tcb_minimum,
    "minimum_version": _version,
    "minimum_build": _uint(8),
    "permit_provisional_firmware": _bool,
    "require_id_block": _bool,
    "require_author_key": _bool,
    "id_key_digests": _hex_list(48),
    "author_key_digests": _hex_list(48),
    "platform_info": _uint(64),
}


def _below(tcb: Tcb, minimum: TcbMinimum, *, turin: bool) -> list[str]:
    """The components of ``tcb`` under ``minimum``, as "name level < floor"."""
    floor = Tcb.decode(minimum, turin=turin).components() if isinstance(minimum, int) else dict(minimum)
    actual = tcb.components()
    if "fmc" in floor and "fmc" not in actual:
        return ["fmc (only Turin has one)"]
    return [f"{name} {actual[name]} < {level}" for name, level in floor.items() if actual[name] < level]


Check = Callable[[str, bool, str], None]


def _checker(checklist: Checklist) -> Check:
    """``check(name, ok, message)``: record a pass, or record and raise :class:`PolicyViolation` naming ``name``."""

    def check(name: str, ok: bool, message: str) -> None:
        with checklist.run(name):
            if not ok:
                raise PolicyViolation(message, check=name)

    return check


def _guest(claims: Claims, policy: Policy, check: Check) -> None:
    guest, report = claims.report.policy, claims.report
    check(
        "debug",
        policy.allow_debug or not guest.debug,
        "the guest policy allows debugging (bit 19), so the host can read and change its memory: relaunch the "
        "guest without debug",
    )
    check("smt", policy.allow_smt or not guest.smt, "the guest policy allows SMT, which this policy forbids")
    check(
        "migration_agent",
        policy.allow_migration_agent or not guest.migrate_ma,
        "the guest policy allows a migration agent, which this policy forbids",
    )
    check(
        "single_socket",
        not policy.require_single_socket or guest.single_socket,
        "the policy requires a single-socket guest: relaunch it with the SINGLE_SOCKET policy bit",
    )
    check(
        "guest_svn",
        report.guest_svn >= policy.minimum_guest_svn,
        f"guest SVN {report.guest_svn} is below the required {policy.minimum_guest_svn}",
    )
    if policy.vmpl is not None:
        check("vmpl", report.vmpl == policy.vmpl, f"the report comes from VMPL {report.vmpl}, not {policy.vmpl}")


def _identity(claims: Claims, policy: Policy, check: Check) -> None:
    report = claims.report
    if policy.measurements:
        check(
            "measurement",
            report.measurement in policy.measurements,
            f"launch measurement {claims.measurement} is not in the policy's allow-list",
        )
    for name in ("report_data", "host_data", "family_id", "image_id"):
        expected: bytes | None = getattr(policy, name)
        if expected is not None:
            actual: bytes = getattr(report, name)
            check(name, actual == expected, f"{name} is {actual.hex()}, the policy requires {expected.hex()}")
    if policy.chip_ids:
        check("chip_id", report.chip_id in policy.chip_ids, f"chip {report.chip_id.hex()} is not an allowed machine")
    if policy.require_id_block or policy.id_key_digests:
        allowed = not policy.id_key_digests or report.id_key_digest in policy.id_key_digests
        check(
            "id_block",
            any(report.id_key_digest) and allowed,
            f"ID key digest {report.id_key_digest.hex()} is missing or not allowed: launch the guest with an ID "
            "block signed by an allowed key",
        )
    if policy.require_author_key or policy.author_key_digests:
        allowed = not policy.author_key_digests or report.author_key_digest in policy.author_key_digests
        check(
            "author_key",
            report.author_key_en and allowed,
            f"the ID block's author key {report.author_key_digest.hex()} is missing or not allowed",
        )
    if policy.platform_info is not None:
        extra = report.platform_info & ~policy.platform_info
        check(
            "platform_info",
            not extra,
            f"platform info 0x{report.platform_info:x} sets bits 0x{extra:x} the policy does not allow",
        )


def _tcb(claims: Claims, policy: Policy, check: Check) -> None:
    report, turin = claims.report, claims.product.turin_layout
    current, committed = claims.tcb(report.current_tcb), claims.tcb(report.committed_tcb)
    if policy.minimum_tcb is not None:
        low = [
            f"{label} {part}"
            for label, tcb in (("current", current), ("reported", claims.reported_tcb))
            for part in _below(tcb, policy.minimum_tcb, turin=turin)
        ]
        check("minimum_tcb", not low, f"TCB below the policy's minimum ({'; '.join(low)}): update the host firmware")
    if policy.minimum_launch_tcb is not None:
        low = _below(claims.tcb(report.launch_tcb), policy.minimum_launch_tcb, turin=turin)
        check(
            "minimum_launch_tcb",
            not low,
            f"launch TCB below the policy's minimum ({'; '.join(low)}): relaunch the guest on updated firmware",
        )
    if policy.permit_provisional_firmware:
        regressed = _below(current, committed.components(), turin=turin)
        check("provisional_firmware", not regressed, f"current TCB is below the committed one ({'; '.join(regressed)})")
    else:
        check(
            "provisional_firmware",
            current == committed and report.current_version == report.committed_version,
            f"the firmware runs provisionally (current {current}, {report.current_version}; committed {committed}, "
            f"{report.committed_version}): commit it on the host, or set permit_provisional_firmware",
        )


def _firmware(claims: Claims, policy: Policy, check: Check) -> None:
    report = claims.report
    versions = (report.current_version, report.committed_version)
    if policy.minimum_version is not None:
        major, minor = policy.minimum_version
        check(
            "minimum_version",
            all((v.major, v.minor) >= (major, minor) for v in versions),
            f"firmware {report.current_version} (committed {report.committed_version}) is older than "
            f"{major}.{minor}: update the host firmware",
        )
    if policy.minimum_build:
        check(
            "minimum_build",
            all(v.build >= policy.minimum_build for v in versions),
            f"firmware build {report.current_version.build} (committed {report.committed_version.build}) is below "
            f"{policy.minimum_build}: update the host firmware",
        )


def validate(claims: Claims, policy: Policy, *, checklist: Checklist | None = None) -> None:
    """Raise :class:`PolicyViolation` naming the first policy check the verified claims fail."""
    check = _checker(checklist if checklist is not None else Checklist())
    for part in (_guest, _identity, _tcb, _firmware):
        part(claims, policy, check)
