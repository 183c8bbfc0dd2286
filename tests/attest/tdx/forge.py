"""A private Intel-shaped PKI for tests: root, PCK CA, PCK leaf, TCB Signing, CRLs and signed PCS collateral.

Real quotes are re-signed under it (their header and body kept, a fresh attestation key, the real QE report with
its binding recomputed) so tests can exercise revocation, collateral shapes and CRL freshness that no public vector
covers. Verification is given this root explicitly, exactly as a private deployment would.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from cloister.attest.der import Certificate, parse_certificate
from cloister.attest.tdx.pck import SGX_EXTENSIONS, read_certificates
from cloister.attest.tdx.quote import parse_quote

START = datetime(2024, 1, 1, tzinfo=UTC)
END = datetime(2034, 1, 1, tzinfo=UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test")]
    )


def _raw_signature(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


@dataclass
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def parsed(self) -> Certificate:
        return parse_certificate(self.cert.public_bytes(serialization.Encoding.DER))


def issue(
    name: str,
    issuer: Issued | None,
    *,
    serial: int,
    ca: bool = True,
    sgx_extension: bytes | None = None,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name) if issuer is None else issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(START)
        .not_valid_after(END)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sgx_extension is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSIONS), sgx_extension), critical=False
        )
    signer = key if issuer is None else issuer.key
    return Issued(key, builder.sign(signer, hashes.SHA256()))


class TestPki:
    """Root → PCK Platform CA → PCK leaf (carrying a real PCK's SGX extensions), and Root → TCB Signing."""

    __test__ = False

    def __init__(self, sgx_extension: bytes | None) -> None:
        self.root = issue("Intel SGX Root CA", None, serial=1)
        self.ca = issue("Intel SGX PCK Platform CA", self.root, serial=2)
        self.pck = issue("Intel SGX PCK Certificate", self.ca, serial=3, ca=False, sgx_extension=sgx_extension)
        self.tcb = issue("Intel SGX TCB Signing", self.root, serial=4, ca=False)

    @property
    def roots(self) -> tuple[Certificate, ...]:
        return (self.root.parsed,)

    @property
    def pck_chain(self) -> bytes:
        return self.pck.pem + self.ca.pem + self.root.pem

    @property
    def signing_chain(self) -> bytes:
        return self.tcb.pem + self.root.pem

    def crl(self, issuer: Issued, revoked: tuple[int, ...] = (), *, next_update: datetime = END) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.cert.subject)
            .last_update(START)
            .next_update(next_update)
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(START).build()
            )
        return builder.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def signed_json(self, member: str, value: object, *, signer: Issued | None = None) -> bytes:
        """A PCS-style body: the member's compact JSON and a signature over exactly those bytes."""
        text = json.dumps(value, separators=(",", ":"))
        signature = _raw_signature((signer or self.tcb).key, text.encode())
        return f'{{"{member}":{text},"signature":"{signature.hex()}"}}'.encode()

    def requote(self, quote_bytes: bytes, *, signed: bytes | None = None, chain: bytes | None = None) -> bytes:
        """``quote_bytes`` re-signed under this PKI, optionally with a different header ‖ body or PEM chain."""
        quote = parse_quote(quote_bytes)
        signed = quote.signed if signed is None else signed
        attestation = ec.generate_private_key(ec.SECP256R1())
        point = attestation.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )[1:]
        report_data = hashlib.sha256(point + quote.qe_auth_data).digest() + bytes(32)
        qe_report = quote.qe_report.raw[:320] + report_data
        return assemble(
            signed,
            _raw_signature(attestation, signed),
            point,
            qe_report,
            _raw_signature(self.pck.key, qe_report),
            quote.qe_auth_data,
            self.pck_chain if chain is None else chain,
        )


def assemble(
    signed: bytes, signature: bytes, key: bytes, qe_report: bytes, qe_signature: bytes, auth: bytes, chain: bytes
) -> bytes:
    """Lay out a quote from its parts (sizes computed, nothing signed here)."""
    pck_data = struct.pack("<HI", 5, len(chain)) + chain
    qe_data = qe_report + qe_signature + struct.pack("<H", len(auth)) + auth + pck_data
    signature_data = signature + key + struct.pack("<HI", 6, len(qe_data)) + qe_data
    return signed + struct.pack("<I", len(signature_data)) + signature_data


def with_chain(quote_bytes: bytes, chain: bytes) -> bytes:
    """The same quote (all signatures intact) carrying a different PEM chain: the chain is not signed by the quote."""
    quote = parse_quote(quote_bytes)
    return assemble(
        quote.signed,
        quote.signature,
        quote.attestation_key,
        quote.qe_report.raw,
        quote.qe_report_signature,
        quote.qe_auth_data,
        chain,
    )


def pem_chain(quote_bytes: bytes) -> list[bytes]:
    """The quote's PEM chain split into one PEM block per certificate (leaf first)."""
    certs = read_certificates(parse_quote(quote_bytes).pck_chain, what="chain", check="pck_chain")
    return [x509.load_der_x509_certificate(cert.der).public_bytes(serialization.Encoding.PEM) for cert in certs]


def sgx_extension_of(quote_bytes: bytes) -> bytes:
    leaf = read_certificates(parse_quote(quote_bytes).pck_chain, what="chain", check="pck_chain")[0]
    extension = leaf.extension(SGX_EXTENSIONS)
    assert extension is not None
    return extension.value
