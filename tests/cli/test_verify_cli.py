"""`cloister verify evidence` on real vendor evidence: claims, checklist, exit status, JSON."""

from __future__ import annotations

import json
from pathlib import Path

from tests.attest.vectors import vector
from typer.testing import CliRunner

from cloister.attest.sim import SimVendor
from cloister.cli.main import app

runner = CliRunner()


def verify(*args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = runner.invoke(app, ["verify", "evidence", *args, "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_snp_report_is_authentic_but_debug_is_refused_by_default() -> None:
    common = [
        str(vector("snp/gosev_attestation.bin")),
        "--certs", str(vector("snp/gosev_vcek.testcer")),
        "--certs", str(vector("snp/gosev_ask_ark_milan.pem")),
        "--at", "2023-01-01T00:00:00Z",
    ]  # fmt: skip
    code, body = verify(*common, "--no-policy")
    assert code == 0 and body["ok"] and body["platform"] == "snp"
    assert body["claims"]["measurement"].startswith("b07af9620f3b839b")
    assert [c["name"] for c in body["checks"] if not c["passed"]] == []

    code, body = verify(*common)
    assert code == 1 and body["error"]["code"] == "policy_violation"
    assert body["checks"][-1] == {"name": "debug", "passed": False, "detail": body["error"]["message"]}

    code, body = verify(*common, "--no-policy", "--nonce", "0102030405")
    assert code == 0, body
    code, body = verify(*common, "--no-policy", "--nonce", "0102030406")
    assert code == 1 and body["error"]["code"] == "stale_evidence"


def test_snp_report_outside_certificate_validity_is_refused() -> None:
    code, body = verify(
        str(vector("snp/gosev_attestation.bin")),
        "--certs", str(vector("snp/gosev_vcek.testcer")),
        "--certs", str(vector("snp/gosev_ask_ark_milan.pem")),
        "--at", "2031-01-01T00:00:00Z", "--no-policy",
    )  # fmt: skip
    assert code == 1 and body["error"]["code"] == "certificate_invalid"


def test_nvidia_evidence_nonce_and_detection() -> None:
    report = str(vector("nvgpu/nvtrust_hopperAttestationReport.txt"))
    chain = str(vector("nvgpu/nvtrust_hopperCertChain.txt"))
    nonce = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
    code, body = verify(report, "--certs", chain, "--nonce", nonce, "--no-policy")
    assert code == 0 and body["platform"] == "nvgpu", body
    code, body = verify(report, "--certs", chain, "--nonce", "00" * 32, "--no-policy")
    assert code == 1 and body["error"]["code"] == "stale_evidence"


def test_human_output_is_a_checklist() -> None:
    result = runner.invoke(
        app,
        [
            "verify", "evidence", str(vector("nvgpu/nvsdk_sad_hopperAttestationReportInvalidSignature.txt")),
            "--certs", str(vector("nvgpu/nvsdk_sad_hopperCertChainExpired.txt")), "--platform", "nvgpu",
        ],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "✗" in result.stdout and "rejected" in result.stdout


def test_tdx_quote_with_its_embedded_pck_chain() -> None:
    quote = str(vector("tdx/gotdx_tdx_prod_quote_SPR_E4.dat"))
    report_data = (
        "6c62dec1b8191749a31dab490be532a35944dea47caef1f980863993d9899545"
        "eb7406a38d1eed313b987a467dacead6f0c87a6d766c66f6f29f8acb281f1113"
    )
    code, body = verify(quote, "--at", "2023-07-01T01:00:00Z", "--no-policy", "--nonce", report_data)
    assert code == 0 and body["platform"] == "tdx", body
    assert body["claims"]["measurement"].startswith("6363b8043668a3ad")
    code, body = verify(quote, "--at", "2053-07-01T01:00:00Z", "--no-policy")
    assert code == 1 and body["error"]["code"] == "certificate_invalid"
    code, body = verify(quote, "--at", "2023-07-01T01:00:00Z")
    assert code == 1 and body["error"]["code"] == "policy_violation", "the default policy needs Intel collateral"


def test_sim_evidence_needs_the_devnet_root_and_a_policy_that_allows_it(tmp_path: Path) -> None:
    vendor = SimVendor.create(tmp_path / "vendor")
    chip = vendor.issue_chip("chip-1")
    measurement = bytes(range(48))
    report = chip.cpu_report(b"\x07" * 64, measurement=measurement)
    (tmp_path / "report.bin").write_bytes(report)
    (tmp_path / "chip.der").write_bytes(chip.evidence(report).chip_certificate)
    (tmp_path / "root.pem").write_text(vendor.root_pem)
    common = [str(tmp_path / "report.bin"), "--platform", "sim", "--certs", str(tmp_path / "chip.der")]
    roots = ["--roots", str(tmp_path / "root.pem")]

    code, body = verify(*common, "--no-policy")
    assert code == 1 and body["error"]["code"] == "certificate_invalid", "a simulator has no pinned roots"
    code, body = verify(*common, *roots, "--no-policy", "--nonce", "07" * 64)
    assert code == 0 and body["claims"]["measurement"] == measurement.hex(), body
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[sim]\nmeasurements = ["{"ff" * 48}"]\n')
    code, body = verify(*common, *roots, "--policy", str(policy))
    assert code == 1 and body["error"]["code"] == "policy_violation"
