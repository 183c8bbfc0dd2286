"""Intel PCS collateral for TDX: TCB info, QE identity (signed JSON) and the PCK / root CRLs.

Intel signs the exact bytes of the ``tcbInfo`` / ``enclaveIdentity`` value as it appears in the response body, so
the body is split without re-serialising: the signature is checked over those bytes and the claims are read from
the very same bytes.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from cloister.attest.der import Certificate
from cloister.attest.pki import public_key
from cloister.errors import CollateralInvalid, EvidenceMalformed

TCB_STATUSES = frozenset(
    {
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "Revoked",
    }
)
T = TypeVar("T")


@dataclass(frozen=True)
class SignedBody:
    """The exact signed bytes of a PCS JSON response member and its raw r‖s P-256 signature."""

    signed: bytes
    signature: bytes


def split_signed_json(data: bytes, member: str, *, check: str) -> tuple[SignedBody, Any]:
    """Find ``member`` at the top level of ``data``: its exact bytes, its signature, and its parsed value."""
    decoder = json.JSONDecoder()
    try:
        text = data.decode("utf-8")
        members: dict[str, tuple[str, Any]] = {}
        pos = _skip(text, 0)
        if text[pos : pos + 1] != "{":
            raise ValueError("not a JSON object")
        pos = _skip(text, pos + 1)
        while text[pos : pos + 1] != "}":
            key, pos = decoder.raw_decode(text, pos)
            pos = _skip(text, pos)
            if not isinstance(key, str) or text[pos : pos + 1] != ":" or key in members:
                raise ValueError("bad or repeated member name")
            start = _skip(text, pos + 1)
            value, pos = decoder.raw_decode(text, start)
            members[key] = (text[start:pos], value)
            pos = _skip(text, pos)
            if text[pos : pos + 1] == ",":
                pos = _skip(text, pos + 1)
                if text[pos : pos + 1] == "}":
                    raise ValueError("trailing comma")
            elif text[pos : pos + 1] != "}":
                raise ValueError("expected , or }")
        if _skip(text, pos + 1) != len(text):
            raise ValueError("text after the JSON object")
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise EvidenceMalformed(f"{member} response is not a JSON object ({exc})", check=check) from None
    if member not in members or "signature" not in members:
        raise EvidenceMalformed(f"{member} response lacks the {member!r} or 'signature' member", check=check)
    raw, value = members[member]
    signature = _hex(members["signature"][1], 64, "signature", check)
    return SignedBody(raw.encode("utf-8"), signature), value


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _hex(value: Any, size: int, name: str, check: str) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or len(raw) != size:
        raise EvidenceMalformed(f"{name} must be {size} bytes of hex", check=check)
    return raw


class _Fields:
    """Typed access to a JSON object; every miss is an :class:`EvidenceMalformed` naming the field."""

    def __init__(self, value: Any, what: str, check: str) -> None:
        if not isinstance(value, dict):
            raise EvidenceMalformed(f"{what} is not a JSON object", check=check)
        self.value, self.what, self.check = value, what, check

    def get(self, key: str, kind: type[T], default: T | None = None) -> T:
        item = self.value.get(key, default)
        if not isinstance(item, kind) or (kind is int and isinstance(item, bool)):
            raise EvidenceMalformed(f"{self.what}: {key!r} is missing or not a {kind.__name__}", check=self.check)
        return item

    def hex(self, key: str, size: int) -> bytes:
        return _hex(self.value.get(key), size, f"{self.what}: {key!r}", self.check)

    def date(self, key: str) -> datetime:
        text = self.get(key, str)
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise EvidenceMalformed(f"{self.what}: {key!r} is not an ISO 8601 UTC time", check=self.check)
        return parsed

    def objects(
        self, key: str, what: str, parse: Callable[[_Fields], T], *, default: list[Any] | None = None
    ) -> tuple[T, ...]:
        items = self.get(key, list, default)
        return tuple(parse(_Fields(item, what, self.check)) for item in items)


@dataclass(frozen=True)
class TcbLevel:
    sgx_components: tuple[int, ...]
    pce_svn: int
    tdx_components: tuple[int, ...]
    date: str
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class IsvLevel:
    """A TCB level keyed by one ISV SVN: QE identity levels and TDX module identity levels."""

    isv_svn: int
    date: str
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class ModuleIdentity:
    id: str
    mr_signer: bytes
    attributes: bytes
    attributes_mask: bytes
    levels: tuple[IsvLevel, ...]


@dataclass(frozen=True)
class TcbInfo:
    body: SignedBody
    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    fmspc: bytes
    pce_id: bytes
    evaluation_number: int
    module: ModuleIdentity
    """The TDX 1.0 module (``tdxModule``): MRSIGNERSEAM and SEAM attributes, no levels."""
    module_identities: tuple[ModuleIdentity, ...]
    levels: tuple[TcbLevel, ...]


@dataclass(frozen=True)
class QeIdentity:
    body: SignedBody
    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    evaluation_number: int
    misc_select: int
    misc_select_mask: int
    attributes: bytes
    attributes_mask: bytes
    mr_signer: bytes
    isv_prod_id: int
    levels: tuple[IsvLevel, ...]


def _status(fields: _Fields) -> str:
    status = fields.get("tcbStatus", str)
    if status not in TCB_STATUSES:
        raise EvidenceMalformed(f"{fields.what}: unknown tcbStatus {status!r}", check=fields.check)
    return status


def _advisories(fields: _Fields) -> tuple[str, ...]:
    ids = fields.get("advisoryIDs", list, [])
    if not all(isinstance(item, str) for item in ids):
        raise EvidenceMalformed(f"{fields.what}: advisoryIDs must be strings", check=fields.check)
    return tuple(ids)


def _svns(fields: _Fields, key: str) -> tuple[int, ...]:
    svns = fields.objects(key, f"{fields.what} {key}", lambda item: item.get("svn", int))
    if len(svns) != 16 or not all(0 <= svn <= 0xFF for svn in svns):
        raise EvidenceMalformed(f"{fields.what}: {key} must list 16 SVNs of 0..255", check=fields.check)
    return svns


def _tcb_level(fields: _Fields) -> TcbLevel:
    tcb = _Fields(fields.get("tcb", dict), "TCB level tcb", fields.check)
    return TcbLevel(
        sgx_components=_svns(tcb, "sgxtcbcomponents"),
        pce_svn=tcb.get("pcesvn", int),
        tdx_components=_svns(tcb, "tdxtcbcomponents"),
        date=fields.get("tcbDate", str),
        status=_status(fields),
        advisory_ids=_advisories(fields),
    )


def _isv_level(fields: _Fields) -> IsvLevel:
    tcb = _Fields(fields.get("tcb", dict), "TCB level tcb", fields.check)
    return IsvLevel(tcb.get("isvsvn", int), fields.get("tcbDate", str), _status(fields), _advisories(fields))


def _module(fields: _Fields) -> ModuleIdentity:
    return ModuleIdentity(
        id=fields.get("id", str, ""),
        mr_signer=fields.hex("mrsigner", 48),
        attributes=fields.hex("attributes", 8),
        attributes_mask=fields.hex("attributesMask", 8),
        levels=fields.objects("tcbLevels", "TDX module TCB level", _isv_level, default=[]),
    )


def parse_tcb_info(data: bytes) -> TcbInfo:
    """Parse an Intel PCS TDX TCB info response body (``GET /tdx/certification/v4/tcb``)."""
    body, value = split_signed_json(data, "tcbInfo", check="tcb_info")
    fields = _Fields(value, "tcbInfo", "tcb_info")
    levels = fields.objects("tcbLevels", "TCB level", _tcb_level)
    if not levels:
        raise EvidenceMalformed("tcbInfo has no TCB levels", check="tcb_info")
    return TcbInfo(
        body=body,
        id=fields.get("id", str),
        version=fields.get("version", int),
        issue_date=fields.date("issueDate"),
        next_update=fields.date("nextUpdate"),
        fmspc=fields.hex("fmspc", 6),
        pce_id=fields.hex("pceId", 2),
        evaluation_number=fields.get("tcbEvaluationDataNumber", int),
        module=_module(_Fields(fields.get("tdxModule", dict), "tdxModule", "tcb_info")),
        module_identities=fields.objects("tdxModuleIdentities", "TDX module identity", _module, default=[]),
        levels=levels,
    )


def parse_qe_identity(data: bytes) -> QeIdentity:
    """Parse an Intel PCS TD QE identity response body (``GET /tdx/certification/v4/qe/identity``)."""
    body, value = split_signed_json(data, "enclaveIdentity", check="qe_identity")
    fields = _Fields(value, "enclaveIdentity", "qe_identity")
    levels = fields.objects("tcbLevels", "QE TCB level", _isv_level)
    if not levels:
        raise EvidenceMalformed("enclaveIdentity has no TCB levels", check="qe_identity")
    return QeIdentity(
        body=body,
        id=fields.get("id", str),
        version=fields.get("version", int),
        issue_date=fields.date("issueDate"),
        next_update=fields.date("nextUpdate"),
        evaluation_number=fields.get("tcbEvaluationDataNumber", int),
        misc_select=int.from_bytes(fields.hex("miscselect", 4), "little"),
        misc_select_mask=int.from_bytes(fields.hex("miscselectMask", 4), "little"),
        attributes=fields.hex("attributes", 16),
        attributes_mask=fields.hex("attributesMask", 16),
        mr_signer=fields.hex("mrsigner", 32),
        isv_prod_id=fields.get("isvprodid", int),
        levels=levels,
    )


def verify_body_signature(body: SignedBody, signer: Certificate, *, what: str, check: str) -> None:
    """Check Intel's ECDSA P-256 / SHA-256 signature over the exact signed bytes."""
    key = public_key(signer)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CollateralInvalid(f"{what}: the signing certificate {signer} has no EC key", check=check)
    der = encode_dss_signature(int.from_bytes(body.signature[:32], "big"), int.from_bytes(body.signature[32:], "big"))
    try:
        key.verify(der, body.signed, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise CollateralInvalid(
            f"{what}: signature by {signer} does not verify; re-fetch it from Intel PCS", check=check
        ) from None


def check_current(issue_date: datetime, next_update: datetime, now: datetime, *, what: str, check: str) -> None:
    """Collateral is usable from its issue date until its next update."""
    if now > next_update:
        raise CollateralInvalid(
            f"{what} has expired: its nextUpdate was {next_update.isoformat()} (checked at {now.isoformat()}); "
            "fetch current collateral from Intel PCS",
            check=check,
        )
    if now < issue_date:
        raise CollateralInvalid(
            f"{what} was issued at {issue_date.isoformat()}, after the verification time {now.isoformat()}",
            check=check,
        )


@dataclass(frozen=True)
class Crl:
    """A verified certificate revocation list: who issued it, when it is current, and which serials it revokes."""

    issuer: bytes
    this_update: datetime
    next_update: datetime | None
    revoked: frozenset[int]


def load_crl(data: bytes, issuer: Certificate, *, what: str, check: str) -> Crl:
    """Parse a CRL (DER, PEM, or hex-encoded DER as older PCS APIs return) and verify it was signed by ``issuer``."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            crl = x509.load_pem_x509_crl(data)
        elif data[:1] == b"\x30":
            crl = x509.load_der_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(binascii.unhexlify(data.strip()))
        issuer_name = crl.issuer.public_bytes()
        revoked = frozenset(entry.serial_number for entry in crl)
        this_update, next_update = crl.last_update_utc, crl.next_update_utc
    except (ValueError, TypeError, binascii.Error) as exc:
        raise EvidenceMalformed(f"{what}: not a CRL ({exc})", check=check) from None
    if issuer_name != issuer.subject.der:
        raise CollateralInvalid(f"{what} was not issued by {issuer}; fetch the CRL of that CA", check=check)
    if not crl.is_signature_valid(public_key(issuer)):
        raise CollateralInvalid(f"{what}: signature by {issuer} does not verify", check=check)
    return Crl(issuer_name, this_update, next_update, revoked)


def check_crl_current(crl: Crl, now: datetime, *, what: str, check: str) -> None:
    if crl.next_update is None:
        raise CollateralInvalid(f"{what} has no nextUpdate, so its freshness cannot be judged", check=check)
    check_current(crl.this_update, crl.next_update, now, what=what, check=check)
