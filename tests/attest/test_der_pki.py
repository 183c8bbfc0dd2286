"""The strict DER certificate reader and chain verification, over certificates these tests issue themselves."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from cloister.attest.der import (
    SEQUENCE,
    children,
    parse_certificate,
    parse_pem_certificates,
    read_tlv,
)
from cloister.attest.pki import public_key, verify_chain, verify_issued_by, verify_signature
from cloister.errors import CertificateInvalid, EvidenceMalformed, VerificationFailed

START = datetime(2030, 1, 1, tzinfo=UTC)
NOW = START + timedelta(days=100)
FUZZ = settings(max_examples=200, deadline=None)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(
    subject: str,
    key: PrivateKey,
    issuer: tuple[str, PrivateKey] | None = None,
    *,
    days: tuple[int, int] = (0, 365),
    serial: int = 1,
    sign: Callable[[x509.CertificateBuilder, PrivateKey], x509.Certificate] | None = None,
) -> bytes:
    """DER of a certificate for ``key``, self-signed unless ``issuer`` (name, key) is given."""
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(START + timedelta(days=days[0]))
        .not_valid_after(START + timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if sign is not None:
        cert = sign(builder, issuer_key)
    else:
        algorithm = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA384()
        cert = builder.sign(issuer_key, algorithm)
    return cert.public_bytes(serialization.Encoding.DER)


def p384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


ROOT_KEY, INTER_KEY, LEAF_KEY = p384(), p384(), p384()
ROOT = parse_certificate(issue("Root", ROOT_KEY, days=(-10, 3650)))
INTER = parse_certificate(issue("Intermediate", INTER_KEY, ("Root", ROOT_KEY), days=(-5, 1000)))
LEAF = parse_certificate(issue("Leaf", LEAF_KEY, ("Intermediate", INTER_KEY)))


def _pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN CERTIFICATE-----\n{body}-----END CERTIFICATE-----\n"


# --- the reader -----------------------------------------------------------------------------------------------


def test_certificates_parse_into_their_fields() -> None:
    assert (str(LEAF), str(LEAF.issuer), LEAF.serial) == ("Leaf", "Intermediate", 1)
    assert LEAF.not_before == START and LEAF.not_after == START + timedelta(days=365)
    assert LEAF.signature_algorithm.oid == "1.2.840.10045.4.3.3"
    assert LEAF.extension("2.5.29.19") is not None and LEAF.extension("2.5.29.15") is None
    assert isinstance(public_key(LEAF), ec.EllipticCurvePublicKey)


def test_serial_zero_and_far_future_dates_are_read() -> None:
    """What vendors issue (AMD's serial 0) and what RFC 5280 needs after 2049 (GeneralizedTime)."""
    key = p384()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("Zero"))
        .issuer_name(_name("Zero"))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime(1999, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2099, 1, 1, tzinfo=UTC))
    )
    der = builder.sign(key, hashes.SHA384()).public_bytes(serialization.Encoding.DER)
    cert = parse_certificate(_replace_serial(der, b"\x02\x01\x00"))
    assert cert.serial == 0
    assert cert.not_before.year == 1999 and cert.not_after.year == 2099


def _tlv(tag: int, content: bytes) -> bytes:
    if len(content) < 0x80:
        return bytes([tag, len(content)]) + content
    size = len(content).to_bytes((len(content).bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _rebuild(der: bytes, index: int, field: bytes) -> bytes:
    """``der`` with tbsCertificate field ``index`` replaced by ``field`` (the signature no longer matches)."""
    top, _ = read_tlv(der)
    tbs, algorithm, signature = children(top.value)
    fields = [item.encoded for item in children(tbs.value)]
    fields[index] = field
    return _tlv(SEQUENCE, _tlv(SEQUENCE, b"".join(fields)) + algorithm.encoded + signature.encoded)


def _replace_serial(der: bytes, serial: bytes) -> bytes:
    return _rebuild(der, 1, serial)  # field 0 is the [0] version


@pytest.mark.parametrize(
    ("index", "field", "what"),
    [
        (3, _tlv(SEQUENCE, _tlv(0x31, _tlv(SEQUENCE, b"\x06\x03\x55\x04\x03"))), "name with a one-part attribute"),
        (
            3,
            _tlv(SEQUENCE, _tlv(0x31, _tlv(SEQUENCE, b"\x06\x03\x55\x04\x03\x0c\x01a\x0c\x01b"))),
            "three-part attribute",
        ),
        (3, _tlv(SEQUENCE, _tlv(SEQUENCE, b"")), "RDN that is not a SET"),
        (4, _tlv(SEQUENCE, _tlv(0x17, b"not a time") + _tlv(0x17, b"300101000000Z")), "bad time"),
        (4, _tlv(SEQUENCE, _tlv(0x17, b"300101000000Z")), "validity with one time"),
        (4, _tlv(SEQUENCE, _tlv(0x02, b"\x01") * 2), "validity of integers"),
        (1, _tlv(0x02, b""), "empty serial"),
        (2, _tlv(SEQUENCE, b""), "empty algorithm"),
        (2, _tlv(SEQUENCE, _tlv(0x06, b"\x2a\x86")), "truncated OID"),
        (2, _tlv(SEQUENCE, _tlv(0x06, b"\x2a\x86\x48\xce\x3d\x04\x03\x02")), "the two algorithms differ"),
        (7, _tlv(0xA3, b""), "empty extensions wrapper"),
        (7, _tlv(0xA3, _tlv(SEQUENCE, b"") * 2), "two extension lists"),
        (7, _tlv(0xA3, _tlv(SEQUENCE, _tlv(SEQUENCE, b"\x06\x03\x55\x1d\x13"))), "extension without a value"),
        (
            7,
            _tlv(0xA3, _tlv(SEQUENCE, _tlv(SEQUENCE, b"\x06\x03\x55\x1d\x13\x01\x01\xff\x04\x00\x04\x00"))),
            "extension with four parts",
        ),
    ],
)
def test_malformed_fields_raise_evidence_malformed(index: int, field: bytes, what: str) -> None:
    with pytest.raises(EvidenceMalformed):
        parse_certificate(_rebuild(LEAF.der, index, field))


@pytest.mark.parametrize(
    "der",
    [
        b"",
        b"\x30",
        b"\x30\x80",  # indefinite length is not DER
        b"\x30\x81\x05abcde",  # non-minimal length
        b"\x30\x82\x00\x05abcde",
        b"\x1f\x01\x00",  # multi-byte tag
        b"\x30\x85\x01\x00\x00\x00\x00",  # a length that does not fit
        LEAF.der + b"\x00",
        LEAF.der[:-1],
        b"\x31" + LEAF.der[1:],
    ],
)
def test_framing_errors_raise_evidence_malformed(der: bytes) -> None:
    with pytest.raises(EvidenceMalformed):
        parse_certificate(der)


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_evidence_malformed(data: bytes) -> None:
    for candidate in (data, b"\x30" + bytes([len(data) & 0x7F]) + data):
        with contextlib.suppress(EvidenceMalformed):
            parse_certificate(candidate)


@FUZZ
@given(st.data())
def test_mutated_certificates_raise_only_evidence_malformed(data: st.DataObject) -> None:
    der = bytearray(LEAF.der)
    for _ in range(data.draw(st.integers(1, 4))):
        der[data.draw(st.integers(0, len(der) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(der)))
    for candidate in (bytes(der), bytes(der[:cut]), LEAF.der[:cut]):
        with contextlib.suppress(EvidenceMalformed):
            parse_certificate(candidate)


@FUZZ
@given(st.text(max_size=300), st.binary(max_size=200))
def test_random_pem_raises_only_evidence_malformed(text: str, body: bytes) -> None:
    wrapped = "-----BEGIN CERTIFICATE-----\n" + base64.b64encode(body).decode() + "\n-----END CERTIFICATE-----"
    for candidate in (text, "-----BEGIN CERTIFICATE-----" + text, wrapped, wrapped.encode() + body):
        with contextlib.suppress(EvidenceMalformed):
            parse_pem_certificates(candidate)


def test_pem_bundles() -> None:
    bundle = "leading text\n" + _pem(LEAF.der) + "between\n" + _pem(INTER.der)
    assert parse_pem_certificates(bundle) == [LEAF, INTER]
    assert parse_pem_certificates(bundle.encode()) == [LEAF, INTER]
    assert parse_pem_certificates("no certificates here") == []
    with pytest.raises(EvidenceMalformed, match="no END line") as caught:
        parse_pem_certificates(_pem(LEAF.der).replace("-----END CERTIFICATE-----", ""))
    assert caught.value.check == "pem"
    with pytest.raises(EvidenceMalformed, match="not base64"):
        parse_pem_certificates("-----BEGIN CERTIFICATE-----\n***\n-----END CERTIFICATE-----")


# --- chains ---------------------------------------------------------------------------------------------------


def test_a_chain_verifies_to_its_root_with_or_without_the_root_in_it() -> None:
    assert verify_chain([LEAF, INTER], [ROOT], now=NOW) == ROOT
    assert verify_chain([LEAF, INTER, ROOT], [ROOT], now=NOW) == ROOT
    assert verify_chain([ROOT], [ROOT], now=NOW) == ROOT


def _invalid(chain: list[object], roots: list[object], check: str, now: datetime = NOW) -> str:
    with pytest.raises(CertificateInvalid) as caught:
        verify_chain(chain, roots, now=now)  # type: ignore[arg-type]
    assert caught.value.check == check, caught.value.message
    return caught.value.message


@pytest.mark.parametrize(
    ("now", "message"),
    [
        (START - timedelta(days=1), "Leaf is not valid until 2030-01-01"),
        (START + timedelta(days=366), "Leaf expired at 2031-01-01"),
    ],
)
def test_validity_is_checked_at_the_chosen_time(now: datetime, message: str) -> None:
    assert message in _invalid([LEAF, INTER], [ROOT], "validity", now)


def test_every_link_is_checked_for_validity() -> None:
    long_leaf = parse_certificate(issue("Leaf", LEAF_KEY, ("Intermediate", INTER_KEY), days=(0, 3000)))
    assert verify_chain([long_leaf, INTER], [ROOT], now=START + timedelta(days=999)) == ROOT
    assert "Intermediate expired" in _invalid([long_leaf, INTER], [ROOT], "validity", START + timedelta(days=1001))


def test_an_expired_root_fails_too() -> None:
    old_key = p384()
    old_root = parse_certificate(issue("Old root", old_key, days=(-100, -1)))
    leaf = parse_certificate(issue("Leaf", p384(), ("Old root", old_key)))
    assert "Old root expired" in _invalid([leaf], [old_root], "validity")


def test_wrong_roots_and_missing_links() -> None:
    other_key = p384()
    other_root = parse_certificate(issue("Other root", other_key))
    assert "does not chain to a trusted root" in _invalid([LEAF, INTER], [other_root], "roots")
    impostor = parse_certificate(issue("Root", other_key))  # the right name, the wrong key
    _invalid([LEAF, INTER], [impostor], "chain")
    assert "issuer Intermediate" in _invalid([LEAF], [ROOT], "roots")  # the intermediate is missing
    assert "issuer names differ" in _invalid([LEAF, ROOT], [ROOT], "chain")  # the intermediate is skipped
    _invalid([INTER, LEAF], [ROOT], "roots")  # wrong order
    _invalid([], [ROOT], "chain")
    _invalid([LEAF, INTER], [], "roots")


def test_a_trusted_root_that_is_not_self_signed_is_refused() -> None:
    """A 'root' someone else issued is only as trustworthy as its issuer: it must sign itself."""
    _invalid([LEAF], [INTER], "chain")
    cross_key = p384()
    cross = parse_certificate(issue("Cross", cross_key, ("Cross", ROOT_KEY)))  # issuer = subject, other key
    leaf = parse_certificate(issue("Leaf", p384(), ("Cross", cross_key)))
    _invalid([leaf], [cross], "chain")


def test_a_tampered_certificate_breaks_its_link() -> None:
    tampered = parse_certificate(_rebuild(LEAF.der, 1, b"\x02\x01\x09"))
    assert "signature by Intermediate does not verify" in _invalid([tampered, INTER], [ROOT], "chain")


@pytest.mark.parametrize(
    "algorithm",
    ["rsa-pkcs1-sha256", "rsa-pss-sha384", "ecdsa-p256-sha256", "ed25519"],
)
def test_vendor_signature_algorithms(algorithm: str) -> None:
    key: PrivateKey
    sign: Callable[[x509.CertificateBuilder, PrivateKey], x509.Certificate] | None = None
    if algorithm.startswith("rsa"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "rsa-pss-sha384":
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)

            def sign(builder: x509.CertificateBuilder, issuer: PrivateKey) -> x509.Certificate:
                return builder.sign(issuer, hashes.SHA384(), rsa_padding=pss)  # type: ignore[arg-type]
        else:

            def sign(builder: x509.CertificateBuilder, issuer: PrivateKey) -> x509.Certificate:
                return builder.sign(issuer, hashes.SHA256())  # type: ignore[arg-type]
    elif algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = ec.generate_private_key(ec.SECP256R1())

        def sign(builder: x509.CertificateBuilder, issuer: PrivateKey) -> x509.Certificate:
            return builder.sign(issuer, hashes.SHA256())  # type: ignore[arg-type]

    root = parse_certificate(issue("Vendor", key, sign=sign))
    leaf = parse_certificate(issue("Device", p384(), ("Vendor", key), sign=sign))
    assert verify_chain([leaf], [root], now=NOW) == root
    with pytest.raises(CertificateInvalid):
        verify_issued_by(parse_certificate(_rebuild(leaf.der, 1, b"\x02\x01\x09")), root)


def test_signature_algorithm_must_fit_the_key() -> None:
    ecdsa_sha384 = "1.2.840.10045.4.3.3"
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    with pytest.raises(EvidenceMalformed) as caught:
        verify_signature(rsa_key, ecdsa_sha384, b"", b"sig", b"data")
    assert caught.value.check == "signature_algorithm"
    with pytest.raises(EvidenceMalformed, match="RSA-PSS signature without parameters"):
        verify_signature(rsa_key, "1.2.840.113549.1.1.10", b"", b"sig", b"data")
    with pytest.raises(VerificationFailed):
        verify_signature(public_key(LEAF), ecdsa_sha384, b"", LEAF.signature, LEAF.tbs)
    verify_signature(public_key(INTER), ecdsa_sha384, b"", LEAF.signature, LEAF.tbs)
