"""The real-hardware platform against a fake configfs-tsm tree whose "kernel" signs reports under a private AMD or
Intel PKI: the TCB it builds passes appraisal only with the report data bound to these loader keys, this GPU
evidence and this nonce."""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from tests.attest.collect.test_configfs_tsm import fake_entry
from tests.attest.nvgpu.nvvectors import DRIVER_RIM_TEST, NONCE_931D, NV, gpu, rim
from tests.attest.snp.amdpki import NOW, TURIN_CHIP, TURIN_TCB, AmdPki, turin_report
from tests.attest.tdx.forge import TestPki, sgx_extension_of
from tests.attest.vectors import read
from tests.cli.test_cli import run

from cloister.attest.collect import ConfigfsTsm, build_snp_cert_table, collect_nvidia_gpu_evidence
from cloister.attest.policy import AppraisalPolicy
from cloister.attest.sim import SimVendor
from cloister.attest.tcb import TRUSTED, Tcb, appraise, expected_report_data
from cloister.attest.tdx.quote import parse_quote
from cloister.crypto.identity import Identity
from cloister.errors import (
    CertificateInvalid,
    CollectionError,
    ConfigError,
    EvidenceMalformed,
    StaleEvidence,
    VerificationFailed,
)
from cloister.node.platform import ConfigfsTsmPlatform, PlatformChoice, SimPlatform, detect_platform

LOADER = Identity.generate().public
NONCE = NONCE_931D  # the nonce the Hopper vector answers, so the GPU evidence is real and fresh for this challenge
SPECS = {"cpu_cores": 8, "memory_gib": 32, "gpus": ["H100"], "disk_gib": 100}
ENTRY = "node"
TDX_QUOTE = "tdx/gotdx_tdx_prod_quote_SPR_E4.dat"
TDX_TIME = datetime(2025, 1, 1, tzinfo=UTC)
Signer = Callable[[bytes], bytes]


class FakeTsm(threading.Thread):
    """The kernel side of one report folder: each write of ``inblob`` is answered on ``outblob`` (both FIFOs) by
    ``sign(report data)``; ``interfere[i]`` makes another writer bump ``generation`` during request ``i``."""

    def __init__(self, entry: Path, sign: Signer, interfere: tuple[bool, ...] = (False,)) -> None:
        super().__init__(daemon=True)
        self.entry, self.sign, self.interfere = entry, sign, interfere
        self.requests: list[bytes] = []
        for name in ("inblob", "outblob"):
            (entry / name).unlink()
            os.mkfifo(entry / name)

    def run(self) -> None:
        for bump in self.interfere:
            report_data = (self.entry / "inblob").read_bytes()
            self.requests.append(report_data)
            with (self.entry / "outblob").open("wb") as blob:
                if bump:
                    generation = int((self.entry / "generation").read_text()) + 1
                    (self.entry / "generation").write_text(f"{generation}\n")
                blob.write(self.sign(report_data.ljust(64, b"\0")))


@dataclasses.dataclass(frozen=True)
class Amd:
    pki: AmdPki
    chip: ec.EllipticCurvePrivateKey

    def sign(self, report_data: bytes) -> bytes:
        return turin_report(self.chip, report_data=report_data)

    @property
    def cert_table(self) -> bytes:
        vcek = self.pki.vcek(self.chip, TURIN_TCB, hwid=TURIN_CHIP, product_name="Turin")
        return build_snp_cert_table({"vcek": vcek.der, "ask": self.pki.ask.der, "ark": self.pki.ark.der})


@pytest.fixture(scope="module")
def amd() -> Amd:
    return Amd(AmdPki(), ec.generate_private_key(ec.SECP384R1()))


def hopper(nonce: bytes) -> list[tuple[bytes, bytes]]:
    """An NVML stand-in answering with a real H100 report (which answers ``NONCE`` only) and its chain."""
    evidence = gpu("nvtrust_hopperAttestationReport.txt", "nvtrust_hopperCertChain.txt")
    return [(evidence.report, read(NV + "nvtrust_hopperCertChain.txt"))]


def collect(
    root: Path,
    sign: Signer,
    *,
    provider: str = "sev_guest",
    aux: bytes = b"",
    interfere: tuple[bool, ...] = (False,),
    **options: Any,
) -> tuple[Tcb, FakeTsm]:
    entry = fake_entry(root / "tsm", ENTRY, provider=provider, aux=aux)
    kernel = FakeTsm(entry, sign, interfere)
    kernel.start()
    platform = ConfigfsTsmPlatform(root / "evidence", ConfigfsTsm(root / "tsm"), entry=ENTRY, **options)
    try:
        return platform.collect(LOADER, NONCE, SPECS), kernel
    finally:
        kernel.join(5)


def policy(cpu: str, **tables: dict[str, Any]) -> AppraisalPolicy:
    return AppraisalPolicy(cpu_platforms=(cpu,), gpu_platforms=("nvgpu",), tables=tables)


GPU_UNPROVEN = {"require_rim_match": False, "allow_debug": True}  # no RIMs for the vector: firmware unproven
SNP_POLICY = policy("snp", nvgpu=GPU_UNPROVEN)


def snp_roots(amd: Amd) -> dict[str, Any]:
    return {"snp": [amd.pki.ark]}


def test_snp_tcb_binds_loader_keys_gpu_evidence_and_nonce(tmp_path: Path, amd: Amd) -> None:
    tcb, kernel = collect(tmp_path, amd.sign, aux=amd.cert_table, gpus=hopper)
    assert kernel.requests == [expected_report_data(LOADER, tcb.gpu, NONCE)]
    assert tcb.cpu.platform == "snp" and tcb.gpu is not None and tcb.gpu.platform == "nvgpu"
    assert (tcb.loader, tcb.nonce, tcb.specs) == (LOADER, NONCE, SPECS)
    assert Tcb.from_bytes(tcb.to_bytes()) == tcb, "what the ledger carries reads back the same"
    result = appraise(tcb, SNP_POLICY, now=NOW, expected_nonce=NONCE, roots_by_platform=snp_roots(amd))
    assert result.verdict == TRUSTED
    names = {item.name for item in result.checklist.items}
    assert {"loader_binding", "gpu_binding", "gpu_nonce", "nonce", "cpu.vcek_chain"} <= names
    assert sorted(path.name for path in (tmp_path / "evidence").iterdir()) == [
        "nvgpu-evidence.json",
        "snp-certs.bin",
        "snp-report.bin",
    ], "what was collected stays for `cloister verify evidence`"


def test_swapped_keys_swapped_gpu_and_a_replayed_tcb_are_refused(tmp_path: Path, amd: Amd) -> None:
    tcb, _ = collect(tmp_path, amd.sign, aux=amd.cert_table, gpus=hopper)
    roots = snp_roots(amd)
    swapped = dataclasses.replace(tcb, loader=Identity.generate().public)
    with pytest.raises(VerificationFailed) as caught:
        appraise(swapped, SNP_POLICY, now=NOW, expected_nonce=NONCE, roots_by_platform=roots)
    assert caught.value.check == "loader_binding"
    without_gpu = dataclasses.replace(tcb, gpu=None)
    with pytest.raises(VerificationFailed) as caught:
        appraise(without_gpu, SNP_POLICY, now=NOW, expected_nonce=NONCE, roots_by_platform=roots)
    assert caught.value.check == "gpu_binding"
    with pytest.raises(StaleEvidence) as stale:
        appraise(tcb, SNP_POLICY, now=NOW, expected_nonce=bytes(32), roots_by_platform=roots)
    assert stale.value.check == "nonce", "a TCB collected for an earlier challenge does not answer a new one"


def test_a_cpu_only_machine_binds_no_gpu(tmp_path: Path, amd: Amd) -> None:
    tcb, kernel = collect(tmp_path, amd.sign, aux=amd.cert_table, gpus=lambda nonce: [])
    assert tcb.gpu is None and kernel.requests == [expected_report_data(LOADER, None, NONCE)]
    assert kernel.requests[0][32:] != expected_report_data(LOADER, tcb.gpu, bytes(32))[32:], "the nonce is bound"
    result = appraise(tcb, SNP_POLICY, now=NOW, expected_nonce=NONCE, roots_by_platform=snp_roots(amd))
    assert result.verdict == TRUSTED and result.gpu is None


def test_a_report_disturbed_by_another_writer_is_discarded(tmp_path: Path, amd: Amd) -> None:
    tcb, kernel = collect(tmp_path, amd.sign, aux=amd.cert_table, interfere=(True, False))
    assert len(kernel.requests) == 2, "the generation moved during the first report, so it was asked again"
    appraise(tcb, SNP_POLICY, now=NOW, expected_nonce=NONCE, roots_by_platform=snp_roots(amd))
    with pytest.raises(CollectionError) as caught:
        collect(tmp_path / "busy", amd.sign, aux=amd.cert_table, interfere=(True, True, True))
    assert caught.value.check == "generation"


def test_snp_certificates_from_the_collateral_folder(tmp_path: Path, amd: Amd) -> None:
    """A host that does not publish the certificate table: the operator puts KDS certificates in collateral/."""
    collateral = tmp_path / "collateral"
    collateral.mkdir()
    vcek = amd.pki.vcek(amd.chip, TURIN_TCB, hwid=TURIN_CHIP, product_name="Turin")
    for name, cert in {"vcek.der": vcek, "ask.der": amd.pki.ask, "ark.der": amd.pki.ark}.items():
        (collateral / name).write_bytes(cert.der)
    tcb, _ = collect(tmp_path, amd.sign, collateral=collateral)
    assert not (tmp_path / "evidence" / "snp-certs.bin").exists()
    assert appraise(tcb, SNP_POLICY, now=NOW, expected_nonce=NONCE, roots_by_platform=snp_roots(amd)).verdict == TRUSTED
    bare, _ = collect(tmp_path / "bare", amd.sign)
    with pytest.raises(CertificateInvalid, match=r"kdsintf\.amd\.com"):
        appraise(bare, SNP_POLICY, now=NOW, expected_nonce=NONCE, roots_by_platform=snp_roots(amd))


def test_gpu_reference_measurements_come_from_the_rims_folder(tmp_path: Path, amd: Amd) -> None:
    rims = tmp_path / "rims"
    rims.mkdir()
    (rims / DRIVER_RIM_TEST).write_bytes(rim(DRIVER_RIM_TEST))
    tcb, kernel = collect(tmp_path, amd.sign, aux=amd.cert_table, gpus=hopper, rims=rims)
    assert tcb.gpu is not None and len(tcb.gpu.evidence["rims"]) == 1
    assert kernel.requests == [expected_report_data(LOADER, tcb.gpu, NONCE)], "the RIMs are bound with the reports"


def test_tdx_quote_binds_the_report_data(tmp_path: Path) -> None:
    real = read(TDX_QUOTE)
    pki = TestPki(sgx_extension_of(real))
    signed = parse_quote(real).signed

    def quote(report_data: bytes) -> bytes:  # a TDX 1.0 body ends with its 64 bytes of REPORTDATA
        return pki.requote(real, signed=signed[:-64] + report_data)

    tcb, kernel = collect(tmp_path, quote, provider="tdx_guest", gpus=hopper)
    assert tcb.cpu.platform == "tdx" and kernel.requests == [expected_report_data(LOADER, tcb.gpu, NONCE)]
    lenient = policy("tdx", nvgpu=GPU_UNPROVEN, tdx={"require_collateral": False, "require_revocation_check": False})
    result = appraise(tcb, lenient, now=TDX_TIME, expected_nonce=NONCE, roots_by_platform={"tdx": pki.roots})
    assert result.verdict == TRUSTED and result.cpu.report_data == kernel.requests[0]
    swapped = dataclasses.replace(tcb, loader=Identity.generate().public)
    with pytest.raises(VerificationFailed, match="loader keys"):
        appraise(swapped, lenient, now=TDX_TIME, expected_nonce=NONCE, roots_by_platform={"tdx": pki.roots})


def test_an_unknown_or_missing_provider_is_refused(tmp_path: Path, amd: Amd) -> None:
    with pytest.raises(CollectionError, match="'arm_cca_guest' is not one Cloister reads") as caught:
        collect(tmp_path / "cca", amd.sign, provider="arm_cca_guest")
    assert caught.value.check == "provider"
    with pytest.raises(CollectionError, match=r"'\(none\)'.*sev-guest or tdx-guest driver"):
        collect(tmp_path / "none", amd.sign, provider="")
    entry = fake_entry(tmp_path / "gone" / "tsm", ENTRY, outblob=amd.sign(bytes(64)))
    (entry / "provider").unlink()
    platform = ConfigfsTsmPlatform(tmp_path / "gone" / "evidence", ConfigfsTsm(tmp_path / "gone" / "tsm"), entry=ENTRY)
    with pytest.raises(CollectionError, match="cannot read") as caught:
        platform.collect(LOADER, NONCE, SPECS)
    assert caught.value.check == "provider"


def test_a_malformed_report_or_cert_table_is_refused(tmp_path: Path, amd: Amd) -> None:
    with pytest.raises(EvidenceMalformed, match="certificate table"):
        collect(tmp_path / "table", amd.sign, aux=amd.cert_table[:30])
    truncated, _ = collect(tmp_path / "short", lambda report_data: amd.sign(report_data)[:600], aux=amd.cert_table)
    with pytest.raises(EvidenceMalformed):
        appraise(truncated, SNP_POLICY, now=NOW, expected_nonce=NONCE, roots_by_platform=snp_roots(amd))


def test_detect_platform_prefers_the_tee_and_uses_the_simulator_only_by_name(tmp_path: Path) -> None:
    vendor = SimVendor.create(tmp_path / "vendor")
    sims: list[SimPlatform] = []

    def sim() -> SimPlatform:
        sims.append(SimPlatform(vendor, "chip"))
        return sims[-1]

    absent = tmp_path / "no-tsm"
    for choice in (PlatformChoice.auto, PlatformChoice.configfs_tsm):
        with pytest.raises(ConfigError, match="--platform sim"):
            detect_platform(choice, tmp_path / "node", sim=sim, tsm_root=absent)
    assert not sims, "no TEE is never silently a simulated one"
    assert detect_platform(PlatformChoice.sim, tmp_path / "node", sim=sim, tsm_root=absent) is sims[0]

    tsm, gpus, node = tmp_path / "tsm", tmp_path / "proc-gpus", tmp_path / "node"
    tsm.mkdir()
    gpus.mkdir()
    found = detect_platform(PlatformChoice.auto, node, sim=sim, tsm_root=tsm, nvidia_gpus=gpus)
    assert isinstance(found, ConfigfsTsmPlatform) and len(sims) == 1
    assert (found.tsm.root, found.folder, found.gpus, found.collateral, found.rims) == (
        tsm,
        node / "evidence",
        None,
        None,
        None,
    )
    (gpus / "0000:01:00.0").mkdir()
    (node / "collateral").mkdir(parents=True)
    (node / "rims").mkdir()
    found = detect_platform(PlatformChoice.configfs_tsm, node, sim=sim, tsm_root=tsm, nvidia_gpus=gpus)
    assert isinstance(found, ConfigfsTsmPlatform)
    assert (found.gpus, found.collateral, found.rims) == (
        collect_nvidia_gpu_evidence,
        node / "collateral",
        node / "rims",
    )


def test_node_run_refuses_a_machine_without_a_tee_unless_asked_for_the_simulator(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run(home, "devnet", "up")
    try:
        run(home, "account", "create", "node1", "--fund", "10")
        refused = run(home, "-a", "node1", "node", "run", "--once", check=False)
        assert refused.returncode != 0 and "--platform sim" in refused.stdout + refused.stderr
        assert "machine" not in refused.stdout, "nothing was registered"
        assert "machine" in run(home, "-a", "node1", "node", "run", "--once", "--platform", "sim").stdout
    finally:
        run(home, "devnet", "down", check=False)
