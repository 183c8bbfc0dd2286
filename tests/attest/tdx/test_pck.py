"""The PCK certificate's SGX extensions (go-tdx-guest TestPckCertificateExtensions) and strict PEM chain reading."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.attest.vectors import read

from cloister.attest.der import Certificate, Extension
from cloister.attest.tdx.pck import SGX_EXTENSIONS, parse_sgx_extensions, read_certificates
from cloister.attest.tdx.quote import parse_quote
from cloister.errors import EvidenceMalformed

SPR = "tdx/gotdx_tdx_prod_quote_SPR_E4.dat"


def chain(name: str = SPR) -> bytes:
    return parse_quote(read(name)).pck_chain


def leaf_with(value: bytes) -> Certificate:
    leaf = read_certificates(chain(), what="chain", check="pck_chain")[0]
    return replace(leaf, extensions=(Extension(SGX_EXTENSIONS, False, value),))


def sgx_value() -> bytes:
    extension = read_certificates(chain(), what="chain", check="pck_chain")[0].extension(SGX_EXTENSIONS)
    assert extension is not None
    return extension.value


def test_spr_pck_extensions() -> None:
    info = parse_sgx_extensions(read_certificates(chain(), what="chain", check="pck_chain")[0])
    assert info.ppid == bytes([8, 157, 223, 219, 156, 3, 89, 200, 42, 59, 199, 113, 146, 57, 87, 78])
    assert info.fmspc == bytes([80, 128, 111, 0, 0, 0]) and info.pce_id == bytes(2)
    assert info.pce_svn == 11 and info.sgx_type == 1  # Scalable
    assert info.tcb_components == (3, 3, 2, 2, 2, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0)
    assert info.cpu_svn == bytes([3, 3, 2, 2, 2, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0])


def test_platform_instance_id_of_multi_package_platforms() -> None:
    info = parse_sgx_extensions(read_certificates(chain("tdx/trustee_tdx_quote_4.dat"), what="c", check="c")[0])
    assert (
        info.platform_instance_id is not None and info.platform_instance_id.hex() == "021ac64d355ba904e2d5948d228d5482"
    )


def test_missing_and_broken_entries() -> None:
    value = sgx_value()
    fmspc_oid = bytes.fromhex("060a2a864886f84d010d0104")  # 1.2.840.113741.1.13.1.4
    assert fmspc_oid in value
    with pytest.raises(EvidenceMalformed, match="FMSPC is missing") as info:
        parse_sgx_extensions(leaf_with(value.replace(fmspc_oid, fmspc_oid[:-1] + b"\x09")))
    assert info.value.check == "pck_extensions"
    with pytest.raises(EvidenceMalformed, match="trailing bytes"):
        parse_sgx_extensions(leaf_with(value + b"\x00"))
    with pytest.raises(EvidenceMalformed, match="appears twice"):
        parse_sgx_extensions(leaf_with(value.replace(bytes.fromhex("060a2a864886f84d010d0103"), fmspc_oid)))
    with pytest.raises(EvidenceMalformed, match="no SGX extensions"):
        parse_sgx_extensions(replace(leaf_with(value), extensions=()))


def test_pem_text_must_be_only_certificates() -> None:
    pem = chain()
    assert len(read_certificates(pem, what="chain", check="pck_chain")) == 3  # trailing NUL is tolerated
    assert len(read_certificates(pem + b"\n\n", what="chain", check="pck_chain")) == 3
    for bad in (pem + b"x", b"junk" + pem, pem.replace(b"-----END CERTIFICATE-----", b"", 1), b"", b"\xff\xfe"):
        with pytest.raises(EvidenceMalformed) as info:
            read_certificates(bad, what="chain", check="pck_chain")
        assert info.value.check == "pck_chain"


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 560), st.binary(min_size=1, max_size=4))
def test_patched_extensions_raise_only_evidence_malformed(offset: int, patch: bytes) -> None:
    value = bytearray(sgx_value())
    value[offset : offset + len(patch)] = patch
    with contextlib.suppress(EvidenceMalformed):
        parse_sgx_extensions(leaf_with(bytes(value)))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_random_extensions_and_chains_raise_only_evidence_malformed(data: bytes) -> None:
    with contextlib.suppress(EvidenceMalformed):
        parse_sgx_extensions(leaf_with(data))
    with contextlib.suppress(EvidenceMalformed):
        read_certificates(data, what="chain", check="pck_chain")
