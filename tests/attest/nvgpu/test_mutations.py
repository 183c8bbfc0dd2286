"""Tampering: every byte of a report, certificate times, wrong roots, broken chains, and the chain cache."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from tests.attest.nvgpu.nvvectors import DRIVER_RIM_TEST, RIM_TIME, VALID, VBIOS_RIM_TEST, Pair, evidence, gpu
from tests.attest.vectors import read

from cloister.attest import nvgpu
from cloister.attest.der import Certificate, parse_pem_certificates
from cloister.attest.nvgpu import rim as rim_module
from cloister.attest.nvgpu.spdm import parse_report
from cloister.errors import AttestationError, CertificateInvalid, EvidenceMalformed, VerificationFailed

DENSE = {"nvtrust_hopperAttestationReport.txt"}
"""Flipped at every byte; the others at every 7th byte plus every header, field, signature and padding byte."""
CACHE = nvgpu.ChainCache()


def positions(report: bytes, dense: bool) -> list[int]:
    if dense:
        return list(range(len(report)))
    parsed = parse_report(report)
    record_start = 37 + 8
    fields = set(range(record_start))  # request and response headers
    offset = record_start
    for block in parsed.response.blocks:  # each block's index, specification, sizes and DMTF type
        fields.update(range(offset, offset + 7))
        offset += 7 + len(block.value)
    fields.update(range(offset, offset + 32 + 2 + len(parsed.response.opaque)))  # nonce, opaque length and data
    return sorted(fields | set(range(0, len(report), 7)) | set(range(len(report) - 96 - parsed.padding, len(report))))


@pytest.mark.parametrize("pair", VALID, ids=lambda pair: pair.report)
def test_every_byte_flip_is_rejected(pair: Pair) -> None:
    original_gpu = gpu(pair.report, pair.chain)
    options = nvgpu.VerifyOptions(cache=CACHE)
    original = nvgpu.verify(nvgpu.Evidence((original_gpu,)), options)
    accepted, tried = [], 0
    for index in positions(original_gpu.report, pair.report in DENSE):
        data = bytearray(original_gpu.report)
        data[index] ^= 1 << (index % 8)
        tried += 1
        try:
            claims = nvgpu.verify(nvgpu.Evidence((replace(original_gpu, report=bytes(data)),)), options)
        except EvidenceMalformed:
            continue
        except VerificationFailed as exc:
            assert exc.check == "report_signature", (index, exc)
            continue
        accepted.append(index)
        assert claims == original
    assert tried > 500
    assert accepted == []


def test_zero_padding_is_accepted_and_changes_nothing() -> None:
    original_gpu = gpu(VALID[0].report, VALID[0].chain)
    original = nvgpu.verify(nvgpu.Evidence((original_gpu,)))
    padded = nvgpu.verify(nvgpu.Evidence((replace(original_gpu, report=original_gpu.report + bytes(32)),)))
    assert padded == original


def test_every_sampled_flip_of_the_leaf_certificate_is_rejected() -> None:
    original_gpu = gpu(VALID[0].report, VALID[0].chain)
    leaf = original_gpu.certificates[0].der
    for index in range(0, len(leaf), 11):
        data = bytearray(leaf)
        data[index] ^= 0x01
        try:
            certificate = parse_pem_certificates(_pem(bytes(data)))[0]
        except EvidenceMalformed:
            continue
        tampered = replace(original_gpu, certificates=(certificate, *original_gpu.certificates[1:]))
        with pytest.raises(AttestationError):
            nvgpu.verify(nvgpu.Evidence((tampered,)))


def _pem(der: bytes) -> bytes:
    return b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(der) + b"-----END CERTIFICATE-----\n"


def test_a_report_with_another_gpus_chain_is_rejected() -> None:
    report = gpu("nvsdk_hopperAttestationReport.txt", "nvsdk_hopperCertChain.txt").report
    chain = gpu(VALID[0].report, VALID[0].chain).certificates
    with pytest.raises(VerificationFailed) as caught:
        nvgpu.verify(nvgpu.Evidence((nvgpu.GpuEvidence(report, chain),)))
    assert caught.value.check == "report_signature"


def test_certificates_not_yet_valid() -> None:
    with pytest.raises(CertificateInvalid) as caught:
        nvgpu.verify(
            evidence(VALID[0].report, VALID[0].chain), nvgpu.VerifyOptions(now=datetime(2019, 1, 1, tzinfo=UTC))
        )
    assert caught.value.check == "device_chain" and "not valid until" in caught.value.message


def root(name: str) -> tuple[Certificate, ...]:
    return tuple(parse_pem_certificates(read(f"roots/{name}.pem")))


@pytest.mark.parametrize("wrong", ["amd_ark_milan", "nvidia_corim_signing_root_ca", "intel_sgx_root_ca"])
def test_wrong_product_roots(wrong: str) -> None:
    with pytest.raises(CertificateInvalid) as caught:
        nvgpu.verify(evidence(VALID[0].report, VALID[0].chain), nvgpu.VerifyOptions(roots=root(wrong)))
    assert caught.value.check == "device_chain"


def test_wrong_rim_roots() -> None:
    pair = ("nvtrust_v2.0.0_attestationReport.txt", "nvtrust_v2.0.0_gpuAkCertChain.txt")
    with pytest.raises(CertificateInvalid) as caught:
        nvgpu.verify(
            evidence(*pair, DRIVER_RIM_TEST, VBIOS_RIM_TEST),
            nvgpu.VerifyOptions(now=RIM_TIME, rim_roots=root("nvidia_device_identity_ca")),
        )
    assert caught.value.check == "rim_chain"


def test_explicit_roots_and_a_chain_without_its_root() -> None:
    chain = gpu(VALID[0].report, VALID[0].chain).certificates
    without_root = nvgpu.Evidence((replace(gpu(VALID[0].report, VALID[0].chain), certificates=chain[:-1]),))
    with pytest.raises(CertificateInvalid) as caught:  # pinned roots are looked for among the carried certificates
        nvgpu.verify(without_root)
    assert (
        caught.value.check == "device_chain" and "does not end at the NVIDIA Device Identity CA" in caught.value.message
    )
    nvgpu.verify(without_root, nvgpu.VerifyOptions(roots=root("nvidia_device_identity_ca")))


@pytest.mark.parametrize("missing", [1, 2, 3])
def test_a_chain_missing_a_link(missing: int) -> None:
    original = gpu(VALID[0].report, VALID[0].chain)
    chain = original.certificates[:missing] + original.certificates[missing + 1 :]
    with pytest.raises(CertificateInvalid) as caught:
        nvgpu.verify(nvgpu.Evidence((replace(original, certificates=chain),)))
    assert caught.value.check == "device_chain"


def test_a_reordered_chain_is_rejected() -> None:
    original = gpu(VALID[0].report, VALID[0].chain)
    a, b, *rest = original.certificates
    with pytest.raises(AttestationError):
        nvgpu.verify(nvgpu.Evidence((replace(original, certificates=(b, a, *rest)),)))


def test_chain_cache_hits_and_still_checks_validity() -> None:
    cache = nvgpu.ChainCache(size=1)
    chain = gpu(VALID[0].report, VALID[0].chain).certificates
    other = gpu(VALID[2].report, VALID[2].chain).certificates
    roots = chain[-1:]
    now = datetime(2024, 1, 1, tzinfo=UTC)
    assert cache.verify(chain, roots, now) == chain[-1]
    assert cache.verify(chain, roots, now) == chain[-1] and len(cache) == 1
    with pytest.raises(CertificateInvalid):
        cache.verify(chain, roots, datetime(2019, 1, 1, tzinfo=UTC))
    cache.verify(other, roots, now)
    assert len(cache) == 1  # the least recently used chain was evicted
    with pytest.raises(CertificateInvalid):
        cache.verify(chain[:1] + chain[2:], roots, now)
    with pytest.raises(ValueError):
        nvgpu.ChainCache(size=0)


class _NoXmlSignatures:
    def verify(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("the XML signature was checked again")


def test_cached_rims_give_the_same_claims_and_still_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = nvgpu.ChainCache()
    rims = evidence(
        "nvtrust_v2.0.0_attestationReport.txt", "nvtrust_v2.0.0_gpuAkCertChain.txt", DRIVER_RIM_TEST, VBIOS_RIM_TEST
    )
    fresh = nvgpu.verify(rims, nvgpu.VerifyOptions(now=RIM_TIME))
    assert nvgpu.verify(rims, nvgpu.VerifyOptions(now=RIM_TIME, cache=cache)) == fresh
    monkeypatch.setattr(rim_module, "XMLVerifier", _NoXmlSignatures)
    assert nvgpu.verify(rims, nvgpu.VerifyOptions(now=RIM_TIME, cache=cache)) == fresh
    with pytest.raises(AssertionError):
        nvgpu.verify(rims, nvgpu.VerifyOptions(now=RIM_TIME))
    with pytest.raises(CertificateInvalid) as caught:
        nvgpu.verify(rims, nvgpu.VerifyOptions(now=datetime(2026, 1, 1, tzinfo=UTC), cache=cache))
    assert caught.value.check == "rim_chain" and "expired" in caught.value.message
