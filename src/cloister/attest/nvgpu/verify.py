"""Verify NVIDIA GPU evidence: is each report authentic, fresh and from the GPU its chain names?

Per GPU: parse the SPDM report, verify the chain to the NVIDIA Device Identity CA, the leaf's signature over
request ‖ response, the FWID binding between leaf and report, and the nonce; then, when RIMs are given, verify the
driver and VBIOS RIMs (chain to the NVIDIA CoRIM root, XML signature) and compare every active golden measurement.
A mismatch is a claim, not an error: whether it is acceptable is the policy's call (:mod:`.policy`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from cloister.attest.checks import Checklist, resolve_now
from cloister.attest.der import Certificate
from cloister.attest.nvgpu.chain import ChainCache, anchored
from cloister.attest.nvgpu.claims import Claims, GpuClaims, RimUsed
from cloister.attest.nvgpu.device import NVIDIA_IANA_ENTERPRISE, Device, identify
from cloister.attest.nvgpu.evidence import Evidence, GpuEvidence
from cloister.attest.nvgpu.opaque import OpaqueData, parse_opaque
from cloister.attest.nvgpu.rim import Comparison, Rim, compare, read_rim, select, verify_rim
from cloister.attest.nvgpu.spdm import Report, parse_report
from cloister.attest.pki import public_key
from cloister.attest.roots import NVIDIA_DEVICE_IDENTITY_CA
from cloister.errors import AttestationError, CertificateInvalid, EvidenceMalformed, StaleEvidence, VerificationFailed

T = TypeVar("T")


@dataclass(frozen=True)
class VerifyOptions:
    now: datetime | None = None
    """The time certificates must be valid at (timezone-aware); None = now."""
    roots: tuple[Certificate, ...] | None = None
    """Device identity roots; None = the pinned NVIDIA Device Identity CA, found at the end of each chain."""
    rim_roots: tuple[Certificate, ...] | None = None
    """RIM signing roots; None = the pinned NVIDIA CoRIM signing root CA, found at the end of each RIM's chain."""
    expected_nonce: bytes | None = None
    """The 32-byte nonce the verifier asked the GPUs to sign; None = the caller checks freshness itself."""
    cache: ChainCache | None = None
    """Share one across calls to skip re-verifying chains already seen (validity is still checked each time)."""


def _attempt(checklist: Checklist, label: str, work: Callable[[], T]) -> T:
    """Run one step; an attestation error is recorded under its check, its message prefixed with ``label``."""
    try:
        return work()
    except AttestationError as exc:
        checklist.fail(type(exc)(f"{label}: {exc.message}", check=exc.check))


def _parse(data: bytes) -> tuple[Report, OpaqueData]:
    report = parse_report(data)
    return report, parse_opaque(report.response.opaque)


def _chain(gpu: GpuEvidence, options: VerifyOptions, now: datetime) -> Device:
    if len(gpu.certificates) < 2:
        raise CertificateInvalid(
            "the certificate chain must hold at least the signing certificate and the root CA; pass the whole "
            "chain the GPU returned",
            check="device_chain",
        )
    anchored(
        gpu.certificates,
        options.roots,
        NVIDIA_DEVICE_IDENTITY_CA,
        now=now,
        cache=options.cache,
        what="the GPU certificate chain",
        root_name="the NVIDIA Device Identity CA",
        check="device_chain",
    )
    return identify(gpu.certificates)


def _signature(report: Report, leaf: Certificate) -> None:
    key = public_key(leaf)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise EvidenceMalformed(f"{leaf} does not hold a P-384 key, which GPU reports need", check="report_signature")
    signature = report.response.signature
    r, s = int.from_bytes(signature[:48], "big"), int.from_bytes(signature[48:], "big")
    try:
        key.verify(encode_dss_signature(r, s), report.signed, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise VerificationFailed(
            f"the report's signature does not verify under {leaf}: the report was altered, or it comes from "
            "another GPU than the one this chain names",
            check="report_signature",
        ) from None


def _bindings(
    gpu: GpuEvidence, report: Report, opaque: OpaqueData, device: Device, options: VerifyOptions
) -> list[tuple[str, str]]:
    """FWID, declared architecture and nonces; returns the (check, detail) pairs that were compared."""
    done = []
    if opaque.fwid is not None:
        if opaque.fwid != device.fwid:
            raise VerificationFailed(
                f"the report's FWID {opaque.fwid.hex()} differs from the leaf certificate's {device.fwid.hex()}: "
                "the signing key was issued for other firmware",
                check="fwid",
            )
        done.append(("fwid", f"report and leaf certificate name firmware {device.fwid.hex()[:16]}…"))
    if gpu.arch is not None:
        if gpu.arch != device.arch:
            raise VerificationFailed(
                f"declared as {gpu.arch} but the chain names a {device.hwmodel} ({device.arch})", check="arch"
            )
        done.append(("arch", device.arch))
    nonce = report.request.nonce
    for source, expected in (("the collector declared", gpu.nonce), ("the verifier expects", options.expected_nonce)):
        if expected is None:
            continue
        if expected != nonce:
            raise StaleEvidence(
                f"the GPU signed nonce {nonce.hex()} but {source} {expected.hex()}: the report is a replay or from "
                "another request; collect fresh evidence with this nonce",
                check="nonce",
            )
        done.append(("nonce", f"{source} {nonce.hex()[:16]}…: signed"))
    return done


class _Rims:
    """The RIMs an evidence carries, parsed once; each verified at most once per verification."""

    def __init__(
        self, documents: tuple[bytes, ...], options: VerifyOptions, now: datetime, checklist: Checklist
    ) -> None:
        self.options, self.now, self.checklist = options, now, checklist
        self.parsed = [
            _attempt(checklist, f"RIM #{i}", partial(read_rim, d, options.cache)) for i, d in enumerate(documents)
        ]
        self.verified: dict[bytes, Rim] = {}

    def verify(self, rim: Rim, kind: str) -> Rim:
        if rim.xml not in self.verified:
            label = f"{kind} RIM"
            checked = _attempt(
                self.checklist,
                label,
                lambda: verify_rim(rim, roots=self.options.rim_roots, now=self.now, cache=self.options.cache),
            )
            self.checklist.passed("rim_chain", f"{label} {rim.version}: {' → '.join(str(c) for c in rim.certificates)}")
            self.checklist.passed("rim_signature", f"{label} {rim.version}: XML signature by {rim.certificates[0]}")
            self.verified[rim.xml] = checked
        return self.verified[rim.xml]

    def compare(
        self, label: str, report: Report, opaque: OpaqueData, device: Device
    ) -> tuple[tuple[RimUsed, ...], Comparison]:
        driver, vbios = _attempt(self.checklist, label, lambda: select(self.parsed, device.chip, opaque))
        self.checklist.passed("rim_select", f"{label}: driver RIM {driver.version}, VBIOS RIM {vbios.version}")
        driver, vbios = self.verify(driver, "driver"), self.verify(vbios, "VBIOS")
        comparison = _attempt(self.checklist, label, lambda: compare(report, opaque, driver, vbios))
        used = tuple(
            RimUsed(
                kind,
                rim.version,
                rim.tag_id,
                rim.manufacturer_id,
                str(rim.certificates[0]),
                rim.certificates[0].not_after,
            )
            for kind, rim in (("driver", driver), ("vbios", vbios))
        )
        return used, comparison


def _verify_gpu(
    index: int, gpu: GpuEvidence, options: VerifyOptions, now: datetime, rims: _Rims, checklist: Checklist
) -> GpuClaims:
    label = f"GPU {index}"
    report, opaque = _attempt(checklist, label, lambda: _parse(gpu.report))
    checklist.passed(
        "spdm",
        f"{label}: {len(report.response.blocks)} measurement blocks, driver {opaque.driver_version}, "
        f"VBIOS {opaque.vbios_version}",
    )
    device = _attempt(checklist, label, lambda: _chain(gpu, options, now))
    checklist.passed("device_chain", f"{label}: {' → '.join(str(cert) for cert in gpu.certificates)}")
    _attempt(checklist, label, lambda: _signature(report, device.leaf))
    checklist.passed("report_signature", f"{label}: signed by {device.leaf} (ueid {device.ueid})")
    for check, detail in _attempt(checklist, label, lambda: _bindings(gpu, report, opaque, device, options)):
        checklist.passed(check, f"{label}: {detail}")
    used, comparison = rims.compare(label, report, opaque, device) if rims.parsed else ((), None)
    return GpuClaims(
        arch=device.arch,
        hwmodel=device.hwmodel,
        chip=device.chip,
        ueid=device.ueid,
        oem_id=NVIDIA_IANA_ENTERPRISE,
        driver_version=opaque.driver_version,
        vbios_version=opaque.vbios_version,
        fwid=opaque.fwid,
        nonce=report.request.nonce,
        measurement_digest=hashlib.sha256(report.response.record).digest(),
        blocks=report.response.blocks,
        opaque=tuple(opaque.named().items()),
        rims=used,
        comparison=comparison,
    )


def _together(gpus: tuple[GpuClaims, ...], checklist: Checklist) -> None:
    """Several GPUs of one machine: one session (same nonce), and no device counted twice."""
    if len(gpus) < 2:
        return
    nonces = {gpu.nonce for gpu in gpus}
    if len(nonces) > 1:
        checklist.fail(
            StaleEvidence(
                f"the GPUs signed {len(nonces)} different nonces: some reports come from another request; "
                "collect every GPU's evidence with one nonce",
                check="nonce",
            )
        )
    seen: dict[str, int] = {}
    for index, gpu in enumerate(gpus):
        if gpu.ueid in seen:
            checklist.fail(
                VerificationFailed(
                    f"GPU {index} and GPU {seen[gpu.ueid]} are the same device (ueid {gpu.ueid}): one report was "
                    "submitted twice",
                    check="distinct_gpus",
                )
            )
        seen[gpu.ueid] = index
    checklist.passed("distinct_gpus", f"{len(gpus)} distinct GPUs answered nonce {gpus[0].nonce.hex()[:16]}…")


def verify(evidence: Evidence, options: VerifyOptions | None = None, *, checklist: Checklist | None = None) -> Claims:
    """Verify every GPU in ``evidence``; return their claims or raise the first failure, recorded in ``checklist``."""
    options = options if options is not None else VerifyOptions()
    checklist = checklist if checklist is not None else Checklist()
    now = resolve_now(options.now)
    if not evidence.gpus:
        checklist.fail(EvidenceMalformed("the evidence holds no GPU report", check="evidence"))
    rims = _Rims(evidence.rims, options, now, checklist)
    gpus = tuple(_verify_gpu(i, gpu, options, now, rims, checklist) for i, gpu in enumerate(evidence.gpus))
    _together(gpus, checklist)
    return Claims(gpus)
