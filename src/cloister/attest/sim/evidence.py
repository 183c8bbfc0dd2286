"""Sim evidence and its verification: report signature by a chip whose certificate chains to the devnet's root.

The simulator has no pinned vendor root: whoever verifies must say which root they trust (a devnet's, from its
genesis). So sim evidence is authentic only relative to that root; it proves nothing about hardware.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from cloister.attest.cache import ChainCache
from cloister.attest.checks import Checklist, resolve_now
from cloister.attest.der import Certificate, parse_certificate, parse_pem_certificates
from cloister.attest.pki import public_key, verify_chain, verify_signature
from cloister.attest.sim.identity import ChipIdentity
from cloister.attest.sim.report import CpuReport, Report, parse_report
from cloister.errors import CertificateInvalid, ConfigError, EvidenceMalformed, VerificationFailed

PLATFORM: Final = "sim"
ECDSA_SHA384: Final = "1.2.840.10045.4.3.3"
_HALF: Final = 48


@dataclass(frozen=True)
class Evidence:
    """A sim report (CPU or GPU) and the DER certificate of the chip that signed it."""

    report: bytes
    chip_certificate: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "report": base64.b64encode(self.report).decode(),
            "chip_certificate": base64.b64encode(self.chip_certificate).decode(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evidence:
        if not isinstance(data, dict) or set(data) != {"report", "chip_certificate"}:
            raise EvidenceMalformed(
                "sim evidence JSON is an object with exactly 'report' and 'chip_certificate' (base64)",
                check="evidence",
            )
        try:
            return cls(*(base64.b64decode(data[name], validate=True) for name in ("report", "chip_certificate")))
        except (binascii.Error, TypeError, ValueError):
            raise EvidenceMalformed("sim evidence fields must be standard base64 strings", check="evidence") from None

    @classmethod
    def from_files(
        cls,
        path: Path,
        *,
        certs: Path | None = None,
        collateral: Path | None = None,
        rims: Path | None = None,
    ) -> Evidence:
        """A binary report at ``path`` and the chip certificate (PEM or DER; a bundle's first certificate)."""
        if collateral is not None or rims is not None:
            raise ConfigError("sim evidence has no collateral or RIMs; drop --collateral and --rims")
        if certs is None:
            raise ConfigError("sim evidence needs the chip certificate: pass --certs FILE (PEM or DER)")
        try:
            report, cert_bytes = path.read_bytes(), certs.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read sim evidence: {exc}") from None
        if b"-----BEGIN CERTIFICATE-----" in cert_bytes:
            chain = parse_pem_certificates(cert_bytes)
            return cls(report, chain[0].der)
        return cls(report, parse_certificate(cert_bytes).der)


@dataclass(frozen=True)
class VerifyOptions:
    now: datetime | None = None
    """When to check certificate validity (default: the current time)."""
    roots: tuple[Certificate, ...] | None = None
    """The sim vendor roots to trust. There is no default: without roots, sim evidence is refused."""
    cache: ChainCache | None = None
    """Skip re-verifying the signatures of a chip chain seen before (validity is still checked at ``now``)."""


@dataclass(frozen=True)
class Claims:
    """What an authentic sim report states, and which chip (certified by the trusted root) stated it."""

    report: Report
    root: str
    """Subject of the trusted root the chip chained to."""

    @property
    def platform(self) -> str:
        return PLATFORM

    @property
    def kind(self) -> str:
        return self.report.KIND

    @property
    def report_data(self) -> bytes:
        """CPU: the 64 bytes of report data; GPU: the 32-byte nonce."""
        return self.report.report_data

    @property
    def measurement(self) -> str:
        """CPU: the launch measurement; GPU: SHA-384 over the measurement blocks (both 48 bytes, as hex)."""
        return self.report.measurement.hex()

    @property
    def debug(self) -> bool:
        return self.report.debug

    @property
    def tcb_version(self) -> int:
        return self.report.tcb_version

    def to_json(self) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "platform": PLATFORM,
            "kind": self.kind,
            "chip_id": self.report.chip_id,
            "root": self.root,
            "tcb_version": self.tcb_version,
            "debug": self.debug,
            "measurement": self.measurement,
            "report_data": self.report_data.hex(),
        }
        if isinstance(self.report, CpuReport):
            claims["smt"] = self.report.smt
        else:
            claims["driver_version"] = self.report.driver_version
            claims["vbios_version"] = self.report.vbios_version
            claims["blocks"] = [{"index": b.index, "value": b.value.hex()} for b in self.report.blocks]
        return claims


def _check_identity(report: Report, identity: ChipIdentity) -> None:
    if identity.kind != report.KIND:
        raise VerificationFailed(
            f"a {report.KIND} report was signed by a {identity.kind} chip key; a chip signs only its own kind",
            check="chip_identity",
        )
    if identity.chip_id != report.chip_id:
        raise VerificationFailed(
            f"the report names chip {report.chip_id!r} but was signed by chip {identity.chip_id!r}",
            check="chip_identity",
        )
    if identity.tcb_version != report.tcb_version:
        raise VerificationFailed(
            f"the report claims TCB version {report.tcb_version} but the chip is certified at "
            f"{identity.tcb_version}; the report's TCB must be the one the vendor certified",
            check="chip_tcb",
        )


def _check_signature(chip: Certificate, signed: bytes, signature: bytes) -> None:
    key = public_key(chip)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise CertificateInvalid(f"{chip}: a sim chip key is ECDSA P-384", check="chip_key")
    r = int.from_bytes(signature[:_HALF], "big")
    s = int.from_bytes(signature[_HALF:], "big")
    try:
        verify_signature(key, ECDSA_SHA384, b"", encode_dss_signature(r, s), signed)
    except VerificationFailed:
        raise VerificationFailed(
            f"the report signature does not verify under {chip}: the report was altered or signed by another key",
            check="report_signature",
        ) from None


def verify(evidence: Evidence, options: VerifyOptions | None = None, *, checklist: Checklist | None = None) -> Claims:
    """Check the report's format, the chip chain to a trusted root at ``now``, the chip identity, the signature."""
    options = options or VerifyOptions()
    checklist = checklist if checklist is not None else Checklist()
    now = resolve_now(options.now)
    with checklist.run("report"):
        parsed = parse_report(evidence.report)
    with checklist.run("chip_certificate"):
        chip = parse_certificate(evidence.chip_certificate)
    if not options.roots:
        checklist.fail(
            CertificateInvalid(
                "sim evidence has no pinned vendor root: pass the devnet's sim root certificate explicitly "
                "(its genesis lists it; `SimVendor.load(folder).root_pem` prints it)",
                check="roots",
            )
        )
    with checklist.run("chip_chain", f"{chip} at {now.isoformat()}"):
        root = (options.cache.verify if options.cache else verify_chain)([chip], options.roots, now=now)
    with checklist.run("chip_identity", f"{parsed.report.KIND} chip {parsed.report.chip_id}"):
        _check_identity(parsed.report, ChipIdentity.of(chip))
    with checklist.run("report_signature"):
        _check_signature(chip, parsed.signed, parsed.signature)
    return Claims(parsed.report, str(root))
