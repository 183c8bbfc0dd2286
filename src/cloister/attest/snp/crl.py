"""AMD's certificate revocation list: the ARK's list of revoked ASKs/ASVKs (KDS ``/vcek/v1/{product}/crl``).

Loaded with ``cryptography`` (CRLs have no serial-0 problem); the signature is checked with the ARK through
:func:`cloister.attest.pki.verify_signature`, which knows AMD's RSA-PSS parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from cloister.attest.der import Certificate, children, decode_algorithm, read_tlv
from cloister.attest.pki import public_key, verify_signature
from cloister.errors import CertificateInvalid, CollateralInvalid, EvidenceMalformed, VerificationFailed


def _load(data: bytes) -> tuple[x509.CertificateRevocationList, bytes]:
    """The CRL and its DER encoding."""
    try:
        crl = x509.load_pem_x509_crl(data) if b"-----BEGIN X509 CRL-----" in data else x509.load_der_x509_crl(data)
        return crl, crl.public_bytes(Encoding.DER)
    except ValueError as exc:
        raise EvidenceMalformed(
            f"AMD CRL does not parse ({exc}); download it again from AMD KDS", check="crl"
        ) from None


def check_revocation(data: bytes, ark: Certificate, chain: Sequence[Certificate], *, now: datetime) -> None:
    """The CRL is the ARK's, signed by it, current at ``now``, and lists none of the certificates in ``chain``."""
    crl, der = _load(data)
    if crl.issuer.public_bytes() != ark.subject.der:
        raise CollateralInvalid(f"the CRL was issued by {crl.issuer.rfc4514_string()}, not by {ark}", check="crl")
    top, _ = read_tlv(der, what="CRL")
    algorithm = decode_algorithm(children(top.value, what="CRL")[1])
    try:
        verify_signature(public_key(ark), algorithm.oid, algorithm.parameters, crl.signature, crl.tbs_certlist_bytes)
    except VerificationFailed:
        raise CollateralInvalid(f"the CRL's signature by {ark} does not verify", check="crl") from None
    next_update = crl.next_update_utc
    if now < crl.last_update_utc or (next_update is not None and now > next_update):
        raise CollateralInvalid(
            f"the CRL is valid from {crl.last_update_utc.isoformat()} to "
            f"{next_update.isoformat() if next_update else 'open end'}, not at {now.isoformat()}: download a "
            "current one from AMD KDS",
            check="crl",
        )
    for cert in chain:
        if cert.issuer.der == ark.subject.der and crl.get_revoked_certificate_by_serial_number(cert.serial):
            raise CertificateInvalid(f"{cert} (serial {cert.serial}) is revoked by {ark}", check="crl")
