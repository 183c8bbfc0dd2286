"""GPU evidence as it travels: per GPU the SPDM report and its certificate chain, plus the RIMs to compare against.

Formats read: NVIDIA's evidence list (``[{arch, certificate: base64 PEM chain, evidence: base64 report, nonce}]``,
what nvtrust and the attestation SDK write, one entry per GPU), a single report as hex text or raw bytes with its
chain in a separate PEM file, and this module's own JSON (``to_json``), which embeds the same list and the RIMs.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloister.attest.der import Certificate, parse_certificate, parse_pem_certificates, read_tlv
from cloister.attest.nvgpu.spdm import GET_MEASUREMENTS, SPDM_VERSION, parse_hex_report
from cloister.crypto.canonical import loads
from cloister.errors import ConfigError, EvidenceMalformed, MalformedInput

PLATFORM = "nvgpu"
RIM_SUFFIXES = (".xml", ".swidtag")
"""File names read from a RIM folder (NVIDIA's RIM service serves SWID XML; nvtrust ships ``.swidtag`` files)."""


def _malformed(message: str) -> EvidenceMalformed:
    return EvidenceMalformed(f"GPU evidence: {message}", check="evidence")


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise _malformed(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(f"{what} is not base64") from None


def read_certificates(data: bytes) -> tuple[Certificate, ...]:
    """A chain given as a PEM bundle or as concatenated DER certificates, in file order (leaf first)."""
    if b"-----BEGIN CERTIFICATE-----" in data:
        certs = tuple(parse_pem_certificates(data))
    else:
        items, offset = [], 0
        while offset < len(data):
            item, offset = read_tlv(data, offset, what="certificate chain")
            items.append(parse_certificate(item.encoded))
        certs = tuple(items)
    if not certs:
        raise _malformed("the certificate chain is empty")
    return certs


@dataclass(frozen=True)
class GpuEvidence:
    """One GPU's report and chain, and what its collector declared (checked against the signed report)."""

    report: bytes
    certificates: tuple[Certificate, ...]
    """Leaf first, ending at (or just below) the NVIDIA Device Identity CA."""
    arch: str | None = None
    """``HOPPER`` or ``BLACKWELL`` as declared; must match the chip the chain names."""
    nonce: bytes | None = None
    """The nonce the collector says it sent; must equal the one in the signed request."""

    def to_json(self) -> dict[str, Any]:
        pem = "".join(
            "-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(cert.der).decode() + "-----END CERTIFICATE-----\n"
            for cert in self.certificates
        )
        return {
            "arch": self.arch,
            "certificate": base64.b64encode(pem.encode()).decode(),
            "evidence": base64.b64encode(self.report).decode(),
            "nonce": self.nonce.hex() if self.nonce is not None else None,
        }

    @classmethod
    def from_json(cls, item: object) -> GpuEvidence:
        """One entry of NVIDIA's evidence list; fields other than these four are unsigned and ignored."""
        if not isinstance(item, dict):
            raise _malformed("each GPU entry must be an object with 'evidence' and 'certificate'")
        arch, nonce = item.get("arch"), item.get("nonce")
        if arch is not None and not isinstance(arch, str):
            raise _malformed("'arch' must be a string")
        if nonce is not None and not isinstance(nonce, str):
            raise _malformed("'nonce' must be a hex string")
        try:
            nonce_bytes = bytes.fromhex(nonce) if nonce is not None else None
        except ValueError:
            raise _malformed("'nonce' is not hex") from None
        return cls(
            report=_b64(item.get("evidence"), "'evidence'"),
            certificates=read_certificates(_b64(item.get("certificate"), "'certificate'")),
            arch=arch.upper() if arch is not None else None,
            nonce=nonce_bytes,
        )


@dataclass(frozen=True)
class Evidence:
    """Everything needed to verify a machine's GPUs offline."""

    gpus: tuple[GpuEvidence, ...]
    rims: tuple[bytes, ...] = ()
    """RIM documents (SWID XML); each GPU needs its driver RIM and its VBIOS RIM among them, or none are given."""

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": PLATFORM,
            "gpus": [gpu.to_json() for gpu in self.gpus],
            "rims": [base64.b64encode(rim).decode() for rim in self.rims],
        }

    @classmethod
    def from_json(cls, data: object) -> Evidence:
        """This class's JSON (a dict), or NVIDIA's evidence list (a list)."""
        if isinstance(data, list):
            data = {"gpus": data}
        if not isinstance(data, dict):
            raise _malformed("expected an object with 'gpus', or NVIDIA's evidence list")
        if data.get("platform", PLATFORM) != PLATFORM:
            raise _malformed(f"this is {data.get('platform')!r} evidence, not {PLATFORM!r}")
        gpus, rims = data.get("gpus"), data.get("rims", [])
        if not isinstance(gpus, list) or not gpus:
            raise _malformed("'gpus' must be a non-empty list")
        if not isinstance(rims, list):
            raise _malformed("'rims' must be a list")
        return cls(tuple(GpuEvidence.from_json(gpu) for gpu in gpus), tuple(_b64(rim, "a RIM") for rim in rims))

    @classmethod
    def from_files(
        cls, path: Path, *, certs: Path | None = None, collateral: Path | None = None, rims: Path | None = None
    ) -> Evidence:
        """Load evidence for the CLI.

        ``path``: NVIDIA's evidence list or this class's JSON (then ``certs`` must be omitted), or one SPDM report
        as hex text or raw bytes (then ``certs`` is its chain, PEM or DER, leaf first). ``rims``: a RIM file, or a
        folder whose ``*.xml`` and ``*.swidtag`` files are all read. GPU evidence has no other collateral.
        """
        if collateral is not None:
            raise ConfigError("NVIDIA GPU evidence takes no collateral folder: put the RIMs in the --rims folder")
        data, rim_docs = _read(path), _read_rims(rims)
        if data.lstrip()[:1] in (b"[", b"{"):
            if certs is not None:
                raise ConfigError(f"{path} already holds the certificate chains: drop --certs")
            try:
                parsed = loads(data)
            except MalformedInput as exc:
                raise _malformed(f"{path} is not valid JSON: {exc.message}") from None
            evidence = cls.from_json(parsed)
            return cls(evidence.gpus, evidence.rims + rim_docs)
        if certs is None:
            raise ConfigError(f"{path} is a bare GPU report: pass its certificate chain with --certs")
        report = data if data[:2] == bytes([SPDM_VERSION, GET_MEASUREMENTS]) else parse_hex_report(data)
        return cls((GpuEvidence(report, read_certificates(_read(certs))),), rim_docs)


def _read_rims(rims: Path | None) -> tuple[bytes, ...]:
    if rims is None:
        return ()
    files = sorted(p for p in rims.iterdir() if p.suffix in RIM_SUFFIXES) if rims.is_dir() else [rims]
    if not files:
        raise ConfigError(f"{rims} holds no *.xml or *.swidtag RIM files")
    return tuple(_read(p) for p in files)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
