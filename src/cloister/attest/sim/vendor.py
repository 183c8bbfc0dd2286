"""The simulated TEE vendor: a root CA per devnet, and chips whose keys sign CPU and GPU reports.

``SimVendor.create(folder)`` makes the root (ECDSA P-384, self-signed) and keeps it in ``folder`` as ``root.pem``
and ``root.key`` (mode 0600); a devnet's genesis lists ``root_pem`` so its ledger trusts exactly that root.
Each simulated machine gets a chip from :meth:`SimVendor.issue_chip`; the chip's certificate carries its kind,
id and TCB version (:mod:`cloister.attest.sim.identity`).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from cloister.attest.checks import resolve_now
from cloister.attest.der import Certificate, parse_certificate, parse_pem_certificates
from cloister.attest.sim.evidence import Evidence
from cloister.attest.sim.identity import CHIP_IDENTITY_OID, KINDS, ChipIdentity
from cloister.attest.sim.report import CpuReport, GpuReport, MeasurementBlock, check_chip
from cloister.errors import ConfigError, EvidenceMalformed
from cloister.keystore import write_private_file

ROOT_CERT_FILE: Final = "root.pem"
ROOT_KEY_FILE: Final = "root.key"
ROOT_LIFETIME: Final = timedelta(days=20 * 365)
CHIP_LIFETIME: Final = timedelta(days=10 * 365)
_BACKDATE: Final = timedelta(hours=1)
"""Certificates start an hour early, so a verifier whose clock is slightly behind still accepts them."""


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Cloister simulated TEE"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _sign_raw(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA384())))
    return r.to_bytes(48, "big") + s.to_bytes(48, "big")


@dataclass(frozen=True)
class SimChip:
    """One simulated chip: its identity, its private key, and its certificate signed by the vendor root."""

    identity: ChipIdentity
    key: ec.EllipticCurvePrivateKey
    certificate: Certificate

    def _signed(self, body: bytes) -> bytes:
        return body + _sign_raw(self.key, body)

    def cpu_report(
        self,
        report_data: bytes,
        *,
        measurement: bytes,
        debug: bool = False,
        smt: bool = True,
        tcb_version: int | None = None,
    ) -> bytes:
        """A signed CPU report; ``tcb_version`` defaults to the certified one (another value simulates a lie)."""
        tcb = self.identity.tcb_version if tcb_version is None else tcb_version
        return self._signed(CpuReport(tcb, debug, smt, self.identity.chip_id, measurement, report_data).body())

    def gpu_report(
        self,
        nonce: bytes,
        *,
        measurements: Sequence[bytes],
        driver_version: str = "sim-1.0",
        vbios_version: str = "sim-1.0",
        debug: bool = False,
        tcb_version: int | None = None,
    ) -> bytes:
        """A signed GPU report; ``measurements[i]`` becomes measurement block ``i + 1``."""
        tcb = self.identity.tcb_version if tcb_version is None else tcb_version
        blocks = tuple(MeasurementBlock(i + 1, value) for i, value in enumerate(measurements))
        report = GpuReport(tcb, debug, self.identity.chip_id, nonce, driver_version, vbios_version, blocks)
        return self._signed(report.body())

    def evidence(self, report: bytes) -> Evidence:
        return Evidence(report, self.certificate.der)


class SimVendor:
    """A root CA standing in for AMD, Intel or NVIDIA on a devnet; anyone holding its key can mint chips."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: Certificate) -> None:
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.subject = _name(certificate.subject.common_name)
        if spki != certificate.public_key_info or self.subject.public_bytes() != certificate.subject.der:
            raise ConfigError("the sim vendor key does not match its root certificate; recreate the vendor folder")
        self.key = key
        self.certificate = certificate

    @property
    def root_pem(self) -> str:
        """The root certificate as PEM: what a genesis or ``cloister verify --certs`` needs to trust this vendor."""
        body = base64.b64encode(self.certificate.der).decode()
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        return "\n".join(["-----BEGIN CERTIFICATE-----", *lines, "-----END CERTIFICATE-----", ""])

    @classmethod
    def generate(
        cls, *, name: str = "Cloister sim root", now: datetime | None = None, lifetime: timedelta = ROOT_LIFETIME
    ) -> SimVendor:
        """A new vendor in memory (tests); :meth:`create` also writes it to a folder."""
        start = resolve_now(now) - _BACKDATE
        key = ec.generate_private_key(ec.SECP384R1())
        subject = _name(name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA384())
        )
        return cls(key, parse_certificate(cert.public_bytes(serialization.Encoding.DER)))

    @classmethod
    def create(
        cls,
        folder: Path,
        *,
        name: str = "Cloister sim root",
        now: datetime | None = None,
        lifetime: timedelta = ROOT_LIFETIME,
    ) -> SimVendor:
        """Make a new vendor and keep it in ``folder`` (``root.pem``, ``root.key`` 0600); refuses to overwrite."""
        if (folder / ROOT_KEY_FILE).exists():
            raise ConfigError(f"{folder} already holds a sim vendor; load it with SimVendor.load({str(folder)!r})")
        vendor = cls.generate(name=name, now=now, lifetime=lifetime)
        key_pem = vendor.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_private_file(folder / ROOT_KEY_FILE, key_pem)
        write_private_file(folder / ROOT_CERT_FILE, vendor.root_pem.encode())
        return vendor

    @classmethod
    def load(cls, folder: Path) -> SimVendor:
        try:
            key_pem = (folder / ROOT_KEY_FILE).read_bytes()
            cert_pem = (folder / ROOT_CERT_FILE).read_bytes()
        except OSError as exc:
            raise ConfigError(f"no sim vendor in {folder} ({exc}); create one with SimVendor.create") from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
            certs = parse_pem_certificates(cert_pem)
        except (ValueError, TypeError, UnsupportedAlgorithm, EvidenceMalformed) as exc:
            raise ConfigError(f"the sim vendor in {folder} is unreadable ({exc}); recreate it") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or len(certs) != 1:
            raise ConfigError(f"{folder} does not hold one sim root certificate and its EC key; recreate it")
        return cls(key, certs[0])

    def issue_chip(
        self,
        chip_id: str,
        *,
        kind: str = "cpu",
        tcb_version: int = 1,
        now: datetime | None = None,
        lifetime: timedelta = CHIP_LIFETIME,
    ) -> SimChip:
        """A new chip key certified by this root, with its kind, id and TCB version in the certificate."""
        if kind not in KINDS:
            raise ConfigError(f"a sim chip is one of {', '.join(KINDS)}, not {kind!r}")
        check_chip(chip_id, tcb_version)
        identity = ChipIdentity(kind, chip_id, tcb_version)
        start = resolve_now(now) - _BACKDATE
        key = ec.generate_private_key(ec.SECP384R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"Cloister sim {kind} {chip_id}"))
            .issuer_name(self.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier(CHIP_IDENTITY_OID), identity.to_der()),
                critical=False,
            )
            .sign(self.key, hashes.SHA384())
        )
        return SimChip(identity, key, parse_certificate(cert.public_bytes(serialization.Encoding.DER)))
