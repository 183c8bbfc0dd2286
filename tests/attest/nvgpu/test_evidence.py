"""Evidence formats (NVIDIA's list, this package's JSON, hex and raw files) and several GPUs at once."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from tests.attest.nvgpu.nvvectors import (
    DRIVER_RIM_TEST,
    NV,
    RIM_TIME,
    VALID,
    VBIOS_RIM_TEST,
    evidence,
    evidence_list,
    gpu,
)
from tests.attest.vectors import vector

from cloister.attest import nvgpu
from cloister.errors import ConfigError, EvidenceMalformed, StaleEvidence, VerificationFailed

V2 = ("nvtrust_v2.0.0_attestationReport.txt", "nvtrust_v2.0.0_gpuAkCertChain.txt")


def test_json_round_trip_keeps_everything() -> None:
    original = evidence(*V2, DRIVER_RIM_TEST, VBIOS_RIM_TEST)
    wire = json.loads(json.dumps(original.to_json()))
    assert wire["platform"] == "nvgpu"
    again = nvgpu.Evidence.from_json(wire)
    assert again == original
    options = nvgpu.VerifyOptions(now=RIM_TIME)
    assert nvgpu.verify(again, options) == nvgpu.verify(original, options)


def test_evidence_list_round_trip() -> None:
    original = evidence_list("nvtrust_gpu_evidence.json")
    assert nvgpu.Evidence.from_json(original.to_json()) == original
    assert {g.arch for g in original.gpus} == {"HOPPER"} and len(original.gpus) == 8


def test_claims_to_json_is_plain_json() -> None:
    claims = nvgpu.verify(evidence(*V2, DRIVER_RIM_TEST, VBIOS_RIM_TEST), nvgpu.VerifyOptions(now=RIM_TIME))
    wire = json.loads(json.dumps(claims.to_json()))
    assert wire["platform"] == "nvgpu" and wire["debug"] is False
    assert wire["report_data"] == VALID[1].nonce
    (gpu_json,) = wire["gpus"]
    assert gpu_json["measurements_matched"] is True and gpu_json["comparison"]["mismatches"] == []
    assert gpu_json["opaque"]["DRIVER_VERSION"] == b"545.00\x00".hex()
    assert len(gpu_json["blocks"]) == 64 and [r["kind"] for r in gpu_json["rims"]] == ["driver", "vbios"]


def test_from_files_hex_raw_and_json(tmp_path: Path) -> None:
    pair = VALID[0]
    hex_form = nvgpu.Evidence.from_files(vector(NV + pair.report), certs=vector(NV + pair.chain))
    raw = tmp_path / "report.bin"
    raw.write_bytes(gpu(pair.report, pair.chain).report)
    der = tmp_path / "chain.der"
    der.write_bytes(b"".join(cert.der for cert in gpu(pair.report, pair.chain).certificates))
    raw_form = nvgpu.Evidence.from_files(raw, certs=der)
    assert hex_form == raw_form == evidence(pair.report, pair.chain)
    listed = nvgpu.Evidence.from_files(vector(NV + "nvsdk_evidence_hopper_590_12.json"))
    assert listed == evidence_list("nvsdk_evidence_hopper_590_12.json")
    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps(hex_form.to_json()))
    assert nvgpu.Evidence.from_files(ours) == hex_form


def test_from_files_reads_a_rim_folder_or_file(tmp_path: Path) -> None:
    for name in (DRIVER_RIM_TEST, VBIOS_RIM_TEST):
        (tmp_path / name).write_bytes(vector(NV + name).read_bytes())
    (tmp_path / "notes.txt").write_text("not a RIM")
    loaded = nvgpu.Evidence.from_files(vector(NV + V2[0]), certs=vector(NV + V2[1]), rims=tmp_path)
    assert loaded == evidence(*V2, VBIOS_RIM_TEST, DRIVER_RIM_TEST)
    assert nvgpu.verify(loaded, nvgpu.VerifyOptions(now=RIM_TIME)).gpus[0].measurements_matched
    single = nvgpu.Evidence.from_files(vector(NV + V2[0]), certs=vector(NV + V2[1]), rims=vector(NV + DRIVER_RIM_TEST))
    assert len(single.rims) == 1


def test_from_files_usage_errors(tmp_path: Path) -> None:
    report, chain = vector(NV + VALID[0].report), vector(NV + VALID[0].chain)
    listed = vector(NV + "nvtrust_gpu_evidence.json")
    with pytest.raises(ConfigError, match="--certs"):
        nvgpu.Evidence.from_files(report)
    with pytest.raises(ConfigError, match="drop --certs"):
        nvgpu.Evidence.from_files(listed, certs=chain)
    with pytest.raises(ConfigError, match="collateral"):
        nvgpu.Evidence.from_files(report, certs=chain, collateral=tmp_path)
    with pytest.raises(ConfigError, match=r"no \*\.xml"):
        nvgpu.Evidence.from_files(report, certs=chain, rims=tmp_path)
    with pytest.raises(ConfigError, match="cannot read"):
        nvgpu.Evidence.from_files(tmp_path / "missing.txt", certs=chain)
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(EvidenceMalformed):
        nvgpu.Evidence.from_files(broken)
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    with pytest.raises(EvidenceMalformed):
        nvgpu.Evidence.from_files(report, certs=empty)


@pytest.mark.parametrize(
    "data",
    [
        "nope",
        {"platform": "snp", "gpus": []},
        {"gpus": []},
        {"gpus": "x"},
        {"gpus": [1]},
        {"gpus": [{"evidence": 1, "certificate": ""}]},
        {"gpus": [{"evidence": "!!", "certificate": ""}]},
        {"gpus": [{"evidence": "", "certificate": "", "arch": 5}]},
        {"gpus": [{"evidence": "", "certificate": "", "nonce": 5}]},
        {"gpus": [{"evidence": "", "certificate": "", "nonce": "zz"}]},
        {"gpus": [{"evidence": "", "certificate": ""}]},
        {"gpus": [{"evidence": "", "certificate": "LS0t"}], "rims": "x"},
    ],
)
def test_malformed_evidence_json(data: object) -> None:
    with pytest.raises(EvidenceMalformed) as caught:
        nvgpu.Evidence.from_json(data)
    assert caught.value.check in {"evidence", "der", "pem"}


def test_eight_gpus_share_one_nonce_and_one_measurement() -> None:
    claims = nvgpu.verify(evidence_list("nvtrust_gpu_evidence.json"))
    digest = claims.gpus[0].measurement_digest
    assert {g.measurement_digest for g in claims.gpus} == {digest}  # eight identical H100s
    assert claims.measurement == hashlib.sha256(digest * 8).hexdigest()
    assert claims.report_data.hex() == "4760e30534a0621357d458b1a7936551b5dc4cd1e69718adf7ed9fb0252a537e"


def test_the_same_gpu_twice_is_refused() -> None:
    one = gpu(VALID[0].report, VALID[0].chain)
    with pytest.raises(VerificationFailed) as caught:
        nvgpu.verify(nvgpu.Evidence((one, one)))
    assert caught.value.check == "distinct_gpus"


def test_gpus_answering_different_nonces_are_stale() -> None:
    with pytest.raises(StaleEvidence) as caught:
        nvgpu.verify(nvgpu.Evidence((gpu(VALID[0].report, VALID[0].chain), gpu(VALID[2].report, VALID[2].chain))))
    assert caught.value.check == "nonce"


def test_declared_nonce_and_architecture_are_checked() -> None:
    one = gpu(VALID[0].report, VALID[0].chain)
    with pytest.raises(StaleEvidence) as stale:
        nvgpu.verify(nvgpu.Evidence((replace(one, nonce=bytes(32)),)))
    assert stale.value.check == "nonce" and stale.value.message.startswith("GPU 0: ")
    with pytest.raises(VerificationFailed) as arch:
        nvgpu.verify(nvgpu.Evidence((replace(one, arch="BLACKWELL"),)))
    assert arch.value.check == "arch"


def test_no_gpu_is_malformed() -> None:
    with pytest.raises(EvidenceMalformed):
        nvgpu.verify(nvgpu.Evidence(()))
