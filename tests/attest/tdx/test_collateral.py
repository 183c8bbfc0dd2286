"""Intel PCS collateral: signatures over the exact JSON bytes, freshness, FMSPC, TCB levels, module identity, CRLs."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.attest.tdx.forge import TestPki, sgx_extension_of
from tests.attest.vectors import read

from cloister.attest import tdx
from cloister.attest.checks import Checklist
from cloister.attest.tdx.collateral import load_crl, parse_qe_identity, parse_tcb_info
from cloister.attest.tdx.pck import read_certificates
from cloister.errors import CertificateInvalid, CollateralInvalid, EvidenceMalformed, VerificationFailed

SPR = "tdx/gotdx_tdx_prod_quote_SPR_E4.dat"
V5 = "tdx/gotdx_quote_v5_sample.dat"
Q6 = "tdx/trustee_tdx_quote_6.dat"
SPR_TIME = datetime(2023, 7, 1, 1, tzinfo=UTC)
FUTURE = datetime(2053, 7, 1, 1, tzinfo=UTC)
# The TCB Signing certificate in the saved issuer chain expired 2025-05-21; newer collateral is signed by the same
# key, so its chain is checked at a time inside that certificate's validity (TimeSet.signing_chain).
CHAIN_TIME = datetime(2025, 5, 1, tzinfo=UTC)
CHAIN = "tdx/gotdx_tcbinfo_issuer_chain.pem"


def spr_collateral(**overrides: bytes | None) -> tdx.Collateral:
    parts: dict[str, bytes | None] = {
        "tcb_info": read("tdx/gotdx_sample_tcbInfo_response"),
        "qe_identity": read("tdx/gotdx_sample_qeIdentity_response"),
        "signing_chain": read(CHAIN),
        "pck_crl": read("tdx/gotdx_pckcrl"),
        "root_crl": read("tdx/gotdx_rootcrl.der"),
    }
    parts.update(overrides)
    return tdx.Collateral(**parts)


def run(
    quote: str, collateral: tdx.Collateral, now: datetime, checklist: Checklist | None = None, **times: datetime
) -> tdx.Claims:
    options = tdx.VerifyOptions(now=now, times=tdx.TimeSet(**times))
    return tdx.verify(tdx.Evidence(read(quote), collateral=collateral), options, checklist=checklist)


def test_spr_collateral_verifies_but_no_tcb_level_matches() -> None:
    """MANIFEST §2.1: PCK SGX components [3,3,2,2,2,1,0,2] are below every level's [5,5,2,2,3,1,0,3]."""
    checklist = Checklist()
    with pytest.raises(CollateralInvalid, match="no matching TCB level") as info:
        run(SPR, spr_collateral(), SPR_TIME, checklist)
    assert info.value.check == "tcb_level"
    passed = [item.name for item in checklist.items if item.passed]
    for name in ("tcb_signing_chain", "root_crl", "pck_crl", "revocation", "tcb_info_signature", "tcb_info_freshness"):
        assert name in passed
    assert passed[-2:] == ["tcb_info_fmspc", "tdx_module"]


def test_spr_qe_identity_and_crls_without_tcb_info() -> None:
    claims = run(SPR, spr_collateral(tcb_info=None), SPR_TIME)
    assert (
        claims.qe_tcb is not None
        and claims.qe_tcb.status == "UpToDate"
        and claims.qe_tcb.date == "2023-02-15T00:00:00Z"
    )
    assert claims.revocation_checked and claims.platform_tcb is None and claims.tcb_statuses == {"qe": "UpToDate"}


def test_tcb_info_expired_at_2053() -> None:
    """go-tdx-guest TestNegativeObtainAndVerifyCollateral: at 2053 → "tcbInfo has expired"."""
    with pytest.raises(CollateralInvalid, match="tcbInfo has expired") as info:
        run(SPR, spr_collateral(), FUTURE, pck_chain=SPR_TIME, signing_chain=SPR_TIME, crls=SPR_TIME)
    assert info.value.check == "tcb_info_freshness"
    with pytest.raises(CollateralInvalid, match="QE identity has expired"):
        run(SPR, spr_collateral(tcb_info=None), FUTURE, pck_chain=SPR_TIME, signing_chain=SPR_TIME, crls=SPR_TIME)
    with pytest.raises(CollateralInvalid, match=r"(PCK|root CA) CRL has expired") as info:
        run(SPR, spr_collateral(tcb_info=None, qe_identity=None), FUTURE, pck_chain=SPR_TIME)
    with pytest.raises(CollateralInvalid, match="issued at 2023-06-18"):
        run(SPR, spr_collateral(), datetime(2023, 6, 10, tzinfo=UTC))


def test_expired_signing_chain_is_a_certificate_error() -> None:
    with pytest.raises(CertificateInvalid, match="Intel SGX TCB Signing expired at 2025-05-21") as info:
        run(
            V5,
            tdx.Collateral(tcb_info=read("tdx/gotdx_sample_tcbinfo_response_v5"), signing_chain=read(CHAIN)),
            datetime(2026, 2, 3, 1, tzinfo=UTC),
        )
    assert info.value.check == "tcb_signing_chain"


def test_v5_quote_up_to_date_with_v5_tcb_info() -> None:
    """MANIFEST §2.2: platform UpToDate (2024-11-13), module TDX_01 UpToDate, QE identity UpToDate."""
    collateral = tdx.Collateral(
        tcb_info=read("tdx/gotdx_sample_tcbinfo_response_v5"),
        qe_identity=read("tdx/gotdx_sample_qeIdentity_response"),
        signing_chain=read(CHAIN),
    )
    now = datetime(2026, 2, 3, 1, tzinfo=UTC)
    claims = run(V5, collateral, now, signing_chain=CHAIN_TIME, qe_identity=SPR_TIME)
    assert claims.platform_tcb == tdx.TcbVerdict("UpToDate", "2024-11-13T00:00:00Z", (), "platform")
    assert claims.module_tcb == tdx.TcbVerdict("UpToDate", "2024-11-13T00:00:00Z", (), "TDX_01")
    assert claims.qe_tcb is not None and claims.qe_tcb.status == "UpToDate"
    assert claims.tcb_evaluation_number == 18


def test_quote_6_out_of_date_with_its_matched_collateral() -> None:
    """MANIFEST §2.7: PCESVN 11 < 13 skips level 1 → OutOfDate (2018-01-04); TDX_03 and QE UpToDate."""
    collateral = tdx.Collateral(
        tcb_info=read("tdx/trustee_tcbInfo.json"),
        qe_identity=read("tdx/trustee_enclaveIdentity.json"),
        signing_chain=read(CHAIN),
    )
    claims = run(Q6, collateral, datetime(2025, 11, 1, tzinfo=UTC), signing_chain=CHAIN_TIME)
    assert claims.platform_tcb == tdx.TcbVerdict("OutOfDate", "2018-01-04T00:00:00Z", (), "platform")
    assert claims.module_tcb is not None and (claims.module_tcb.component, claims.module_tcb.status) == (
        "TDX_03",
        "UpToDate",
    )
    assert claims.qe_tcb == tdx.TcbVerdict("UpToDate", "2024-03-13T00:00:00Z", (), "TD_QE")
    assert claims.tcb_statuses == {"platform": "OutOfDate", "tdx_module": "UpToDate", "qe": "UpToDate"}


def test_trustee_collateral_deserializes_as_asserted() -> None:
    """trustee collateral_service.rs: id TDX, version 3, fmspc 00A06D080000 (matched case-insensitively), masks."""
    info = parse_tcb_info(read("tdx/trustee_tcbInfo.json"))
    assert (info.id, info.version, info.fmspc.hex()) == ("TDX", 3, "00a06d080000")
    assert info.module.attributes_mask == b"\xff" * 8
    assert "00A06D080000" in read("tdx/trustee_tcbInfo.json").decode()
    identity = parse_qe_identity(read("tdx/trustee_enclaveIdentity.json"))
    assert (identity.id, identity.version, identity.misc_select_mask) == ("TD_QE", 2, 0xFFFFFFFF)
    assert identity.issue_date == datetime(2025, 10, 28, 6, 45, 9, tzinfo=UTC)


def test_signature_covers_the_exact_bytes() -> None:
    body = read("tdx/gotdx_sample_tcbInfo_response")
    # Same JSON value, different bytes: a space after a comma inside tcbInfo breaks the signature.
    respaced = body.replace(b'"version":3,', b'"version":3, ', 1)
    assert json.loads(respaced) == json.loads(body) and respaced != body
    for tampered in (respaced, body.replace(b'"tcbEvaluationDataNumber":15', b'"tcbEvaluationDataNumber":16')):
        with pytest.raises(CollateralInvalid, match="does not verify") as info:
            run(SPR, spr_collateral(tcb_info=tampered), SPR_TIME)
        assert info.value.check == "tcb_info_signature"
    identity = read("tdx/gotdx_sample_qeIdentity_response").replace(b'"isvsvn":4', b'"isvsvn":3')
    with pytest.raises(CollateralInvalid) as info:
        run(SPR, spr_collateral(tcb_info=None, qe_identity=identity), SPR_TIME)
    assert info.value.check == "qe_identity_signature"
    # Whitespace outside the signed member does not matter.
    run(
        SPR,
        spr_collateral(tcb_info=None, qe_identity=b"  \n" + read("tdx/gotdx_sample_qeIdentity_response") + b"\n"),
        SPR_TIME,
    )


def test_wrong_platform_tcb_info() -> None:
    with pytest.raises(VerificationFailed, match="FMSPC 50806f000000") as info:
        run(
            Q6,
            spr_collateral(qe_identity=None, pck_crl=None, root_crl=None),
            datetime(2025, 11, 1, tzinfo=UTC),
            tcb_info=SPR_TIME,
            signing_chain=SPR_TIME,
        )
    assert info.value.check == "tcb_info_fmspc"


def test_collateral_needs_its_signing_chain() -> None:
    with pytest.raises(EvidenceMalformed) as info:
        run(SPR, spr_collateral(signing_chain=None), SPR_TIME)
    assert info.value.check == "tcb_signing_chain"


# --- a private PKI: shapes no public vector covers --------------------------------------------------------------

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def forged(pki: TestPki, **collateral: bytes | None) -> tdx.Claims:
    evidence = tdx.Evidence(pki.requote(read(SPR)), collateral=tdx.Collateral(**collateral))
    return tdx.verify(evidence, tdx.VerifyOptions(now=NOW, roots=pki.roots))


def tcb_info_value(**changes: object) -> dict[str, object]:
    value = json.loads(read("tdx/gotdx_sample_tcbInfo_response"))["tcbInfo"]
    value.update({"issueDate": "2024-12-01T00:00:00Z", "nextUpdate": "2025-02-01T00:00:00Z"}, **changes)
    return value


def levels(sgx: list[int], pce: int, tdx_svn: list[int], status: str) -> dict[str, object]:
    return {
        "tcb": {
            "sgxtcbcomponents": [{"svn": svn} for svn in sgx],
            "pcesvn": pce,
            "tdxtcbcomponents": [{"svn": svn} for svn in tdx_svn],
        },
        "tcbDate": "2024-01-01T00:00:00Z",
        "tcbStatus": status,
    }


def test_tcb_levels_are_matched_in_order() -> None:
    pki = TestPki(sgx_extension_of(read(SPR)))
    zeros = [0] * 16
    higher = levels([3, 3, 2, 2, 2, 1, 0, 2, *[0] * 8], 12, zeros, "UpToDate")
    match = levels([3, 3, 2, 2, 2, 1, 0, 2, *[0] * 8], 11, [3, 0, 4, *[0] * 13], "SWHardeningNeeded")
    lower = levels(zeros, 0, zeros, "OutOfDate")
    body = pki.signed_json("tcbInfo", tcb_info_value(tcbLevels=[higher, match, lower]))
    claims = forged(pki, tcb_info=body, signing_chain=pki.signing_chain)
    assert claims.platform_tcb is not None and claims.platform_tcb.status == "SWHardeningNeeded"
    tee_too_low = levels(zeros, 0, [3, 0, 5, *[0] * 13], "UpToDate")  # TEE_TCB_SVN byte 2 is 4 < 5
    body = pki.signed_json("tcbInfo", tcb_info_value(tcbLevels=[tee_too_low]))
    with pytest.raises(CollateralInvalid, match="no matching TCB level"):
        forged(pki, tcb_info=body, signing_chain=pki.signing_chain)


def test_sgx_tcb_info_is_not_tdx_tcb_info() -> None:
    pki = TestPki(sgx_extension_of(read(SPR)))
    body = pki.signed_json("tcbInfo", tcb_info_value(id="SGX"))
    with pytest.raises(CollateralInvalid, match="expected TDX version 3") as info:
        forged(pki, tcb_info=body, signing_chain=pki.signing_chain)
    assert info.value.check == "tcb_info"


def test_tdx_module_signer_must_match() -> None:
    pki = TestPki(sgx_extension_of(read(SPR)))
    module = {"mrsigner": "11" * 48, "attributes": "00" * 8, "attributesMask": "ff" * 8}
    body = pki.signed_json(
        "tcbInfo", tcb_info_value(tdxModule=module, tcbLevels=[levels([0] * 16, 0, [0] * 16, "UpToDate")])
    )
    with pytest.raises(VerificationFailed, match="MRSIGNERSEAM") as info:
        forged(pki, tcb_info=body, signing_chain=pki.signing_chain)
    assert info.value.check == "tdx_module"


def test_tdx15_module_identity_is_required_and_judged() -> None:
    """quote_6 (TEE_TCB_SVN 05 03 …: module TDX_03, SVN 5) against TCB info with and without that identity."""
    pki = TestPki(sgx_extension_of(read(Q6)))
    quote = pki.requote(read(Q6))
    level = levels([0] * 16, 0, [0] * 16, "UpToDate")
    zero_module = {"mrsigner": "00" * 48, "attributes": "00" * 8, "attributesMask": "ff" * 8}

    def with_identities(identities: list[dict[str, object]]) -> tdx.Collateral:
        value = tcb_info_value(fmspc="00a06d080000", tcbLevels=[level], tdxModuleIdentities=identities)
        return tdx.Collateral(tcb_info=pki.signed_json("tcbInfo", value), signing_chain=pki.signing_chain)

    def verify(collateral: tdx.Collateral) -> tdx.Claims:
        return tdx.verify(tdx.Evidence(quote, collateral=collateral), tdx.VerifyOptions(now=NOW, roots=pki.roots))

    with pytest.raises(CollateralInvalid, match="no TDX module identity TDX_03"):
        verify(with_identities([{"id": "TDX_01", **zero_module, "tcbLevels": []}]))
    revoked = {
        "id": "TDX_03",
        **zero_module,
        "tcbLevels": [{"tcb": {"isvsvn": 6}, "tcbDate": "x", "tcbStatus": "UpToDate"}],
    }
    with pytest.raises(CollateralInvalid, match="module is revoked"):
        verify(with_identities([revoked]))
    older = {
        **revoked,
        "tcbLevels": [*revoked["tcbLevels"], {"tcb": {"isvsvn": 5}, "tcbDate": "y", "tcbStatus": "OutOfDate"}],
    }  # type: ignore[list-item]
    claims = verify(with_identities([older]))
    assert claims.module_tcb == tdx.TcbVerdict("OutOfDate", "y", (), "TDX_03")
    assert claims.tcb_statuses == {"platform": "UpToDate", "tdx_module": "OutOfDate"}


def test_qe_identity_mismatches() -> None:
    pki = TestPki(sgx_extension_of(read(SPR)))
    value = json.loads(read("tdx/gotdx_sample_qeIdentity_response"))["enclaveIdentity"]
    value.update({"issueDate": "2024-12-01T00:00:00Z", "nextUpdate": "2025-02-01T00:00:00Z"})
    for change, check in (
        ({"mrsigner": "00" * 32}, "qe_identity"),
        ({"isvprodid": 1}, "qe_identity"),
        ({"miscselect": "01000000"}, "qe_identity"),
        ({"attributes": "00" * 16}, "qe_identity"),
        ({"tcbLevels": [{"tcb": {"isvsvn": 5}, "tcbDate": "x", "tcbStatus": "UpToDate"}]}, "qe_tcb_level"),
        ({"id": "QE"}, "qe_identity"),
    ):
        body = pki.signed_json("enclaveIdentity", {**value, **change})
        with pytest.raises((VerificationFailed, CollateralInvalid, EvidenceMalformed)) as info:
            forged(pki, qe_identity=body, signing_chain=pki.signing_chain)
        assert info.value.check == check, change


def test_collateral_signed_by_another_certificate_is_refused() -> None:
    pki = TestPki(sgx_extension_of(read(SPR)))
    body = pki.signed_json("tcbInfo", tcb_info_value(), signer=pki.ca)  # right PKI, wrong role
    with pytest.raises(CollateralInvalid, match="does not verify"):
        forged(pki, tcb_info=body, signing_chain=pki.signing_chain)
    with pytest.raises(CertificateInvalid, match="must be signed by 'Intel SGX TCB Signing'"):
        forged(pki, tcb_info=body, signing_chain=pki.ca.pem + pki.root.pem)


def test_revoked_pck_and_ca() -> None:
    pki = TestPki(sgx_extension_of(read(SPR)))
    clean = forged(pki, pck_crl=pki.crl(pki.ca), root_crl=pki.crl(pki.root))
    assert clean.revocation_checked
    assert not forged(pki, pck_crl=pki.crl(pki.ca)).revocation_checked
    with pytest.raises(CertificateInvalid, match=r"Intel SGX PCK Certificate .* is revoked") as info:
        forged(pki, pck_crl=pki.crl(pki.ca, (3,)), root_crl=pki.crl(pki.root))
    assert info.value.check == "revocation"
    with pytest.raises(CertificateInvalid, match=r"Intel SGX PCK Platform CA .* is revoked"):
        forged(pki, root_crl=pki.crl(pki.root, (2,)))
    with pytest.raises(CertificateInvalid, match=r"Intel SGX TCB Signing .* is revoked"):
        forged(pki, root_crl=pki.crl(pki.root, (4,)), qe_identity=_qe(pki), signing_chain=pki.signing_chain)


def _qe(pki: TestPki) -> bytes:
    value = json.loads(read("tdx/gotdx_sample_qeIdentity_response"))["enclaveIdentity"]
    value.update({"issueDate": "2024-12-01T00:00:00Z", "nextUpdate": "2025-02-01T00:00:00Z"})
    return pki.signed_json("enclaveIdentity", value)


def test_crls_from_the_wrong_issuer_tampered_or_stale() -> None:
    pki = TestPki(sgx_extension_of(read(SPR)))
    with pytest.raises(CollateralInvalid, match="was not issued by") as info:
        forged(pki, pck_crl=pki.crl(pki.root))
    assert info.value.check == "pck_crl"
    tampered = bytearray(pki.crl(pki.ca))
    tampered[-5] ^= 1
    with pytest.raises((CollateralInvalid, EvidenceMalformed)) as info:
        forged(pki, pck_crl=bytes(tampered))
    assert info.value.check == "pck_crl"
    with pytest.raises(CollateralInvalid, match="PCK CRL has expired"):
        forged(pki, pck_crl=pki.crl(pki.ca, next_update=datetime(2024, 6, 1, tzinfo=UTC)))
    with pytest.raises(EvidenceMalformed) as info:
        forged(pki, root_crl=b"\x30\x03\x02\x01\x00")
    assert info.value.check == "root_crl"


def test_real_crls_verify_and_revoke_nothing_in_the_chain() -> None:
    """gotdx_pckcrl: 44 revoked serials, signed by the PCK Platform CA, none of them the SPR PCK."""
    quote = tdx.parse_quote(read(SPR))
    leaf, ca, root = read_certificates(quote.pck_chain, what="chain", check="pck_chain")
    pck_crl = load_crl(read("tdx/gotdx_pckcrl"), ca, what="PCK CRL", check="pck_crl")
    assert len(pck_crl.revoked) == 44 and leaf.serial not in pck_crl.revoked
    root_crl = load_crl(read("tdx/gotdx_rootcrl.der"), root, what="root CRL", check="root_crl")
    assert root_crl.revoked == frozenset()
    assert root_crl.next_update is not None
    assert (root_crl.this_update.date(), root_crl.next_update.date()) == (date(2023, 4, 3), date(2024, 4, 2))
    assert pck_crl.next_update is not None and pck_crl.next_update.date() == date(2023, 7, 8)
    with pytest.raises(CollateralInvalid, match="was not issued by"):
        load_crl(read("tdx/gotdx_pckcrl"), root, what="PCK CRL", check="pck_crl")
    # The PCK CRL issuer chain Intel sends is the CA and root the quote already carries: the CRL is checked
    # against the quote's own (verified) CA, so that header is not needed.
    issuer_chain = read_certificates(read("tdx/gotdx_pckcrl_issuer_chain.pem"), what="issuer chain", check="x")
    assert [cert.der for cert in issuer_chain] == [ca.der, root.der]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_collateral_parsers_raise_only_evidence_malformed(data: bytes) -> None:
    for parse in (parse_tcb_info, parse_qe_identity):
        with contextlib.suppress(EvidenceMalformed):
            parse(data)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2400), st.integers(1, 200))
def test_truncated_or_cut_tcb_info_raises_only_evidence_malformed(end: int, cut: int) -> None:
    body = read("tdx/gotdx_sample_tcbInfo_response")
    for data in (body[:end], body[:end] + body[end + cut :]):
        with contextlib.suppress(EvidenceMalformed):
            parse_tcb_info(data)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
        max_leaves=12,
    )
)
def test_any_json_shape_raises_only_evidence_malformed(value: object) -> None:
    template = json.loads(read("tdx/gotdx_sample_tcbInfo_response"))["tcbInfo"]
    for key in ("tcbLevels", "tdxModule", "fmspc", "issueDate", "tdxModuleIdentities"):
        body = json.dumps({"tcbInfo": {**template, key: value}, "signature": "00" * 64}).encode()
        with contextlib.suppress(EvidenceMalformed):
            parse_tcb_info(body)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_crl_loader_raises_only_typed_errors(data: bytes) -> None:
    quote = tdx.parse_quote(read(SPR))
    ca = read_certificates(quote.pck_chain, what="chain", check="pck_chain")[1]
    with contextlib.suppress(EvidenceMalformed, CollateralInvalid):
        load_crl(data, ca, what="PCK CRL", check="pck_crl")


def test_response_bodies_must_be_strict_json_objects() -> None:
    body = read("tdx/gotdx_sample_qeIdentity_response")
    assert body.endswith(b"}")
    for bad in (body[:-1] + b",}", body + b"x", body.replace(b'"signature"', b'"enclaveIdentity"'), b"{}", b"{1:2}"):
        with pytest.raises(EvidenceMalformed) as info:
            parse_qe_identity(bad)
        assert info.value.check == "qe_identity"


def test_deeply_nested_json_is_malformed_not_a_crash() -> None:
    for body in (b'{"tcbInfo":' + b"[" * 100_000 + b"]" * 100_000 + b',"signature":""}', b"[" * 100_000):
        with pytest.raises(EvidenceMalformed):
            parse_tcb_info(body)


def test_complete_current_collateral_satisfies_the_default_policy() -> None:
    """Verify then validate with one checklist: every check of both steps recorded, the safe defaults met."""
    pki = TestPki(sgx_extension_of(read(SPR)))
    tcb_info = pki.signed_json("tcbInfo", tcb_info_value(tcbLevels=[levels([0] * 16, 0, [0] * 16, "UpToDate")]))
    evidence = tdx.Evidence(
        pki.requote(read(SPR)),
        collateral=tdx.Collateral(
            tcb_info=tcb_info,
            qe_identity=_qe(pki),
            signing_chain=pki.signing_chain,
            pck_crl=pki.crl(pki.ca),
            root_crl=pki.crl(pki.root),
        ),
    )
    checklist = Checklist()
    claims = tdx.verify(evidence, tdx.VerifyOptions(now=NOW, roots=pki.roots), checklist=checklist)
    tdx.validate(claims, tdx.Policy(), checklist=checklist)
    names = [item.name for item in checklist.items]
    assert checklist.ok and names[-4:] == ["pce_svn", "collateral_required", "tcb_status", "revocation_required"]
    assert {"tcb_level", "qe_tcb_level", "tdx_module", "revocation", "debug"} <= set(names)
