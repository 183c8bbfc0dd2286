"""A private AMD-shaped PKI for tests the real vectors cannot cover: Turin reports, CRLs, wrapped hwIDs.

Same shapes as AMD's: an RSA-PSS (SHA-384) ARK and ASK named ``ARK-<product>`` / ``SEV-<product>``, an ECDSA P-384
VCEK with AMD's TCB, productName and hwID extensions, and reports signed r||s little-endian. Only the keys differ,
so these verify only when a test passes the synthetic ARK as an explicit root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from cloister.attest.der import Certificate, parse_certificate
from cloister.attest.snp.certs import OID_HWID, OID_PRODUCT_NAME, SPL_OIDS
from cloister.attest.snp.evidence import Evidence
from cloister.attest.snp.report import SIGNED_SIZE, FirmwareVersion, Tcb, encode_report

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
START = datetime(2024, 1, 1, tzinfo=UTC)
NOW = datetime(2025, 1, 1, tzinfo=UTC)
TURIN_CHIP = bytes.fromhex("1e550a8ee5cf9f4d")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _der_integer(value: int) -> bytes:
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(body)]) + body


@dataclass
class AmdPki:
    product: str = "Turin"
    ark_key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))
    ask_key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 2048))

    def _cert(
        self, subject: str, issuer: str, key: object, signer: rsa.RSAPrivateKey, extensions: list[x509.ExtensionType]
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(subject))
            .issuer_name(_name(issuer))
            .public_key(key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(START)
            .not_valid_after(START + timedelta(days=3650))
        )
        for extension in extensions:
            builder = builder.add_extension(extension, critical=False)
        return builder.sign(signer, hashes.SHA384(), rsa_padding=PSS)

    @cached_property
    def ark(self) -> Certificate:
        name = f"ARK-{self.product}"
        return _parse(self._cert(name, name, self.ark_key.public_key(), self.ark_key, []))

    @cached_property
    def ask(self) -> Certificate:
        ask = self._cert(f"SEV-{self.product}", f"ARK-{self.product}", self.ask_key.public_key(), self.ark_key, [])
        return _parse(ask)

    def vcek(self, key: ec.EllipticCurvePrivateKey, tcb: Tcb, *, hwid: bytes, product_name: str) -> Certificate:
        extensions: list[x509.ExtensionType] = [
            x509.UnrecognizedExtension(
                x509.ObjectIdentifier(OID_PRODUCT_NAME), b"\x16" + bytes([len(product_name)]) + product_name.encode()
            ),
            x509.UnrecognizedExtension(x509.ObjectIdentifier(OID_HWID), hwid),
        ]
        for name, level in tcb.components().items():
            extensions.append(x509.UnrecognizedExtension(x509.ObjectIdentifier(SPL_OIDS[name]), _der_integer(level)))
        return _parse(self._cert("SEV-VCEK", f"SEV-{self.product}", key.public_key(), self.ask_key, extensions))

    def crl(self, revoked: list[int], *, signer: rsa.RSAPrivateKey | None = None, days: int = 7) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(_name(f"ARK-{self.product}"))
            .last_update(NOW - timedelta(days=1))
            .next_update(NOW - timedelta(days=1) + timedelta(days=days))
        )
        for serial in revoked:
            entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(START).build()
            builder = builder.add_revoked_certificate(entry)
        return builder.sign(signer or self.ark_key, hashes.SHA384(), rsa_padding=PSS).public_bytes(Encoding.DER)


def _parse(cert: x509.Certificate) -> Certificate:
    return parse_certificate(cert.public_bytes(Encoding.DER))


TURIN_TCB = Tcb.encode({"fmc": 1, "bootloader": 2, "tee": 3, "snp": 4, "microcode": 5}, turin=True)


def turin_report(
    key: ec.EllipticCurvePrivateKey,
    *,
    tcb: Tcb = TURIN_TCB,
    chip_id: bytes = TURIN_CHIP.ljust(64, b"\0"),
    report_data: bytes = bytes(range(64)),
    signer_info: int = 0,
    version: int = 3,
) -> bytes:
    """A Turin report (v3+: with CPUID family 1Ah), signed by ``key``."""
    firmware = FirmwareVersion(1, 58, 7)
    fields: dict[str, int | bytes] = {
        "version": version,
        "policy": 0x30000,
        "signature_algo": 1,
        "signer_info": signer_info,
        "report_data": report_data,
        "measurement": b"\x42" * 48,
        "chip_id": chip_id,
        **{name: tcb.raw for name in ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb")},
    }
    cpuid = (0x1A, 0x02, 0x01) if version >= 3 else None
    body = encode_report(fields, cpuid=cpuid, current_version=firmware, committed_version=firmware)
    r, s = decode_dss_signature(key.sign(body[:SIGNED_SIZE], ec.ECDSA(hashes.SHA384())))
    return encode_report(fields, cpuid=cpuid, current_version=firmware, committed_version=firmware, signature=(r, s))


def evidence(
    pki: AmdPki,
    key: ec.EllipticCurvePrivateKey,
    report: bytes,
    *,
    tcb: Tcb = TURIN_TCB,
    hwid: bytes = TURIN_CHIP,
    product_name: str = "Turin",
) -> Evidence:
    """The report with a VCEK for ``key`` and the synthetic ASK/ARK."""
    vcek = pki.vcek(key, tcb, hwid=hwid, product_name=product_name)
    return Evidence(report=report, certificates=(vcek.der, pki.ask.der, pki.ark.der))
