"""configfs-tsm collection against a fake tree: the kernel's files, real evidence bytes, a concurrent writer."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from tests.attest.vectors import read

from cloister.attest.collect import ConfigfsTsm, build_snp_cert_table, collect_nvidia_gpu_evidence, parse_snp_cert_table
from cloister.errors import CollectionError, ConfigError, EvidenceMalformed

REPORT = "snp/gosev_attestation.bin"
VCEK = "snp/gosev_vcek.testcer"


def fake_entry(root: Path, name: str, *, provider: str = "sev_guest", outblob: bytes = b"", aux: bytes = b"") -> Path:
    """A report folder as the kernel presents it after mkdir."""
    entry = root / name
    entry.mkdir(parents=True)
    for attribute, value in {
        "inblob": b"",
        "privlevel": b"",
        "provider": provider.encode() + b"\n",
        "generation": b"0\n",
        "outblob": outblob,
    }.items():
        (entry / attribute).write_bytes(value)
    if aux:
        (entry / "auxblob").write_bytes(aux)
    return entry


def test_collects_report_and_cert_table(tmp_path: Path) -> None:
    report, vcek = read(REPORT), read(VCEK)
    entry = fake_entry(tmp_path, "r1", outblob=report, aux=build_snp_cert_table({"vcek": vcek}))
    result = ConfigfsTsm(tmp_path).report(b"\x01\x02\x03\x04\x05", privlevel=0, entry="r1")
    assert result.provider == "sev_guest"
    assert result.outblob == report
    assert parse_snp_cert_table(result.auxblob) == {"vcek": vcek}
    assert (entry / "inblob").read_bytes() == b"\x01\x02\x03\x04\x05"
    assert (entry / "privlevel").read_bytes() == b"0"
    assert entry.exists(), "a folder the caller named is left in place"


class FakeKernel(threading.Thread):
    """Answers each request — a write of ``inblob`` — by serving ``outblob``, both FIFOs, as the kernel makes the
    report when it is read; ``interfere[i]`` makes another writer bump ``generation`` during request i."""

    def __init__(self, entry: Path, interfere: list[bool]) -> None:
        super().__init__(daemon=True)
        self.entry, self.interfere = entry, interfere
        self.requests: list[bytes] = []
        for name in ("inblob", "outblob"):
            (entry / name).unlink()
            os.mkfifo(entry / name)

    def run(self) -> None:
        for bump in self.interfere:
            self.requests.append((self.entry / "inblob").read_bytes())
            with (self.entry / "outblob").open("wb") as blob:
                if bump:
                    generation = int((self.entry / "generation").read_text()) + 1
                    (self.entry / "generation").write_text(f"{generation}\n")
                blob.write(b"quote-%d" % len(self.requests))


def test_concurrent_writer_is_detected_and_retried(tmp_path: Path) -> None:
    entry = fake_entry(tmp_path, "r2", provider="tdx_guest")
    kernel = FakeKernel(entry, [True, False])
    kernel.start()
    result = ConfigfsTsm(tmp_path).report(b"nonce", entry="r2")
    kernel.join(5)
    assert kernel.requests == [b"nonce", b"nonce"], "the first, disturbed report was discarded and another asked"
    assert result.outblob == b"quote-2" and result.generation == 1 and result.provider == "tdx_guest"

    entry = fake_entry(tmp_path, "r3")
    kernel = FakeKernel(entry, [True, True])
    kernel.start()
    with pytest.raises(CollectionError, match="another process") as failure:
        ConfigfsTsm(tmp_path).report(b"nonce", entry="r3", attempts=2)
    kernel.join(5)
    assert failure.value.check == "generation"


def test_refusals_are_typed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configfs-tsm"):
        ConfigfsTsm(tmp_path / "absent").report(b"x")
    with pytest.raises(CollectionError, match="at most 64"):
        ConfigfsTsm(tmp_path).report(bytes(65))
    with pytest.raises(CollectionError, match="privlevel"):
        ConfigfsTsm(tmp_path).report(b"x", privlevel=4)
    fake_entry(tmp_path, "empty")
    with pytest.raises(CollectionError, match="no report"):
        ConfigfsTsm(tmp_path).report(b"x", entry="empty")
    broken = fake_entry(tmp_path, "broken")
    (broken / "generation").write_text("many\n")
    with pytest.raises(CollectionError, match="not a number"):
        ConfigfsTsm(tmp_path).report(b"x", entry="broken")


def test_a_fresh_folder_is_created_and_removed(tmp_path: Path) -> None:
    # A plain folder cannot grow attribute files the way configfs does, so the write fails — and is cleaned up.
    with pytest.raises(CollectionError, match="cannot write"):
        ConfigfsTsm(tmp_path).report(b"x")
    assert list(tmp_path.iterdir()) == []


def test_cert_table_round_trip_and_malformed_tables() -> None:
    certs = {"vcek": b"V" * 10, "ask": b"A" * 7, "ark": b"R" * 3}
    assert parse_snp_cert_table(build_snp_cert_table(certs)) == certs
    table = build_snp_cert_table(certs)
    for cut in (b"", table[:10]):
        with pytest.raises(EvidenceMalformed, match="terminating"):
            parse_snp_cert_table(cut)
    bad = bytearray(table)
    bad[20:24] = (10_000).to_bytes(4, "little")
    with pytest.raises(EvidenceMalformed, match="outside"):
        parse_snp_cert_table(bytes(bad))


def test_gpu_collection_without_nvml_says_what_to_install() -> None:
    with pytest.raises(CollectionError):
        collect_nvidia_gpu_evidence(b"short")
    try:
        import pynvml  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"cloister\[nvidia\]"):
            collect_nvidia_gpu_evidence(bytes(32))
