"""Evidence collection inside a confidential VM: Linux configfs-tsm for SEV-SNP and TDX guests, NVML for GPUs.

configfs-tsm (``/sys/kernel/config/tsm/report``) is the kernel's one interface for both vendors: make a report
folder, write up to 64 bytes of report data to ``inblob``, read the signed report from ``outblob`` (and, on SNP,
the certificate table from ``auxblob``). ``generation`` counts writes to the folder, so reading it before and after
tells whether another process wrote its own report data in between; then the report is not ours and is retried.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from cloister.errors import CollectionError, ConfigError, EvidenceMalformed

TSM_REPORT_ROOT = Path("/sys/kernel/config/tsm/report")
INBLOB_MAX = 64
PRIVLEVEL_MAX = 3

# GUIDs of the SEV-SNP extended-report certificate table (AMD SEV-SNP ABI, "certificate table").
SNP_CERT_GUIDS = {
    "63da758d-e664-4564-adc5-f4b93be8accd": "vcek",
    "a8074bc2-a25a-483e-aae6-39c045a0b8a1": "vlek",
    "4ab7b379-bbac-4fe4-a02f-05aef327c782": "ask",
    "c0b406a4-a803-4952-9743-3fb6014cd0ae": "ark",
}
_CERT_ENTRY = 24  # 16-byte GUID, u32 offset, u32 length


@dataclass(frozen=True)
class TsmReport:
    """What configfs-tsm returned for one request."""

    provider: str
    """``sev_guest`` or ``tdx_guest`` (the kernel driver that produced the report)."""
    outblob: bytes
    auxblob: bytes
    generation: int


class ConfigfsTsm:
    """One configfs-tsm report interface; ``root`` is injectable so tests can use a fake tree."""

    def __init__(self, root: Path = TSM_REPORT_ROOT) -> None:
        self.root = root

    def available(self) -> bool:
        return self.root.is_dir()

    def report(
        self, report_data: bytes, *, privlevel: int | None = None, entry: str | None = None, attempts: int = 3
    ) -> TsmReport:
        """Produce a report binding ``report_data`` (≤ 64 bytes, zero-padded by the kernel)."""
        if len(report_data) > INBLOB_MAX:
            raise CollectionError(f"report data is {len(report_data)} bytes; at most {INBLOB_MAX}", check="inblob")
        if privlevel is not None and not 0 <= privlevel <= PRIVLEVEL_MAX:
            raise CollectionError(f"privlevel must be 0..{PRIVLEVEL_MAX}", check="privlevel")
        if not self.available():
            raise ConfigError(
                f"{self.root} does not exist: this is not a confidential VM with configfs-tsm "
                "(needs Linux ≥ 6.7, the sev-guest or tdx-guest driver, and configfs mounted)"
            )
        folder = self.root / (entry or f"cloister-{uuid.uuid4().hex[:12]}")
        created = not folder.exists()
        if created:
            folder.mkdir()
        try:
            for _ in range(attempts):
                result = self._attempt(folder, report_data, privlevel)
                if result is not None:
                    return result
            raise CollectionError(
                f"another process kept writing to {folder} during {attempts} attempts; retry when it is idle",
                check="generation",
            )
        finally:
            if created:
                folder.rmdir()

    def _attempt(self, folder: Path, report_data: bytes, privlevel: int | None) -> TsmReport | None:
        if privlevel is not None:
            _write(folder / "privlevel", str(privlevel).encode())
        _write(folder / "inblob", report_data)
        before = _read_int(folder / "generation")
        outblob = _read(folder / "outblob")
        auxblob = _read(folder / "auxblob") if (folder / "auxblob").exists() else b""
        provider = _read(folder / "provider").decode(errors="replace").strip()
        if _read_int(folder / "generation") != before:
            return None
        if not outblob:
            raise CollectionError(f"{folder}/outblob is empty: the TSM produced no report", check="outblob")
        return TsmReport(provider, outblob, auxblob, before)


def _write(path: Path, data: bytes) -> None:
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as exc:
        raise CollectionError(f"cannot write {path}: {exc.strerror}", check=path.name) from None
    try:
        os.write(fd, data)
    except OSError as exc:
        raise CollectionError(f"the TSM refused {path.name}: {exc.strerror}", check=path.name) from None
    finally:
        os.close(fd)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CollectionError(f"cannot read {path}: {exc.strerror}", check=path.name) from None


def _read_int(path: Path) -> int:
    text = _read(path).strip()
    try:
        return int(text)
    except ValueError:
        raise CollectionError(f"{path} holds {text!r}, not a number", check=path.name) from None


def parse_snp_cert_table(table: bytes) -> dict[str, bytes]:
    """The certificates of an SNP extended report's table, by name (``vcek``, ``vlek``, ``ask``, ``ark``)."""
    certs: dict[str, bytes] = {}
    offset = 0
    while True:
        if offset + _CERT_ENTRY > len(table):
            raise EvidenceMalformed("SNP certificate table has no terminating entry", check="cert_table")
        raw_guid = table[offset : offset + 16]
        if raw_guid == bytes(16):
            return certs
        guid = str(uuid.UUID(bytes_le=raw_guid))
        start = int.from_bytes(table[offset + 16 : offset + 20], "little")
        length = int.from_bytes(table[offset + 20 : offset + 24], "little")
        if start + length > len(table) or length == 0:
            raise EvidenceMalformed(f"SNP certificate table entry {guid} points outside the table", check="cert_table")
        name = SNP_CERT_GUIDS.get(guid)
        if name is not None:
            certs[name] = table[start : start + length]
        offset += _CERT_ENTRY


def build_snp_cert_table(certs: dict[str, bytes]) -> bytes:
    """The inverse of :func:`parse_snp_cert_table` (hosts publish this table; tests build fake trees with it)."""
    by_name = {name: guid for guid, name in SNP_CERT_GUIDS.items()}
    header = bytearray()
    body = bytearray()
    data_start = _CERT_ENTRY * (len(certs) + 1)
    for name, der in certs.items():
        header += uuid.UUID(by_name[name]).bytes_le
        header += (data_start + len(body)).to_bytes(4, "little") + len(der).to_bytes(4, "little")
        body += der
    return bytes(header + bytes(_CERT_ENTRY) + body)


def collect_nvidia_gpu_evidence(nonce: bytes) -> list[tuple[bytes, bytes]]:
    """(attestation report, certificate chain) of every GPU through NVML; needs the ``nvidia`` extra and CC mode."""
    if len(nonce) != 32:
        raise CollectionError("the GPU nonce is 32 bytes", check="nonce")
    try:
        import pynvml  # type: ignore[import-not-found]  # the optional `nvidia` extra
    except ImportError:
        raise ConfigError(
            "NVIDIA GPU evidence needs NVML: `pip install 'cloister[nvidia]'` (nvidia-ml-py) on a machine whose "
            "GPUs run in confidential-computing mode with the NVIDIA driver loaded"
        ) from None
    pynvml.nvmlInit()
    try:
        evidence = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            report = pynvml.nvmlDeviceGetConfComputeGpuAttestationReport(handle, nonce)
            certs = pynvml.nvmlDeviceGetConfComputeGpuCertificate(handle)
            evidence.append(
                (
                    bytes(report.attestationReport[: report.attestationReportSize]),
                    bytes(certs.attestationCertChain[: certs.attestationCertChainSize]),
                )
            )
        return evidence
    finally:
        pynvml.nvmlShutdown()
