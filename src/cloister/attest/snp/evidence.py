"""SEV-SNP evidence: the report (raw or Azure-HCL-wrapped), the AMD certificates, and optionally AMD's CRL.

Everything needed to verify offline travels together, so a TCB record on the ledger can be re-verified by anyone.
"""

from __future__ import annotations

import base64
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloister.attest.snp.certs import load_certificates
from cloister.attest.snp.report import FirmwareVersion, Tcb, encode_report
from cloister.crypto.canonical import loads
from cloister.errors import ConfigError, EvidenceMalformed, MalformedInput

PLATFORM = "snp"
_CRL_NAMES = ("crl.der", "crl.pem")
_CERT_SUFFIXES = (".pem", ".der", ".cer", ".crt")


@dataclass(frozen=True)
class Evidence:
    report: bytes
    """The 1184-byte attestation report, or an Azure HCL report wrapping one."""
    certificates: tuple[bytes, ...] = ()
    """DER certificates: the VCEK or VLEK, and the ASK/ASVK and ARK (AMD KDS ``cert_chain``)."""
    crl: bytes | None = None
    """AMD's CRL for the product (KDS ``/vcek/v1/{product}/crl``), DER or PEM, when revocation is checked."""

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": PLATFORM,
            "report": _b64(self.report),
            "certificates": [_b64(der) for der in self.certificates],
            "crl": None if self.crl is None else _b64(self.crl),
        }

    @classmethod
    def from_json(cls, data: Any) -> Evidence:
        """The inverse of :meth:`to_json`; raises :class:`EvidenceMalformed` for anything else."""
        if not isinstance(data, dict) or data.get("platform") != PLATFORM or set(data) - _JSON_KEYS:
            raise EvidenceMalformed(
                'SNP evidence JSON must be {"platform": "snp", "report", "certificates", "crl"}', check="evidence"
            )
        certificates = data.get("certificates", [])
        if not isinstance(certificates, list):
            raise EvidenceMalformed("SNP evidence JSON: certificates must be a list", check="evidence")
        crl = data.get("crl")
        return cls(
            report=_unb64(data.get("report")),
            certificates=tuple(_unb64(item) for item in certificates),
            crl=None if crl is None else _unb64(crl),
        )

    @classmethod
    def from_files(
        cls, path: Path, *, certs: Path | None = None, collateral: Path | None = None, rims: Path | None = None
    ) -> Evidence:
        """Evidence from what a guest or a cloud console hands out.

        ``path``: a raw report (binary or hex text), an Azure HCL report, this class's JSON, or the virtee/trustee
        JSON ``{"attestation_report": {...}, "cert_chain": [...]}``. ``certs``: a PEM bundle, a DER certificate or
        the guest's certificate table (configfs-tsm ``auxblob``). ``collateral``: a folder whose ``crl.der`` or
        ``crl.pem`` is AMD's CRL and whose other ``*.pem``, ``*.der``, ``*.cer`` and ``*.crt`` files are more
        certificates (e.g. KDS ``cert_chain``).
        """
        if rims is not None:
            raise ConfigError("reference measurements (--rims) apply to NVIDIA GPU evidence, not to SEV-SNP")
        evidence = _read_evidence(_read(path))
        extra: list[bytes] = []
        crl = evidence.crl
        if certs is not None:
            extra += load_certificates(_read(certs))
        if collateral is not None:
            if not collateral.is_dir():
                raise ConfigError(f"{collateral} is not a folder: --collateral names a folder of AMD certs/CRL")
            for file in sorted(collateral.iterdir()):
                if file.name in _CRL_NAMES:
                    crl = _read(file)
                elif file.suffix in _CERT_SUFFIXES:
                    extra += load_certificates(_read(file))
        unique = dict.fromkeys([*evidence.certificates, *extra])
        return cls(report=evidence.report, certificates=tuple(unique), crl=crl)


_JSON_KEYS = {"platform", "report", "certificates", "crl"}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise EvidenceMalformed("SNP evidence JSON: expected a base64 string", check="evidence")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise EvidenceMalformed("SNP evidence JSON: a value is not base64", check="evidence") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def _read_evidence(data: bytes) -> Evidence:
    text = data.strip()
    if text.startswith(b"{"):
        try:
            document = loads(text)
        except MalformedInput as exc:
            raise EvidenceMalformed(f"SNP evidence: {exc.message}", check="evidence") from None
        if isinstance(document, dict) and "attestation_report" in document:
            return _from_virtee(document)
        return Evidence.from_json(document)
    if text and all(chr(byte) in string.hexdigits + string.whitespace for byte in text):
        try:
            return Evidence(report=bytes.fromhex(text.decode("ascii")))
        except ValueError:
            raise EvidenceMalformed("SNP report hex text has an odd number of digits", check="evidence") from None
    return Evidence(report=data)


def _field(table: Any, name: str, kind: type) -> Any:
    value = table.get(name) if isinstance(table, dict) else None
    if kind is bytes:
        if not isinstance(value, list) or not all(isinstance(x, int) and 0 <= x <= 0xFF for x in value):
            raise EvidenceMalformed(f"virtee report JSON: {name} must be a list of bytes", check="evidence")
        return bytes(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise EvidenceMalformed(f"virtee report JSON: {name} must be a non-negative integer", check="evidence")
    return value


def _tcb(table: Any, name: str) -> int:
    tcb = table.get(name) if isinstance(table, dict) else None
    if not isinstance(tcb, dict):
        raise EvidenceMalformed(f"virtee report JSON: {name} must be an object", check="evidence")
    turin = tcb.get("fmc") is not None
    parts = {key: _field(tcb, key, int) for key in ("bootloader", "tee", "snp", "microcode")}
    if turin:
        parts["fmc"] = _field(tcb, "fmc", int)
    return Tcb.encode(parts, turin=turin).raw


def _from_virtee(document: dict[str, Any]) -> Evidence:
    """Rebuild the ABI report from virtee's serde JSON (used by trustee); its signature then proves the rebuild."""
    table = document["attestation_report"]
    fields: dict[str, int | bytes] = {
        name: _field(table, name, int) for name in ("version", "guest_svn", "policy", "vmpl")
    }
    fields |= {name: _field(table, source, int) for name, source in _VIRTEE_RENAMED.items()}
    fields |= {name: _field(table, name, bytes) for name in _VIRTEE_BYTES}
    fields |= {name: _tcb(table, name) for name in ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb")}
    for name in ("launch_mit_vector", "current_mit_vector"):
        if table.get(name) is not None:
            fields[name] = _field(table, name, int)
    cpuid = None
    if table.get("cpuid_fam_id") is not None:
        cpuid = (
            _field(table, "cpuid_fam_id", int),
            _field(table, "cpuid_mod_id", int),
            _field(table, "cpuid_step", int),
        )
    versions = [table.get(name) for name in ("current", "committed")]
    current, committed = (
        FirmwareVersion(_field(v, "major", int), _field(v, "minor", int), _field(v, "build", int)) for v in versions
    )
    signature = table.get("signature")
    r, s = (int.from_bytes(_field(signature, name, bytes), "little") for name in ("r", "s"))
    report = encode_report(fields, cpuid=cpuid, current_version=current, committed_version=committed, signature=(r, s))
    chain = document.get("cert_chain") or []
    if not isinstance(chain, list):
        raise EvidenceMalformed("virtee report JSON: cert_chain must be a list", check="evidence")
    certificates = [der for entry in chain for der in load_certificates(_field(entry, "data", bytes))]
    return Evidence(report=report, certificates=tuple(certificates))


_VIRTEE_RENAMED = {"signature_algo": "sig_algo", "platform_info": "plat_info", "signer_info": "key_info"}
_VIRTEE_BYTES = (
    "family_id",
    "image_id",
    "report_data",
    "measurement",
    "host_data",
    "id_key_digest",
    "author_key_digest",
    "report_id",
    "report_id_ma",
    "chip_id",
)
