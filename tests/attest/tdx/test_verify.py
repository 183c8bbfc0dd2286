"""Verifying real TDX quotes: chains to the pinned Intel root, QE report, binding, quote signature, times, roots."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.attest.tdx.forge import TestPki, pem_chain, sgx_extension_of, with_chain
from tests.attest.vectors import read, vector

from cloister.attest import tdx
from cloister.attest.cache import ChainCache
from cloister.attest.checks import Checklist
from cloister.attest.der import parse_pem_certificates
from cloister.attest.roots import INTEL_SGX_ROOT_CA, fingerprint
from cloister.attest.tdx.pck import read_certificates
from cloister.errors import (
    AttestationError,
    CertificateInvalid,
    ConfigError,
    EvidenceMalformed,
    StaleEvidence,
    VerificationFailed,
)

SPR = "tdx/gotdx_tdx_prod_quote_SPR_E4.dat"
SPR_TIME = datetime(2023, 7, 1, 1, tzinfo=UTC)
FUTURE = datetime(2053, 7, 1, 1, tzinfo=UTC)
# Each real quote and a time inside its PCK chain's validity.
VALID = {
    SPR: SPR_TIME,
    "tdx/gotdx_quote_v5_sample.dat": datetime(2026, 2, 3, 1, tzinfo=UTC),
    "tdx/gotdx_cos-113-tdx-quote.dat": datetime(2025, 1, 1, tzinfo=UTC),
    "tdx/trustee_tdx_quote_4.dat": datetime(2025, 1, 1, tzinfo=UTC),
    "tdx/trustee_tdx_quote_5.dat": datetime(2025, 1, 1, tzinfo=UTC),
    "tdx/trustee_tdx_quote_6.dat": datetime(2025, 11, 1, tzinfo=UTC),
    "tdx/trustee_az-tdx-vtpm_td-quote.bin": datetime(2025, 1, 1, tzinfo=UTC),
}


def verify_at(data: bytes, now: datetime, **options: object) -> tdx.Claims:
    return tdx.verify(tdx.Evidence(data), tdx.VerifyOptions(now=now, **options))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(VALID))
def test_every_real_quote_verifies(name: str) -> None:
    checklist = Checklist()
    claims = tdx.verify(tdx.Evidence(read(name)), tdx.VerifyOptions(now=VALID[name]), checklist=checklist)
    assert [item.name for item in checklist.items] == [
        "quote_format",
        "pck_chain",
        "pck_extensions",
        "qe_report_signature",
        "qe_report_binding",
        "quote_signature",
    ]
    assert checklist.ok and "Intel SGX Root CA" in checklist.items[1].detail
    assert claims.platform == "tdx" and claims.measurement == claims.body.mr_td.hex()
    assert claims.platform_tcb is None and not claims.revocation_checked and not claims.rtmrs_replayed


def test_pck_facts_of_the_manifest() -> None:
    claims = verify_at(read(SPR), SPR_TIME)
    assert claims.pck.fmspc.hex() == "50806f000000" and claims.pck.pce_id == bytes(2)
    assert claims.pck.tcb_components == (3, 3, 2, 2, 2, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0)
    assert claims.pck.pce_svn == 11 and claims.pck.ppid.hex() == "089ddfdb9c0359c82a3bc7719239574e"
    assert claims.qe_report.isv_svn == 4
    fmspcs = {
        "tdx/gotdx_quote_v5_sample.dat": "90c06f000000",
        "tdx/gotdx_cos-113-tdx-quote.dat": "00806f050000",
        "tdx/trustee_tdx_quote_4.dat": "50806f000000",
        "tdx/trustee_tdx_quote_5.dat": "90c06f000000",
        "tdx/trustee_tdx_quote_6.dat": "00a06d080000",
        "tdx/trustee_az-tdx-vtpm_td-quote.bin": "00806f050000",
    }
    for name, fmspc in fmspcs.items():
        assert verify_at(read(name), VALID[name]).pck.fmspc.hex() == fmspc


def test_pck_validity_window_of_the_manifest() -> None:
    """Valid until 2029-09-20T13:20:31Z; go-tdx-guest's 2053 check fails on the expired PCK."""
    verify_at(read(SPR), datetime(2029, 9, 20, 13, 20, 31, tzinfo=UTC))
    with pytest.raises(CertificateInvalid, match=r"Intel SGX PCK Certificate expired at 2029-09-20T13:20:31") as info:
        verify_at(read(SPR), FUTURE)
    assert info.value.check == "pck_chain" and "2053-07-01T01:00:00" in info.value.message
    with pytest.raises(CertificateInvalid, match="not valid until 2022-09-20T13:20:31"):
        verify_at(read(SPR), datetime(2022, 9, 1, tzinfo=UTC))


@pytest.mark.parametrize(
    ("offset", "error", "check"),
    [
        (0x1343, (CertificateInvalid, EvidenceMalformed), "pck_chain"),  # PCK chain byte
        (0x1329, (CertificateInvalid, EvidenceMalformed), "pck_chain"),  # root certificate byte
        (0xF5F, (CertificateInvalid, EvidenceMalformed), "pck_chain"),  # intermediate certificate byte
        (0xB77, (CertificateInvalid, EvidenceMalformed), "pck_chain"),  # PCK leaf byte
        (0x1E, (VerificationFailed,), "quote_signature"),  # header
        (0x3C, (VerificationFailed,), "quote_signature"),  # TD report body
    ],
)
def test_go_tdx_guest_negative_verification(offset: int, error: tuple[type[Exception], ...], check: str) -> None:
    data = bytearray(read(SPR))
    data[offset] = 0x32
    with pytest.raises(error) as info:
        verify_at(bytes(data), SPR_TIME)
    assert isinstance(info.value, AttestationError) and info.value.check == check


def test_certificate_signature_mutations_are_chain_failures() -> None:
    """A byte inside each certificate's signature value: parses, but the link's signature fails."""
    spr = read(SPR)
    for index, block in enumerate(pem_chain(spr)):
        cert = parse_pem_certificates(block)[0]
        der = bytearray(cert.der)
        der[-10] ^= 0x01
        chain = b"".join(b if i != index else _pem(bytes(der)) for i, b in enumerate(pem_chain(spr)))
        # a changed root is no longer the pinned one; a changed leaf or CA no longer verifies under its issuer
        with pytest.raises(CertificateInvalid, match="pinned" if index == 2 else "does not verify") as info:
            verify_at(with_chain(spr, chain), SPR_TIME)
        assert info.value.check == "pck_chain"


def _pem(der: bytes) -> bytes:
    import base64

    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"


def test_chain_missing_a_link() -> None:
    spr = read(SPR)
    leaf, ca, root = pem_chain(spr)
    with pytest.raises(CertificateInvalid, match="does not chain to a trusted root") as info:
        verify_at(with_chain(spr, leaf + root), SPR_TIME)
    assert info.value.check == "pck_chain"
    with pytest.raises(CertificateInvalid, match="pinned Intel SGX Root CA"):
        verify_at(with_chain(spr, leaf + ca), SPR_TIME)
    with pytest.raises(CertificateInvalid, match="must be 'Intel SGX PCK Certificate'"):
        verify_at(with_chain(spr, ca + root), SPR_TIME)  # no leaf: the CA is not a PCK


def test_missing_root_can_be_supplied_as_certs_but_only_the_pinned_one_is_trusted() -> None:
    spr = read(SPR)
    leaf, ca, _ = pem_chain(spr)
    evidence = tdx.Evidence(with_chain(spr, leaf + ca), certs=read("roots/intel_sgx_root_ca.pem"))
    assert tdx.verify(evidence, tdx.VerifyOptions(now=SPR_TIME)).pck.fmspc.hex() == "50806f000000"
    assert fingerprint(parse_pem_certificates(read("roots/intel_sgx_root_ca.pem"))[0]) == INTEL_SGX_ROOT_CA
    impostor = TestPki(sgx_extension_of(spr))
    with pytest.raises(CertificateInvalid, match="pinned Intel SGX Root CA"):
        tdx.verify(tdx.Evidence(impostor.requote(spr), certs=impostor.root.pem), tdx.VerifyOptions(now=SPR_TIME))


def test_wrong_product_roots() -> None:
    ark = tuple(parse_pem_certificates(read("roots/amd_ark_milan.pem")))
    with pytest.raises(CertificateInvalid, match="does not chain to a trusted root") as info:
        verify_at(read(SPR), SPR_TIME, roots=ark)
    assert info.value.check == "pck_chain"


def test_private_pki_with_explicit_roots() -> None:
    spr = read(SPR)
    pki = TestPki(sgx_extension_of(spr))
    forged = pki.requote(spr)
    claims = verify_at(forged, datetime(2025, 1, 1, tzinfo=UTC), roots=pki.roots)
    assert claims.body == verify_at(spr, SPR_TIME).body
    with pytest.raises(CertificateInvalid):  # the real quote does not chain to the private root
        verify_at(spr, SPR_TIME, roots=pki.roots)
    with pytest.raises(CertificateInvalid, match="pinned Intel SGX Root CA"):  # nor the private quote to Intel's
        verify_at(forged, datetime(2025, 1, 1, tzinfo=UTC))


def test_a_pck_without_sgx_extensions_is_refused() -> None:
    pki = TestPki(None)  # a leaf named like a PCK, issued by the PCK CA, without Intel's SGX extensions
    with pytest.raises(EvidenceMalformed, match="has no SGX extensions") as info:
        verify_at(pki.requote(read(SPR)), datetime(2025, 1, 1, tzinfo=UTC), roots=pki.roots)
    assert info.value.check == "pck_extensions"


def test_a_chain_that_is_not_a_pck_chain_is_refused() -> None:
    pki = TestPki(sgx_extension_of(read(SPR)))
    chain = pki.tcb.pem + pki.root.pem  # valid under the root, but a TCB Signing certificate, not a PCK
    with pytest.raises(CertificateInvalid, match="must be 'Intel SGX PCK Certificate'"):
        verify_at(pki.requote(read(SPR), chain=chain), datetime(2025, 1, 1, tzinfo=UTC), roots=pki.roots)


def test_qe_report_signature_and_binding() -> None:
    spr = bytearray(read(SPR))
    qe_report = 632 + 4 + 134
    spr[qe_report + 10] ^= 1  # a byte of the QE report's CPUSVN
    with pytest.raises(VerificationFailed) as info:
        verify_at(bytes(spr), SPR_TIME)
    assert info.value.check == "qe_report_signature"
    spr = bytearray(read(SPR))
    spr[qe_report + 384 + 64 + 2] ^= 1  # QE auth data
    with pytest.raises(VerificationFailed) as info:
        verify_at(bytes(spr), SPR_TIME)
    assert info.value.check == "qe_report_binding"
    spr = bytearray(read(SPR))
    spr[632 + 4 + 64] ^= 1  # attestation key
    with pytest.raises(VerificationFailed) as info:
        verify_at(bytes(spr), SPR_TIME)
    assert info.value.check in ("qe_report_binding", "quote_signature")


def test_expected_nonce() -> None:
    cos = read("tdx/gotdx_cos-113-tdx-quote.dat")
    at = VALID["tdx/gotdx_cos-113-tdx-quote.dat"]
    checklist = Checklist()
    tdx.verify(
        tdx.Evidence(cos), tdx.VerifyOptions(now=at, expected_nonce=read("tdx/gotdx_nonce.dat")), checklist=checklist
    )
    assert checklist.items[-1].name == "nonce"
    checklist = Checklist()
    with pytest.raises(StaleEvidence) as info:
        tdx.verify(tdx.Evidence(cos), tdx.VerifyOptions(now=at, expected_nonce=b"\x01" * 64), checklist=checklist)
    assert info.value.check == "nonce" and not checklist.ok and checklist.items[-1].name == "nonce"
    with pytest.raises(ConfigError, match="64-byte REPORT_DATA"):
        tdx.verify(tdx.Evidence(cos), tdx.VerifyOptions(now=at, expected_nonce=bytes(32)))


def test_chain_cache_hits_and_rechecks_expiry() -> None:
    cache = ChainCache(size=2)
    spr = read(SPR)
    first = verify_at(spr, SPR_TIME, cache=cache)
    assert verify_at(spr, SPR_TIME, cache=cache) == first
    assert (cache.hits, cache.misses) == (1, 1)
    with pytest.raises(CertificateInvalid, match="expired") as info:  # a cached chain is still checked for time
        verify_at(spr, FUTURE, cache=cache)
    assert info.value.check == "pck_chain"
    data = bytearray(spr)
    data[0x3C] ^= 1
    with pytest.raises(VerificationFailed):  # a cached chain never excuses the quote's own signatures
        verify_at(bytes(data), SPR_TIME, cache=cache)
    pki = TestPki(sgx_extension_of(spr))
    with pytest.raises(CertificateInvalid):  # nor does it trust the chain under other roots
        verify_at(spr, SPR_TIME, cache=cache, roots=pki.roots)


def test_evidence_json_round_trip_and_malformed_json() -> None:
    evidence = tdx.Evidence(
        read(SPR),
        collateral=tdx.Collateral(tcb_info=read("tdx/gotdx_sample_tcbInfo_response")),
        ccel_table=b"t",
    )
    assert tdx.Evidence.from_json(evidence.to_json()) == evidence
    for bad in (
        [],
        {"platform": "snp", "quote": ""},
        {"platform": "tdx"},
        {"platform": "tdx", "quote": "!!"},
        {"platform": "tdx", "quote": "AA==", "collateral": {"nope": None}},
        {"platform": "tdx", "quote": "AA==", "certs": 5},
    ):
        with pytest.raises(EvidenceMalformed) as info:
            tdx.Evidence.from_json(bad)  # type: ignore[arg-type]
        assert info.value.check == "evidence_json"


def test_from_files_reads_the_documented_names(tmp_path: Path) -> None:
    folder = tmp_path / "collateral"
    folder.mkdir()
    (folder / "tcb_info.json").write_bytes(read("tdx/gotdx_sample_tcbInfo_response"))
    (folder / "tcb_info_issuer_chain.pem").write_bytes(read("tdx/gotdx_tcbinfo_issuer_chain.pem"))
    (folder / "pck_crl.der").write_bytes(read("tdx/gotdx_pckcrl"))
    (folder / "ccel_table.bin").write_bytes(read("tdx/gotdx_ccel_table.dat"))
    evidence = tdx.Evidence.from_files(vector(SPR), collateral=folder, certs=vector("roots/intel_sgx_root_ca.pem"))
    assert evidence.quote == read(SPR) and evidence.certs == read("roots/intel_sgx_root_ca.pem")
    assert evidence.collateral.tcb_info == read("tdx/gotdx_sample_tcbInfo_response")
    assert evidence.collateral.pck_crl == read("tdx/gotdx_pckcrl") and evidence.collateral.qe_identity is None
    assert evidence.ccel_table == read("tdx/gotdx_ccel_table.dat") and evidence.ccel_data is None
    with pytest.raises(ConfigError, match="cannot read"):
        tdx.Evidence.from_files(tmp_path / "missing.dat")
    with pytest.raises(ConfigError, match="does not exist"):
        tdx.Evidence.from_files(vector(SPR), collateral=tmp_path / "nope")
    with pytest.raises(ConfigError, match="--rims"):
        tdx.Evidence.from_files(vector(SPR), rims=tmp_path)


def test_malformed_extra_certs() -> None:
    with pytest.raises(EvidenceMalformed) as info:
        tdx.verify(tdx.Evidence(read(SPR), certs=b"not a certificate"), tdx.VerifyOptions(now=SPR_TIME))
    assert info.value.check == "certs"


def test_claims_json_is_plain_json() -> None:
    import json

    claims = verify_at(read("tdx/trustee_tdx_quote_5.dat"), VALID["tdx/trustee_tdx_quote_5.dat"])
    encoded = json.loads(json.dumps(claims.to_json()))
    assert encoded["tdx_version"] == "1.5" and encoded["quote_version"] == 5
    assert encoded["body"]["mr_service_td"].startswith("383c87d3") and encoded["debug"] is False


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2000), st.binary(min_size=1, max_size=6))
def test_patched_certificates_raise_only_evidence_malformed(offset: int, patch: bytes) -> None:
    leaf_der = parse_pem_certificates(pem_chain(read(SPR))[0])[0].der
    der = bytearray(leaf_der)
    der[offset : offset + len(patch)] = patch
    for data in (bytes(der), _pem(bytes(der))):
        with contextlib.suppress(EvidenceMalformed):
            read_certificates(data, what="certificate", check="pck_chain")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 4934), st.binary(min_size=1, max_size=6))
def test_spliced_quotes_raise_only_attestation_errors(offset: int, patch: bytes) -> None:
    data = bytearray(read(SPR))
    data[offset : offset + len(patch)] = patch
    options = tdx.VerifyOptions(now=SPR_TIME)
    try:
        claims = tdx.verify(tdx.Evidence(bytes(data)), options)
    except AttestationError:
        return
    assert claims == tdx.verify(tdx.Evidence(read(SPR)), options)


@pytest.mark.parametrize(
    ("name", "not_before", "not_after"),
    [
        (SPR, datetime(2022, 9, 20, 13, 20, 31, tzinfo=UTC), datetime(2029, 9, 20, 13, 20, 31, tzinfo=UTC)),
        ("tdx/gotdx_quote_v5_sample.dat", datetime(2026, 1, 27, tzinfo=UTC), datetime(2033, 1, 27, tzinfo=UTC)),
        ("tdx/gotdx_cos-113-tdx-quote.dat", datetime(2024, 7, 2, tzinfo=UTC), datetime(2031, 7, 2, tzinfo=UTC)),
        ("tdx/trustee_tdx_quote_4.dat", datetime(2023, 2, 7, tzinfo=UTC), datetime(2030, 2, 7, tzinfo=UTC)),
        ("tdx/trustee_tdx_quote_6.dat", datetime(2025, 4, 8, tzinfo=UTC), datetime(2032, 4, 8, tzinfo=UTC)),
    ],
)
def test_pck_validity_windows(name: str, not_before: datetime, not_after: datetime) -> None:
    """MANIFEST §2: each PCK's validity (dates; the leaf is the first certificate to expire)."""
    leaf = read_certificates(tdx.parse_quote(read(name)).pck_chain, what="chain", check="pck_chain")[0]
    assert (leaf.not_before.date(), leaf.not_after.date()) == (not_before.date(), not_after.date())
    verify_at(read(name), leaf.not_before)
    verify_at(read(name), leaf.not_after)
    with pytest.raises(CertificateInvalid, match="expired"):
        verify_at(read(name), leaf.not_after + timedelta(seconds=1))
    with pytest.raises(CertificateInvalid, match="not valid until"):
        verify_at(read(name), leaf.not_before - timedelta(seconds=1))


def test_go_tdx_guest_trusted_root_is_the_pinned_root() -> None:
    root = parse_pem_certificates(read("tdx/gotdx_trusted_root.pem"))
    assert len(root) == 1 and fingerprint(root[0]) == INTEL_SGX_ROOT_CA
    assert root[0].der == parse_pem_certificates(read("roots/intel_sgx_root_ca.pem"))[0].der
    assert verify_at(read(SPR), SPR_TIME, roots=tuple(root)) == verify_at(read(SPR), SPR_TIME)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=10,
    )
)
def test_any_evidence_json_raises_only_evidence_malformed(value: object) -> None:
    for data in (value, {"platform": "tdx", "quote": "AAAA", "collateral": value}, {"platform": "tdx", "quote": value}):
        with contextlib.suppress(EvidenceMalformed):
            tdx.Evidence.from_json(data)  # type: ignore[arg-type]
