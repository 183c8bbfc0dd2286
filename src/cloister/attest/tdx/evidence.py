"""TDX evidence as it travels: the quote bytes, optional Intel PCS collateral and an optional CCEL event log.

Everything is kept as the raw bytes that were produced or fetched, so signatures are always checked over exactly
what the TD or Intel emitted; parsing happens in :func:`cloister.attest.tdx.verify`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cloister.errors import ConfigError, EvidenceMalformed

PLATFORM = "tdx"

# File names looked for in a ``collateral`` folder (all optional). The PCS bodies are saved as received.
COLLATERAL_FILES = {
    "tcb_info": "tcb_info.json",  # GET /tdx/certification/v4/tcb?fmspc=… response body
    "qe_identity": "qe_identity.json",  # GET /tdx/certification/v4/qe/identity response body
    "signing_chain": "tcb_info_issuer_chain.pem",  # URL-decoded TCB-Info-Issuer-Chain response header
    "pck_crl": "pck_crl.der",  # GET /sgx/certification/v4/pckcrl?ca=platform|processor (DER, PEM or hex)
    "root_crl": "root_crl.der",  # the Intel SGX Root CA CRL (the root certificate's CRL distribution point)
}
CCEL_FILES = {
    "ccel_table": "ccel_table.bin",  # copy of /sys/firmware/acpi/tables/CCEL
    "ccel_data": "ccel_data.bin",  # copy of /sys/firmware/acpi/tables/data/CCEL
}


@dataclass(frozen=True)
class Collateral:
    """Intel PCS responses for one quote. The QE identity is signed by the same TCB Signing chain as TCB info."""

    tcb_info: bytes | None = None
    qe_identity: bytes | None = None
    signing_chain: bytes | None = None
    pck_crl: bytes | None = None
    root_crl: bytes | None = None


@dataclass(frozen=True)
class Evidence:
    quote: bytes
    """The quote as produced; bytes after the quote structure (padding) are kept and ignored."""
    collateral: Collateral = field(default_factory=Collateral)
    certs: bytes | None = None
    """Extra certificates (PEM or DER) offered as roots, e.g. the Intel SGX Root CA; trusted only if pinned."""
    ccel_table: bytes | None = None
    ccel_data: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": PLATFORM,
            "quote": _b64(self.quote),
            "certs": _b64(self.certs),
            "collateral": {item.name: _b64(getattr(self.collateral, item.name)) for item in fields(Collateral)},
            "ccel_table": _b64(self.ccel_table),
            "ccel_data": _b64(self.ccel_data),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evidence:
        if not isinstance(data, dict) or data.get("platform") != PLATFORM:
            raise EvidenceMalformed("TDX evidence JSON must be an object with platform 'tdx'", check="evidence_json")
        collateral = data.get("collateral") or {}
        if not isinstance(collateral, dict) or not set(collateral) <= {item.name for item in fields(Collateral)}:
            raise EvidenceMalformed("TDX evidence JSON: 'collateral' has unknown members", check="evidence_json")
        quote = _unb64(data.get("quote"), "quote")
        if quote is None:
            raise EvidenceMalformed("TDX evidence JSON has no quote", check="evidence_json")
        return cls(
            quote=quote,
            collateral=Collateral(**{name: _unb64(value, name) for name, value in collateral.items()}),
            certs=_unb64(data.get("certs"), "certs"),
            ccel_table=_unb64(data.get("ccel_table"), "ccel_table"),
            ccel_data=_unb64(data.get("ccel_data"), "ccel_data"),
        )

    @classmethod
    def from_files(
        cls, path: Path, *, certs: Path | None = None, collateral: Path | None = None, rims: Path | None = None
    ) -> Evidence:
        """The quote file, an optional certificate file, and an optional folder (see ``COLLATERAL_FILES`` and
        ``CCEL_FILES`` for the names looked for)."""
        if rims is not None:
            raise ConfigError("TDX evidence has no reference-measurement manifests: drop --rims (it is for nvgpu)")
        found: dict[str, bytes] = {}
        if collateral is not None:
            if not collateral.is_dir():
                raise ConfigError(f"collateral folder {collateral} does not exist")
            for name, filename in {**COLLATERAL_FILES, **CCEL_FILES}.items():
                if (collateral / filename).is_file():
                    found[name] = (collateral / filename).read_bytes()
        return cls(
            quote=_read(path),
            collateral=Collateral(**{name: found[name] for name in COLLATERAL_FILES if name in found}),
            certs=_read(certs) if certs is not None else None,
            ccel_table=found.get("ccel_table"),
            ccel_data=found.get("ccel_data"),
        )


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}; check the path") from None


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(value: Any, name: str) -> bytes | None:
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError("not a string")
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise EvidenceMalformed(f"TDX evidence JSON: {name} is not base64", check="evidence_json") from None
