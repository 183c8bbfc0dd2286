"""The sim vendor's root on disk (a devnet's), and the chips it certifies."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from tests.attest.sim.fixtures import ISSUED, NOW

from cloister.attest import sim
from cloister.attest.der import parse_pem_certificates
from cloister.attest.pki import verify_chain
from cloister.attest.sim.identity import ChipIdentity
from cloister.errors import ConfigError, EvidenceMalformed, KeystoreError


def test_create_then_load_gives_the_same_root(tmp_path: Path) -> None:
    folder = tmp_path / "sim-vendor"
    created = sim.SimVendor.create(folder, now=ISSUED)
    assert stat.S_IMODE((folder / "root.key").stat().st_mode) == 0o600
    loaded = sim.SimVendor.load(folder)
    assert loaded.certificate == created.certificate and loaded.root_pem == created.root_pem
    assert parse_pem_certificates(loaded.root_pem) == [created.certificate]
    chip = loaded.issue_chip("node-9", now=ISSUED)
    report = chip.cpu_report(bytes(64), measurement=bytes(48))
    claims = sim.verify(chip.evidence(report), sim.VerifyOptions(now=NOW, roots=(created.certificate,)))
    assert claims.report.chip_id == "node-9"


def test_create_never_overwrites(tmp_path: Path) -> None:
    sim.SimVendor.create(tmp_path)
    with pytest.raises(ConfigError, match="already holds a sim vendor"):
        sim.SimVendor.create(tmp_path)
    (tmp_path / "root.key").unlink()
    with pytest.raises(KeystoreError, match="refusing to overwrite"):
        sim.SimVendor.create(tmp_path)  # root.pem is still there


def test_load_refuses_missing_broken_and_mismatched_folders(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no sim vendor"):
        sim.SimVendor.load(tmp_path)
    first, second = tmp_path / "a", tmp_path / "b"
    sim.SimVendor.create(first)
    sim.SimVendor.create(second)
    (first / "root.key").write_bytes((second / "root.key").read_bytes())
    with pytest.raises(ConfigError, match="does not match"):
        sim.SimVendor.load(first)
    (first / "root.key").write_text("not a key")
    with pytest.raises(ConfigError, match="unreadable"):
        sim.SimVendor.load(first)
    (second / "root.pem").write_text("")
    with pytest.raises(ConfigError, match="one sim root certificate"):
        sim.SimVendor.load(second)


def test_chips_are_certified_by_the_root_with_their_identity() -> None:
    vendor = sim.SimVendor.generate(now=ISSUED)
    chip = vendor.issue_chip("gpu-3", kind="gpu", tcb_version=9, now=ISSUED)
    assert chip.identity == ChipIdentity("gpu", "gpu-3", 9) == ChipIdentity.of(chip.certificate)
    assert verify_chain([chip.certificate], [vendor.certificate], now=NOW) == vendor.certificate
    assert chip.certificate.serial > 0 and vendor.certificate.serial > 0
    assert chip.certificate.not_before < ISSUED < chip.certificate.not_after


@pytest.mark.parametrize(
    ("chip_id", "options", "error"),
    [
        ("", {}, EvidenceMalformed),
        ("has space", {}, EvidenceMalformed),
        ("x" * 33, {}, EvidenceMalformed),
        ("ok", {"kind": "tpm"}, ConfigError),
        ("ok", {"tcb_version": -1}, EvidenceMalformed),
    ],
)
def test_issue_chip_checks_its_arguments(chip_id: str, options: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        sim.SimVendor.generate().issue_chip(chip_id, **options)  # type: ignore[arg-type]
