"""Signature and certificate-chain verification over :mod:`cloister.attest.der` certificates.

Every vendor chain (AMD ARK→ASK→VCEK, Intel Root→Platform CA→PCK, NVIDIA device and RIM chains, the simulator's
root) goes through :func:`verify_chain`, which takes the time to check at and the roots to trust as arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from cloister.attest.der import (
    INTEGER,
    SEQUENCE,
    Certificate,
    children,
    children_exactly,
    decode_integer,
    decode_oid,
    read_tlv,
)
from cloister.errors import CertificateInvalid, EvidenceMalformed, VerificationFailed

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "2.16.840.1.101.3.4.2.1": hashes.SHA256,
    "2.16.840.1.101.3.4.2.2": hashes.SHA384,
    "2.16.840.1.101.3.4.2.3": hashes.SHA512,
}
_ECDSA: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "1.2.840.10045.4.3.2": hashes.SHA256,
    "1.2.840.10045.4.3.3": hashes.SHA384,
    "1.2.840.10045.4.3.4": hashes.SHA512,
}
_RSA_PKCS1: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "1.2.840.113549.1.1.11": hashes.SHA256,
    "1.2.840.113549.1.1.12": hashes.SHA384,
    "1.2.840.113549.1.1.13": hashes.SHA512,
}
_RSA_PSS = "1.2.840.113549.1.1.10"
_ED25519 = "1.3.101.112"


def public_key(cert: Certificate) -> PublicKey:
    try:
        key = load_der_public_key(cert.public_key_info)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise EvidenceMalformed(f"{cert}: unusable public key ({exc})", check="public_key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise EvidenceMalformed(f"{cert}: unsupported public key type", check="public_key")
    return key


def _pss_parameters(der: bytes) -> tuple[hashes.HashAlgorithm, int]:
    """Hash and salt length of RSASSA-PSS-params; defaults per RFC 4055 are SHA-1/20, which no vendor uses."""
    if not der:
        raise EvidenceMalformed("RSA-PSS signature without parameters", check="signature_algorithm")
    top, _ = read_tlv(der)
    hash_cls: type[hashes.HashAlgorithm] | None = None
    salt = 20
    for item in children(top.value) if top.tag == SEQUENCE else []:
        (inner,) = children_exactly(item.value, 1, what="RSA-PSS parameters")
        if item.tag == 0xA0:
            hash_items = children(inner.value) if inner.tag == SEQUENCE else []
            hash_oid = decode_oid(hash_items[0].value if hash_items else b"")
            hash_cls = _HASHES.get(hash_oid)
        elif item.tag == 0xA2 and inner.tag == INTEGER:
            salt = decode_integer(inner.value)
    if hash_cls is None:
        raise EvidenceMalformed("RSA-PSS with an unsupported hash", check="signature_algorithm")
    return hash_cls(), salt


def verify_signature(key: PublicKey, algorithm_oid: str, parameters: bytes, signature: bytes, data: bytes) -> None:
    """Verify ``signature`` over ``data`` under an X.509 signature algorithm; raise :class:`VerificationFailed`."""
    try:
        if algorithm_oid in _ECDSA and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(_ECDSA[algorithm_oid]()))
        elif algorithm_oid in _RSA_PKCS1 and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), _RSA_PKCS1[algorithm_oid]())
        elif algorithm_oid == _RSA_PSS and isinstance(key, rsa.RSAPublicKey):
            digest, salt = _pss_parameters(parameters)
            key.verify(signature, data, padding.PSS(padding.MGF1(digest), salt), digest)
        elif algorithm_oid == _ED25519 and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            raise EvidenceMalformed(
                f"signature algorithm {algorithm_oid} does not fit a {type(key).__name__}", check="signature_algorithm"
            )
    except InvalidSignature:
        raise VerificationFailed("signature does not verify", check="signature") from None


def verify_issued_by(cert: Certificate, issuer: Certificate) -> None:
    """``cert`` names ``issuer`` as its issuer and carries its signature."""
    if cert.issuer.der != issuer.subject.der:
        raise CertificateInvalid(f"{cert} was not issued by {issuer} (issuer names differ)", check="chain")
    try:
        verify_signature(
            public_key(issuer),
            cert.signature_algorithm.oid,
            cert.signature_algorithm.parameters,
            cert.signature,
            cert.tbs,
        )
    except VerificationFailed:
        raise CertificateInvalid(f"{cert}: signature by {issuer} does not verify", check="chain") from None


def check_validity(cert: Certificate, now: datetime) -> None:
    if now < cert.not_before:
        raise CertificateInvalid(
            f"{cert} is not valid until {cert.not_before.isoformat()} (checked at {now.isoformat()})",
            check="validity",
        )
    if now > cert.not_after:
        raise CertificateInvalid(
            f"{cert} expired at {cert.not_after.isoformat()} (checked at {now.isoformat()})", check="validity"
        )


def verify_chain(chain: Sequence[Certificate], roots: Sequence[Certificate], *, now: datetime) -> Certificate:
    """Check ``chain`` (leaf first) link by link up to one of ``roots``; return the root it ends at.

    The chain may or may not include the root itself; a root is trusted only if it is byte-identical to one given.
    Every certificate, the root included, must be valid at ``now``.
    """
    if not chain:
        raise CertificateInvalid("empty certificate chain", check="chain")
    if not roots:
        raise CertificateInvalid("no trusted roots given", check="roots")
    root_ders = {root.der: root for root in roots}
    links = list(chain)
    anchor: Certificate | None
    if links[-1].der in root_ders and len(links) > 1:
        anchor = root_ders[links.pop().der]
    else:
        anchor = next((root for root in roots if root.subject.der == links[-1].issuer.der), None)
        if anchor is None and links[-1].der in root_ders:
            anchor = root_ders[links[-1].der]
            links.pop()
    if anchor is None:
        raise CertificateInvalid(
            f"{links[-1]} does not chain to a trusted root (issuer {links[-1].issuer})", check="roots"
        )
    for cert in [*links, anchor]:
        check_validity(cert, now)
    for cert, issuer in zip(links, [*links[1:], anchor], strict=True):
        verify_issued_by(cert, issuer)
    verify_issued_by(anchor, anchor)
    return anchor
