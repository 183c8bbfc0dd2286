"""What the public vectors cannot show, with a private AMD-shaped PKI: a signed Turin report (its TCB layout and
8-byte hwID), AMD CRLs, unsigned and masked reports, and the evidence file formats."""

from __future__ import annotations

import json
import struct
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from tests.attest.snp.amdpki import NOW, TURIN_CHIP, TURIN_TCB, AmdPki, evidence, turin_report

from cloister.attest.checks import Checklist
from cloister.attest.snp import Claims, Evidence, Policy, VerifyOptions, validate, verify
from cloister.attest.snp.report import Tcb
from cloister.errors import (
    AttestationError,
    CertificateInvalid,
    CollateralInvalid,
    ConfigError,
    EvidenceMalformed,
    PolicyViolation,
    VerificationFailed,
)


@pytest.fixture(scope="module")
def pki() -> AmdPki:
    return AmdPki()


@pytest.fixture(scope="module")
def chip_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def turin(pki: AmdPki, chip_key: ec.EllipticCurvePrivateKey) -> Evidence:
    return evidence(pki, chip_key, turin_report(chip_key))


def _options(pki: AmdPki, **changes: object) -> VerifyOptions:
    return replace(VerifyOptions(now=NOW, roots=(pki.ark,)), **changes)  # type: ignore[arg-type]


def _fails(evidence: Evidence, options: VerifyOptions, kind: type[AttestationError], check: str) -> str:
    with pytest.raises(kind) as caught:
        verify(evidence, options)
    assert caught.value.check == check
    return caught.value.message


def test_turin_report_verifies_with_its_layout(pki: AmdPki, turin: Evidence) -> None:
    checklist = Checklist()
    claims = verify(turin, _options(pki), checklist=checklist)
    assert checklist.ok and str(claims.product) == "Turin" and claims.report.cpuid == (0x1A, 0x02, 0x01)
    assert claims.reported_tcb.components() == {"fmc": 1, "bootloader": 2, "tee": 3, "snp": 4, "microcode": 5}
    assert claims.reported_tcb.raw == 0x0500000004030201
    assert claims.to_json()["launch_tcb"]["fmc"] == 1
    validate(claims, Policy(minimum_tcb={"fmc": 1, "snp": 4}, minimum_launch_tcb=0x0500000004030201))
    with pytest.raises(PolicyViolation, match="fmc 1 < 2"):
        validate(claims, Policy(minimum_tcb={"fmc": 2}))
    with pytest.raises(PolicyViolation, match="fmc 1 < 2"):
        validate(claims, Policy(minimum_tcb=0x0500000004030202))


def test_turin_tcb_is_not_read_with_the_milan_layout(
    pki: AmdPki, chip_key: ec.EllipticCurvePrivateKey, turin: Evidence
) -> None:
    """A VCEK whose extensions match the Milan reading of the same u64 is refused."""
    milan_reading = Tcb.decode(TURIN_TCB.raw, turin=False).components()
    wrong = Tcb(TURIN_TCB.raw, fmc=0, **milan_reading)
    forged = evidence(pki, chip_key, turin.report, tcb=wrong)
    assert "fmc" in _fails(forged, _options(pki), VerificationFailed, "vcek_tcb")


def test_turin_hwid_is_eight_bytes_raw_or_wrapped(pki: AmdPki, chip_key: ec.EllipticCurvePrivateKey) -> None:
    report = turin_report(chip_key)
    verify(evidence(pki, chip_key, report, hwid=b"\x04\x08" + TURIN_CHIP), _options(pki))
    other_chip = evidence(pki, chip_key, report, hwid=bytes(8))
    _fails(other_chip, _options(pki), VerificationFailed, "vcek_hwid")


def test_masked_chip_id_cannot_be_bound_to_a_vcek(pki: AmdPki, chip_key: ec.EllipticCurvePrivateKey) -> None:
    report = turin_report(chip_key, chip_id=bytes(64))
    assert "masked" in _fails(evidence(pki, chip_key, report), _options(pki), VerificationFailed, "vcek_hwid")


@pytest.mark.parametrize("signer_info", [0b11100, 0b00010])
def test_unsigned_reports_are_refused(pki: AmdPki, chip_key: ec.EllipticCurvePrivateKey, signer_info: int) -> None:
    report = turin_report(chip_key, signer_info=signer_info)
    assert "not signed" in _fails(evidence(pki, chip_key, report), _options(pki), VerificationFailed, "vcek_chain")


def test_product_mismatch_between_cpuid_and_vcek(pki: AmdPki, chip_key: ec.EllipticCurvePrivateKey) -> None:
    forged = evidence(pki, chip_key, turin_report(chip_key), product_name="Milan-B0")
    assert "Turin" in _fails(forged, _options(pki), VerificationFailed, "product")


def test_signature_by_another_key(pki: AmdPki, chip_key: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    forged = evidence(pki, chip_key, turin_report(other))
    _fails(forged, _options(pki), VerificationFailed, "report_signature")


def test_private_roots_are_not_trusted_by_default(turin: Evidence) -> None:
    message = _fails(turin, VerifyOptions(now=NOW), CertificateInvalid, "vcek_chain")
    assert "no trusted ARK-Turin" in message


def test_v2_report_without_product_source(pki: AmdPki, chip_key: ec.EllipticCurvePrivateKey) -> None:
    """A v2 report has no CPUID: the VCEK and its issuer still name the product."""
    report = turin_report(chip_key, version=2)
    claims = verify(evidence(pki, chip_key, report), _options(pki))
    assert claims.product.name == "Turin" and claims.report.cpuid is None


# --- CRL ------------------------------------------------------------------------------------------------------


def test_crl_listing_nothing_passes(pki: AmdPki, turin: Evidence) -> None:
    checklist = Checklist()
    verify(replace(turin, crl=pki.crl([])), _options(pki, check_crl=True), checklist=checklist)
    assert "crl" in [item.name for item in checklist.items if item.passed]


def test_revoked_ask(pki: AmdPki, turin: Evidence) -> None:
    crl = pki.crl([pki.ask.serial])
    assert "revoked" in _fails(replace(turin, crl=crl), _options(pki), CertificateInvalid, "crl")


def test_stale_crl(pki: AmdPki, turin: Evidence) -> None:
    crl = pki.crl([])
    _fails(replace(turin, crl=crl), _options(pki, now=NOW + timedelta(days=30)), CollateralInvalid, "crl")


def test_crl_signed_by_another_key(pki: AmdPki, turin: Evidence) -> None:
    crl = pki.crl([], signer=rsa.generate_private_key(65537, 2048))
    assert "signature" in _fails(replace(turin, crl=crl), _options(pki), CollateralInvalid, "crl")


def test_crl_required_but_missing(pki: AmdPki, turin: Evidence) -> None:
    message = _fails(turin, _options(pki, check_crl=True), CollateralInvalid, "crl")
    assert "kdsintf.amd.com/vcek/v1/Turin/crl" in message


def test_malformed_crl(pki: AmdPki, turin: Evidence) -> None:
    crl = pki.crl([])
    _fails(replace(turin, crl=crl[:-10]), _options(pki), EvidenceMalformed, "crl")


def test_crl_of_another_product(pki: AmdPki, turin: Evidence) -> None:
    genoa_crl = AmdPki(product="Genoa", ark_key=pki.ark_key).crl([])
    assert "ARK-Genoa" in _fails(replace(turin, crl=genoa_crl), _options(pki), CollateralInvalid, "crl")


# --- evidence files -------------------------------------------------------------------------------------------


def _cert_table(ders: list[bytes]) -> bytes:
    header = (len(ders) + 1) * 24
    entries, body, offset = b"", b"", header
    for index, der in enumerate(ders):
        entries += bytes([index + 1]) * 16 + struct.pack("<II", offset, len(der))
        body += der
        offset += len(der)
    return entries + bytes(24) + body


def test_from_files_formats(tmp_path: Path, pki: AmdPki, turin: Evidence) -> None:
    report_file, table_file = tmp_path / "report.bin", tmp_path / "auxblob"
    report_file.write_bytes(turin.report)
    table_file.write_bytes(_cert_table(list(turin.certificates)))
    collateral = tmp_path / "collateral"
    collateral.mkdir()
    (collateral / "crl.der").write_bytes(pki.crl([]))
    (collateral / "README.txt").write_text("ignored")
    loaded = Evidence.from_files(report_file, certs=table_file, collateral=collateral)
    assert loaded.report == turin.report and loaded.certificates == turin.certificates and loaded.crl is not None
    hex_file = tmp_path / "report.hex"
    hex_file.write_text(turin.report.hex() + "\n")
    assert Evidence.from_files(hex_file, certs=table_file).report == turin.report
    json_file = tmp_path / "evidence.json"
    json_file.write_text(json.dumps(loaded.to_json()))
    assert Evidence.from_files(json_file) == loaded
    assert Evidence.from_json(loaded.to_json()) == loaded
    claims = verify(Evidence.from_json(loaded.to_json()), _options(pki, check_crl=True))
    assert isinstance(claims, Claims)


def test_from_files_errors(tmp_path: Path, turin: Evidence) -> None:
    report_file = tmp_path / "report.bin"
    report_file.write_bytes(turin.report)
    with pytest.raises(ConfigError):
        Evidence.from_files(report_file, rims=tmp_path)
    with pytest.raises(ConfigError):
        Evidence.from_files(tmp_path / "missing.bin")
    with pytest.raises(ConfigError):
        Evidence.from_files(report_file, collateral=report_file)
    odd = tmp_path / "odd.hex"
    odd.write_text("abc")
    with pytest.raises(EvidenceMalformed):
        Evidence.from_files(odd)
    table = tmp_path / "table"
    for broken in (bytes(23), b"\x01" * 24, b"\x01" * 16 + struct.pack("<II", 48, 4000) + bytes(24)):
        table.write_bytes(broken)
        with pytest.raises(EvidenceMalformed):
            Evidence.from_files(report_file, certs=table)


@pytest.mark.parametrize(
    "document",
    [
        {"platform": "tdx", "report": ""},
        {"platform": "snp", "report": "!!"},
        {"platform": "snp", "report": "", "certificates": "x"},
        {"platform": "snp", "report": "", "extra": 1},
        [],
    ],
)
def test_from_json_rejects(document: object) -> None:
    with pytest.raises(EvidenceMalformed):
        Evidence.from_json(document)
