"""Validating verified TDX claims: safe defaults, every rule, TOML tables, and the source projects' policy cases."""

from __future__ import annotations

import contextlib
import json
import tomllib
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.attest.vectors import read

from cloister.attest import tdx
from cloister.attest.checks import Checklist
from cloister.errors import ConfigError, PolicyViolation

SPR = "tdx/gotdx_tdx_prod_quote_SPR_E4.dat"
Q4 = "tdx/trustee_tdx_quote_4.dat"
Q6 = "tdx/trustee_tdx_quote_6.dat"
NO_COLLATERAL = tdx.Policy(require_collateral=False, require_revocation_check=False)


def claims_of(name: str, now: datetime) -> tdx.Claims:
    return tdx.verify(tdx.Evidence(read(name)), tdx.VerifyOptions(now=now))


@pytest.fixture(scope="module")
def spr() -> tdx.Claims:
    return claims_of(SPR, datetime(2023, 7, 1, 1, tzinfo=UTC))


def refused(claims: tdx.Claims, policy: tdx.Policy, check: str, match: str | None = None) -> PolicyViolation:
    checklist = Checklist()
    with pytest.raises(PolicyViolation, match=match) as info:
        tdx.validate(claims, policy, checklist=checklist)
    assert info.value.check == check and checklist.items[-1].name == check and not checklist.items[-1].passed
    return info.value


def test_debug_td_is_refused_by_the_default_policy() -> None:
    """trustee_tdx_quote_4 has DEBUG=1 (TD_ATTRIBUTES 0100001000000000)."""
    q4 = claims_of(Q4, datetime(2025, 1, 1, tzinfo=UTC))
    assert q4.debug
    refused(q4, tdx.Policy(), "debug", "DEBUG bit is set")
    tdx.validate(q4, replace(NO_COLLATERAL, allow_debug=True))


def test_go_tdx_guest_debug_check(spr: tdx.Claims) -> None:
    """validate_test: setting TD_ATTRIBUTES bit 0 with the debug check → "TD_ATTRIBUTES DEBUG bit is set"."""
    debug = replace(
        spr, body=replace(spr.body, td_attributes=bytes([spr.body.td_attributes[0] | 1]) + spr.body.td_attributes[1:])
    )
    refused(debug, NO_COLLATERAL, "debug", "TD_ATTRIBUTES DEBUG bit is set, but the policy does not allow debug TDs")


def test_exact_values_of_the_manifest(spr: tdx.Claims) -> None:
    body = spr.body
    policy = replace(
        NO_COLLATERAL,
        mr_td=(bytes(48), body.mr_td),
        rtmrs=body.rtmrs,
        mr_seam=(body.mr_seam,),
        xfam=bytes.fromhex("e71a060000000000"),
        td_attributes=bytes.fromhex("0000004000000000"),
        mr_config_id=bytes(48),
        mr_owner=bytes(48),
        mr_owner_config=bytes(48),
        report_data=body.report_data,
        qe_vendor_id=bytes.fromhex("939a7233f79c4ca9940a0db3957f0607"),
    )
    checklist = Checklist()
    tdx.validate(spr, policy, checklist=checklist)
    assert checklist.ok and {"measurement", "rtmr0", "rtmr3", "mr_seam", "xfam", "report_data"} <= {
        item.name for item in checklist.items
    }


@pytest.mark.parametrize(
    ("change", "check"),
    [
        ({"mr_td": (bytes(48),)}, "measurement"),
        ({"mr_seam": (bytes(48),)}, "mr_seam"),
        ({"rtmrs": (None, None, bytes(48), None)}, "rtmr2"),
        ({"xfam": bytes(8)}, "xfam"),
        ({"td_attributes": bytes(8)}, "td_attributes"),
        ({"mr_config_id": b"\x01" * 48}, "mr_config_id"),
        ({"mr_owner": b"\x01" * 48}, "mr_owner"),
        ({"mr_owner_config": b"\x01" * 48}, "mr_owner_config"),
        ({"report_data": bytes(64)}, "report_data"),
        ({"qe_vendor_id": bytes(16)}, "qe_vendor_id"),
    ],
)
def test_each_exact_rule_refuses_a_different_value(spr: tdx.Claims, change: dict[str, object], check: str) -> None:
    refused(spr, replace(NO_COLLATERAL, **change), check)  # type: ignore[arg-type]


def test_minimum_tee_tcb_svn_is_byte_wise(spr: tdx.Claims) -> None:
    """go-tdx-guest: minimum 04000400… vs 03000400… → "[3 0 4 0 …] is less than the required minimum [4 0 4 0 …]"."""
    refused(
        spr,
        replace(NO_COLLATERAL, minimum_tee_tcb_svn=bytes.fromhex("04000400" + "00" * 12)),
        "tee_tcb_svn",
        r"TEE TCB security-version number \[3, 0, 4, 0, .*\] is less than the required minimum \[4, 0, 4, 0",
    )
    # every byte at least as high passes; one byte higher than the quote's anywhere fails
    tdx.validate(spr, replace(NO_COLLATERAL, minimum_tee_tcb_svn=bytes.fromhex("03000400" + "00" * 12)))
    refused(
        spr, replace(NO_COLLATERAL, minimum_tee_tcb_svn=bytes.fromhex("00000000" + "00" * 11 + "01")), "tee_tcb_svn"
    )


def test_minimum_qe_and_pce_svn_use_the_authenticated_values(spr: tdx.Claims) -> None:
    """The quote header's QE/PCE SVN fields are reserved in TDX quotes (0 here; go-tdx-guest compares them, so its
    MinimumQeSvn 2 fails). We compare the PCK-signed QE report's ISVSVN (4) and the PCK certificate's PCESVN (11)."""
    assert (spr.header.qe_svn, spr.header.pce_svn) == (0, 0)
    tdx.validate(spr, replace(NO_COLLATERAL, minimum_qe_svn=4, minimum_pce_svn=11))
    for bad in (5, 21, 666666 & 0xFFFF):
        refused(spr, replace(NO_COLLATERAL, minimum_qe_svn=bad), "qe_svn", "QE security-version number 4 is less")
    refused(spr, replace(NO_COLLATERAL, minimum_pce_svn=12), "pce_svn", "PCE security-version number 11 is less")


def test_tcb_status_and_collateral_requirements(spr: tdx.Claims) -> None:
    refused(spr, tdx.Policy(), "collateral_required", "TCB status is unknown")
    refused(spr, tdx.Policy(require_collateral=False), "revocation_required", "revocation was not checked")
    refused(spr, replace(NO_COLLATERAL, require_rtmr_replay=True), "rtmr_replay_required")
    out_of_date = replace(
        spr,
        platform_tcb=tdx.TcbVerdict("OutOfDate", "2018-01-04T00:00:00Z", (), "platform"),
        qe_tcb=tdx.TcbVerdict("UpToDate", "2024-03-13T00:00:00Z", (), "TD_QE"),
        revocation_checked=True,
    )
    refused(out_of_date, tdx.Policy(), "tcb_status", "'platform': 'OutOfDate'")
    tdx.validate(out_of_date, tdx.Policy(tcb_statuses=("UpToDate", "OutOfDate")))
    module_old = replace(out_of_date, platform_tcb=out_of_date.qe_tcb, module_tcb=tdx.TcbVerdict("OutOfDate", "x"))
    refused(module_old, tdx.Policy(), "tcb_status", "tdx_module")


def test_quote_6_with_real_collateral_is_out_of_date_for_the_default_policy() -> None:
    collateral = tdx.Collateral(
        tcb_info=read("tdx/trustee_tcbInfo.json"),
        qe_identity=read("tdx/trustee_enclaveIdentity.json"),
        signing_chain=read("tdx/gotdx_tcbinfo_issuer_chain.pem"),
    )
    options = tdx.VerifyOptions(
        now=datetime(2025, 11, 1, tzinfo=UTC), times=tdx.TimeSet(signing_chain=datetime(2025, 5, 1, tzinfo=UTC))
    )
    claims = tdx.verify(tdx.Evidence(read(Q6), collateral=collateral), options)
    refused(claims, replace(tdx.Policy(), require_revocation_check=False), "tcb_status", "OutOfDate")


def test_trustee_parse_tdx_claims_reproducible_from_the_quote() -> None:
    """trustee_parse_tdx_claims_expected.json for quote_4: every quote-derived field (the CCEL-derived
    uefi_event_logs need a log that was not copied). trustee prints platform_instance_id byte-reversed."""
    expected = json.loads(read("tdx/trustee_parse_tdx_claims_expected.json"))
    claims = claims_of(Q4, datetime(2025, 1, 1, tzinfo=UTC))
    got = claims.to_json()
    quote_body = expected["quote"]["body"]
    assert {
        "mr_config_id": got["body"]["mr_config_id"],
        "mr_owner": got["body"]["mr_owner"],
        "mr_owner_config": got["body"]["mr_owner_config"],
        "mr_seam": got["body"]["mr_seam"],
        "mr_td": got["body"]["mr_td"],
        "mrsigner_seam": got["body"]["mr_signer_seam"],
        "report_data": got["report_data"],
        "rtmr_0": got["body"]["rtmrs"][0],
        "rtmr_1": got["body"]["rtmrs"][1],
        "rtmr_2": got["body"]["rtmrs"][2],
        "rtmr_3": got["body"]["rtmrs"][3],
        "seam_attributes": got["body"]["seam_attributes"],
        "tcb_svn": got["body"]["tee_tcb_svn"],
        "td_attributes": got["body"]["td_attributes"],
        "xfam": got["body"]["xfam"],
    } == quote_body
    header = expected["quote"]["header"]
    assert header["version"] == got["quote_version"].to_bytes(2, "little").hex()
    assert header["tee_type"] == got["header"]["tee_type"].to_bytes(4, "little").hex()
    assert header["att_key_type"] == "0200" and header["reserved"] == "00000000"
    assert (header["vendor_id"], header["user_data"]) == (got["header"]["qe_vendor_id"], got["header"]["user_data"])
    assert expected["report_data"] == got["report_data"] and expected["init_data"] == got["body"]["mr_config_id"]
    flags = got["td_attributes"]
    assert expected["td_attributes"] == {
        "debug": flags["debug"],
        "key_locker": flags["key_locker"],
        "perfmon": flags["perfmon"],
        "protection_keys": flags["pks"],
        "septve_disable": flags["sept_ve_disable"],
    }
    instance = bytes.fromhex(got["pck"]["platform_instance_id"])
    assert expected["platform_instance_id"] == instance[::-1].hex()


def test_from_toml_reads_every_key_and_round_trips(spr: tdx.Claims) -> None:
    text = f"""
    [tdx]
    allow_debug = false
    mr_td = ["{spr.body.mr_td.hex()}"]
    rtmr0 = "{spr.body.rtmrs[0].hex()}"
    rtmr3 = "{bytes(48).hex()}"
    mr_seam = ["{spr.body.mr_seam.hex()}"]
    xfam = "e71a060000000000"
    td_attributes = "0000004000000000"
    minimum_tee_tcb_svn = "03000400000000000000000000000000"
    minimum_qe_svn = 4
    minimum_pce_svn = 11
    tcb_statuses = ["UpToDate", "SWHardeningNeeded"]
    require_collateral = false
    require_revocation_check = false
    require_rtmr_replay = false
    qe_vendor_id = "939a7233f79c4ca9940a0db3957f0607"
    """
    policy = tdx.Policy.from_toml(tomllib.loads(text)["tdx"])
    assert policy.rtmrs == (spr.body.rtmrs[0], None, None, bytes(48))
    assert policy.tcb_statuses == ("UpToDate", "SWHardeningNeeded")
    tdx.validate(spr, policy)
    assert tdx.Policy.from_toml(policy.to_json()) == policy
    assert tdx.Policy.from_toml(tdx.Policy().to_json()) == tdx.Policy() == tdx.Policy.from_toml({})


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"allow_debugg": True}, "unknown key"),
        ({"rtmrs": []}, "unknown key"),
        ({"allow_debug": "yes"}, "true or false"),
        ({"mr_td": "00"}, "list of hex"),
        ({"mr_td": ["00"]}, "48 bytes"),
        ({"rtmr1": "zz"}, "48 bytes"),
        ({"xfam": 5}, "8 bytes"),
        ({"tcb_statuses": ["Fine"]}, "tcb_statuses"),
        ({"minimum_qe_svn": -1}, "integer"),
        ({"minimum_pce_svn": True}, "integer"),
    ],
)
def test_bad_policy_tables(table: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        tdx.Policy.from_toml(table)
    with pytest.raises(ConfigError):
        tdx.Policy.from_toml([])  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([*tdx.Policy.__dataclass_fields__, "rtmr0", "rtmr3", "bogus"]),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
            max_leaves=4,
        ),
        max_size=4,
    )
)
def test_any_policy_table_raises_only_config_error(table: dict[str, object]) -> None:
    with contextlib.suppress(ConfigError):
        tdx.Policy.from_toml(table)
