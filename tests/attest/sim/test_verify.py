"""Verifying sim evidence: roots are mandatory, the chip chain, its certified identity and every signed byte count."""

from __future__ import annotations

import base64
import dataclasses
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tests.attest.sim.fixtures import (
    CPU_CHIP,
    GPU_CHIP,
    ISSUED,
    MEASUREMENT,
    NOW,
    OPTIONS,
    VENDOR,
    cpu_report,
    gpu_report,
)

from cloister.attest import sim
from cloister.attest.cache import ChainCache
from cloister.attest.checks import Checklist
from cloister.attest.sim.identity import CHIP_IDENTITY_OID, ChipIdentity
from cloister.errors import (
    CertificateInvalid,
    ConfigError,
    EvidenceMalformed,
    VerificationFailed,
)


def test_a_cpu_report_verifies_into_its_claims() -> None:
    checklist = Checklist()
    claims = sim.verify(CPU_CHIP.evidence(cpu_report(debug=True)), OPTIONS, checklist=checklist)
    assert (claims.platform, claims.kind, claims.debug, claims.tcb_version) == ("sim", "cpu", True, 3)
    assert claims.report_data == bytes(range(64)) and claims.measurement == MEASUREMENT.hex()
    assert claims.root == "Cloister sim root"
    assert claims.to_json() == {
        "platform": "sim",
        "kind": "cpu",
        "chip_id": "node-1",
        "root": "Cloister sim root",
        "tcb_version": 3,
        "debug": True,
        "measurement": MEASUREMENT.hex(),
        "report_data": bytes(range(64)).hex(),
        "smt": True,
    }
    assert [c.name for c in checklist.items] == [
        "report",
        "chip_certificate",
        "chip_chain",
        "chip_identity",
        "report_signature",
    ]
    assert checklist.ok


def test_a_gpu_report_verifies_into_its_claims() -> None:
    claims = sim.verify(GPU_CHIP.evidence(gpu_report(driver_version="550.54")), OPTIONS)
    assert (claims.kind, claims.report_data, claims.tcb_version, claims.debug) == ("gpu", bytes(range(32)), 2, False)
    data = claims.to_json()
    assert data["driver_version"] == "550.54" and data["vbios_version"] == "sim-1.0"
    assert [block["index"] for block in data["blocks"]] == [1, 2, 3]
    assert len(claims.measurement) == 96


def test_sim_has_no_default_roots() -> None:
    evidence = CPU_CHIP.evidence(cpu_report())
    for options in (None, sim.VerifyOptions(now=NOW), sim.VerifyOptions(now=NOW, roots=())):
        checklist = Checklist()
        with pytest.raises(CertificateInvalid, match="no pinned vendor root") as caught:
            sim.verify(evidence, options, checklist=checklist)
        assert caught.value.check == "roots"
        assert not checklist.items[-1].passed and checklist.items[-1].name == "roots"


@pytest.mark.parametrize(
    ("now", "check", "message"),
    [
        (ISSUED - timedelta(hours=2), "validity", "not valid until"),
        (ISSUED + timedelta(days=10 * 365 + 1), "validity", "expired"),
        (NOW, None, None),
    ],
)
def test_certificate_validity_is_checked_at_now(now: object, check: str | None, message: str | None) -> None:
    evidence = CPU_CHIP.evidence(cpu_report())
    options = dataclasses.replace(OPTIONS, now=now)
    if check is None:
        sim.verify(evidence, options)
        return
    with pytest.raises(CertificateInvalid, match=message) as caught:
        sim.verify(evidence, options)
    assert caught.value.check == check


def test_another_vendors_root_is_not_trusted() -> None:
    other = sim.SimVendor.generate(name="Other sim root", now=ISSUED)
    with pytest.raises(CertificateInvalid) as caught:
        sim.verify(CPU_CHIP.evidence(cpu_report()), dataclasses.replace(OPTIONS, roots=(other.certificate,)))
    assert caught.value.check == "roots"
    impostor = sim.SimVendor.generate(now=ISSUED)  # same name, other key
    with pytest.raises(CertificateInvalid) as caught:
        sim.verify(CPU_CHIP.evidence(cpu_report()), dataclasses.replace(OPTIONS, roots=(impostor.certificate,)))
    assert caught.value.check == "chain"
    both = dataclasses.replace(OPTIONS, roots=(other.certificate, VENDOR.certificate))
    assert sim.verify(CPU_CHIP.evidence(cpu_report()), both).kind == "cpu"


def test_a_chip_signs_only_its_own_kind_id_and_tcb() -> None:
    with pytest.raises(VerificationFailed, match="signed by a gpu chip") as caught:
        sim.verify(GPU_CHIP.evidence(GPU_CHIP.cpu_report(bytes(64), measurement=MEASUREMENT)), OPTIONS)
    assert caught.value.check == "chip_identity"
    with pytest.raises(VerificationFailed, match="TCB version 4") as caught:
        sim.verify(CPU_CHIP.evidence(cpu_report(tcb_version=4)), OPTIONS)
    assert caught.value.check == "chip_tcb"
    other = VENDOR.issue_chip("node-2", now=ISSUED, tcb_version=3)
    borrowed = sim.Evidence(cpu_report(), other.certificate.der)  # node-1's report with node-2's certificate
    with pytest.raises(VerificationFailed, match="names chip 'node-1'") as caught:
        sim.verify(borrowed, OPTIONS)
    assert caught.value.check == "chip_identity"


def test_a_report_signed_by_another_key_is_refused() -> None:
    twin = VENDOR.issue_chip("node-1", now=ISSUED, tcb_version=3)  # same identity, other key
    with pytest.raises(VerificationFailed) as caught:
        sim.verify(sim.Evidence(cpu_report(), twin.certificate.der), OPTIONS)
    assert caught.value.check == "report_signature"


def _chip_certificate(key: ec.EllipticCurvePrivateKey, *, identity: bool = True) -> bytes:
    """A chip certificate made by hand with the vendor's key (to build what SimVendor never issues)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "odd chip")]))
        .issuer_name(VENDOR.subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(ISSUED)
        .not_valid_after(ISSUED + timedelta(days=365))
    )
    if identity:
        extension = x509.UnrecognizedExtension(
            x509.ObjectIdentifier(CHIP_IDENTITY_OID), ChipIdentity("cpu", "node-1", 3).to_der()
        )
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(VENDOR.key, hashes.SHA384()).public_bytes(serialization.Encoding.DER)


def test_chip_keys_are_p384_and_certificates_carry_an_identity() -> None:
    p256 = _chip_certificate(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(CertificateInvalid, match="P-384") as caught:
        sim.verify(sim.Evidence(cpu_report(), p256), OPTIONS)
    assert caught.value.check == "chip_key"
    anonymous = _chip_certificate(ec.generate_private_key(ec.SECP384R1()), identity=False)
    with pytest.raises(EvidenceMalformed, match="no chip identity extension") as caught:
        sim.verify(sim.Evidence(cpu_report(), anonymous), OPTIONS)
    assert caught.value.check == "chip_identity"


def test_malformed_certificates_are_evidence_malformed() -> None:
    for junk in (b"", b"\x30\x03\x02\x01\x00", CPU_CHIP.certificate.der[:-1], CPU_CHIP.certificate.der + b"\x00"):
        with pytest.raises(EvidenceMalformed):
            sim.verify(sim.Evidence(cpu_report(), junk), OPTIONS)


@pytest.mark.parametrize(("chip", "report"), [(CPU_CHIP, cpu_report()), (GPU_CHIP, gpu_report())], ids=["cpu", "gpu"])
def test_every_single_byte_change_is_rejected(chip: sim.SimChip, report: bytes) -> None:
    """Flip each byte of the report (signed region and signature) two ways: nothing flipped is accepted."""
    original = sim.verify(chip.evidence(report), OPTIONS)
    accepted = []
    for offset in range(len(report)):
        for mask in (0x01, 0x80):
            mutated = bytearray(report)
            mutated[offset] ^= mask
            try:
                claims = sim.verify(chip.evidence(bytes(mutated)), OPTIONS)
            except (EvidenceMalformed, VerificationFailed):
                continue
            accepted.append((offset, mask, claims == original))
    assert accepted == []


def test_the_chain_cache_skips_signatures_but_not_validity() -> None:
    cache = ChainCache()
    options = dataclasses.replace(OPTIONS, cache=cache)
    evidence = CPU_CHIP.evidence(cpu_report())
    assert sim.verify(evidence, options) == sim.verify(evidence, options) == sim.verify(evidence, OPTIONS)
    assert (cache.misses, cache.hits) == (1, 1)
    with pytest.raises(CertificateInvalid, match="expired"):
        sim.verify(evidence, dataclasses.replace(options, now=ISSUED + timedelta(days=20 * 365)))


def test_from_files_reads_a_report_and_a_chip_certificate(tmp_path: Path) -> None:
    report, signed = tmp_path / "report.bin", cpu_report()
    report.write_bytes(signed)
    der, pem = tmp_path / "chip.der", tmp_path / "chain.pem"
    der.write_bytes(CPU_CHIP.certificate.der)
    pem.write_text(_pem(CPU_CHIP.certificate.der) + VENDOR.root_pem)
    expected = CPU_CHIP.evidence(signed)
    assert sim.Evidence.from_files(report, certs=der) == expected
    assert sim.Evidence.from_files(report, certs=pem) == expected
    with pytest.raises(ConfigError, match="--certs"):
        sim.Evidence.from_files(report)
    with pytest.raises(ConfigError, match="no collateral"):
        sim.Evidence.from_files(report, certs=der, collateral=tmp_path)
    with pytest.raises(ConfigError, match="cannot read"):
        sim.Evidence.from_files(tmp_path / "missing.bin", certs=der)
    (tmp_path / "junk.der").write_bytes(b"junk")
    with pytest.raises(EvidenceMalformed):
        sim.Evidence.from_files(report, certs=tmp_path / "junk.der")


def _pem(der: bytes) -> str:
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode(), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"
