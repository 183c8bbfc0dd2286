"""**Verify** a TDX quote: is it authentic, from a genuine Intel platform, and (with collateral) how current is it?

Checks, in order, each recorded in the checklist under its name: ``quote_format``, ``pck_chain``,
``pck_extensions``, ``qe_report_signature``, ``qe_report_binding``, ``quote_signature``, ``nonce`` (if expected),
then with collateral ``tcb_signing_chain``, ``tcb_info``, ``tcb_info_signature``, ``tcb_info_freshness``,
``tcb_info_fmspc``, ``tdx_module``, ``tcb_level``, ``qe_identity``/``qe_identity_signature``/
``qe_identity_freshness``/``qe_tcb_level``, ``root_crl``, ``pck_crl``, ``revocation``, and with an event log
``rtmr_replay``. Policy (which values are acceptable) is :mod:`cloister.attest.tdx.policy`'s job.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from cloister.attest.cache import ChainCache
from cloister.attest.checks import Checklist, resolve_now
from cloister.attest.der import Certificate
from cloister.attest.pki import public_key, verify_chain
from cloister.attest.roots import INTEL_SGX_ROOT_CA, choose_roots
from cloister.attest.tdx.ccel import log_area_length, parse_event_log, replay_events
from cloister.attest.tdx.claims import Claims
from cloister.attest.tdx.collateral import (
    Crl,
    check_crl_current,
    check_current,
    load_crl,
    parse_qe_identity,
    parse_tcb_info,
    verify_body_signature,
)
from cloister.attest.tdx.evidence import Collateral, Evidence
from cloister.attest.tdx.pck import (
    PCK_CA_NAMES,
    PCK_LEAF_NAME,
    TCB_SIGNING_NAME,
    parse_sgx_extensions,
    read_certificates,
)
from cloister.attest.tdx.quote import BODY_TDX15, Quote, parse_quote
from cloister.attest.tdx.tcb import evaluate_module, evaluate_platform, evaluate_qe
from cloister.errors import (
    AttestationError,
    CertificateInvalid,
    CollateralInvalid,
    ConfigError,
    EvidenceMalformed,
    StaleEvidence,
    VerificationFailed,
)


@dataclass(frozen=True)
class TimeSet:
    """Separate verification times, like go-tdx-guest's; each unset one falls back to ``VerifyOptions.now``.

    ``signing_chain`` exists because Intel re-issues its TCB Signing certificate: collateral signed by a key whose
    certificate in the saved issuer chain has since expired can still be checked by giving a time inside that
    certificate's validity, while ``tcb_info``/``qe_identity`` still judge the collateral's own freshness.
    """

    pck_chain: datetime | None = None
    tcb_info: datetime | None = None
    qe_identity: datetime | None = None
    crls: datetime | None = None
    signing_chain: datetime | None = None


@dataclass(frozen=True)
class VerifyOptions:
    now: datetime | None = None
    """The verification time (timezone-aware); None = the current time."""
    roots: tuple[Certificate, ...] | None = None
    """Trusted roots; None = the pinned Intel SGX Root CA, found among the certificates the evidence carries."""
    times: TimeSet = field(default_factory=TimeSet)
    expected_nonce: bytes | None = None
    """If set, the quote's 64-byte REPORT_DATA must equal it (else :class:`StaleEvidence`)."""
    cache: ChainCache | None = None
    """An optional cache of verified certificate chains, shared across verifications."""


def verify(evidence: Evidence, options: VerifyOptions | None = None, *, checklist: Checklist | None = None) -> Claims:
    """Verify ``evidence`` and return its claims; raise a typed :class:`AttestationError` naming the failed check."""
    checklist = checklist if checklist is not None else Checklist()
    try:
        return _Verification(evidence, options or VerifyOptions(), checklist).run()
    except AttestationError as exc:
        checklist.fail(exc)


class _Verification:
    def __init__(self, evidence: Evidence, options: VerifyOptions, checklist: Checklist) -> None:
        self.evidence, self.options, self.checklist = evidence, options, checklist
        self.now = resolve_now(options.now)
        times = options.times
        self.at = {name: resolve_now(getattr(times, name) or self.now) for name in TimeSet.__dataclass_fields__}
        if options.expected_nonce is not None and len(options.expected_nonce) != 64:
            raise ConfigError(f"a TDX nonce is the 64-byte REPORT_DATA, not {len(options.expected_nonce)} bytes")
        self.extra = read_certificates(evidence.certs, what="--certs", check="certs") if evidence.certs else ()

    def run(self) -> Claims:
        quote = parse_quote(self.evidence.quote)
        trailing = len(self.evidence.quote) - quote.size
        self.checklist.passed(
            "quote_format",
            f"TDX quote v{quote.header.version}, TDX {'1.5' if quote.body_type == BODY_TDX15 else '1.0'} body"
            + (f", {trailing} trailing bytes ignored" if trailing else ""),
        )
        chain, root = self._chain(quote.pck_chain, "pck_chain", "PCK certificate chain", self.at["pck_chain"])
        if chain[0].subject.common_name != PCK_LEAF_NAME or len(chain) < 2 or str(chain[1]) not in PCK_CA_NAMES:
            raise CertificateInvalid(
                f"the PCK chain must be '{PCK_LEAF_NAME}' issued by an Intel PCK Platform/Processor CA, got "
                + " → ".join(str(cert) for cert in chain),
                check="pck_chain",
            )
        self.checklist.passed("pck_chain", f"{' → '.join(str(c) for c in chain)} → {root}")
        pck = parse_sgx_extensions(chain[0])
        self.checklist.passed("pck_extensions", f"FMSPC {pck.fmspc.hex()}, PCESVN {pck.pce_svn}")
        self._signatures(quote, chain[0])
        if self.options.expected_nonce is not None:
            if not hmac.compare_digest(quote.body.report_data, self.options.expected_nonce):
                raise StaleEvidence(
                    "REPORT_DATA does not equal the expected nonce: the quote may be a replay; request a fresh one",
                    check="nonce",
                )
            self.checklist.passed("nonce", "REPORT_DATA equals the expected nonce")
        claims = Claims(quote.header, quote.body_type, quote.body, quote.qe_report, pck)
        claims = self._collateral(self.evidence.collateral, quote, claims, chain, root)
        return self._event_log(claims)

    def _chain(self, raw: bytes, check: str, what: str, at: datetime) -> tuple[tuple[Certificate, ...], Certificate]:
        """Parse a carried chain and verify it to the trusted (explicit or pinned) roots; return it and its root."""
        certs = read_certificates(raw, what=what, check=check)
        roots = choose_roots(self.options.roots, (*certs, *self.extra), [INTEL_SGX_ROOT_CA])
        if not roots:
            raise CertificateInvalid(
                f"{what}: the pinned Intel SGX Root CA ({INTEL_SGX_ROOT_CA}) is neither carried nor given; "
                "pass it with --certs",
                check=check,
            )
        root_ders = {root.der for root in roots}
        chain = tuple(cert for cert in certs if cert.der not in root_ders) or certs  # the root is the anchor
        cache = self.options.cache
        try:
            root = cache.verify(chain, roots, now=at) if cache else verify_chain(chain, roots, now=at)
        except CertificateInvalid as exc:
            raise CertificateInvalid(f"{what}: {exc.message}", check=check) from None
        return chain, root

    def _signatures(self, quote: Quote, pck_leaf: Certificate) -> None:
        pck_key = public_key(pck_leaf)
        if not isinstance(pck_key, ec.EllipticCurvePublicKey):
            raise CertificateInvalid("the PCK certificate does not hold an EC key", check="pck_chain")
        _verify_raw(pck_key, quote.qe_report_signature, quote.qe_report.raw, "QE report", "qe_report_signature")
        self.checklist.passed("qe_report_signature", "the QE report is signed by the PCK key")
        expected = hashlib.sha256(quote.attestation_key + quote.qe_auth_data).digest() + bytes(32)
        if not hmac.compare_digest(quote.qe_report.report_data, expected):
            raise VerificationFailed(
                "QE report data is not SHA-256(attestation key ‖ QE auth data) ‖ zeros: "
                "the attestation key was not vouched for by the Quoting Enclave",
                check="qe_report_binding",
            )
        self.checklist.passed("qe_report_binding", "the QE report binds the attestation key")
        try:
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + quote.attestation_key)
        except ValueError:
            raise VerificationFailed("the attestation key is not a P-256 point", check="quote_signature") from None
        _verify_raw(key, quote.signature, quote.signed, "quote", "quote_signature")
        self.checklist.passed("quote_signature", "header and TD report are signed by the attestation key")

    def _signing_chain(self, collateral: Collateral) -> tuple[tuple[Certificate, ...], Certificate]:
        if collateral.signing_chain is None:
            raise EvidenceMalformed(
                "TCB info / QE identity given without their issuer chain (the TCB-Info-Issuer-Chain header)",
                check="tcb_signing_chain",
            )
        chain, root = self._chain(
            collateral.signing_chain, "tcb_signing_chain", "TCB signing chain", self.at["signing_chain"]
        )
        if chain[0].subject.common_name != TCB_SIGNING_NAME or len(chain) != 1:
            raise CertificateInvalid(
                f"collateral must be signed by '{TCB_SIGNING_NAME}' issued directly by the root, got {chain[0]}",
                check="tcb_signing_chain",
            )
        self.checklist.passed("tcb_signing_chain", f"{chain[0]} → {root}")
        return chain, root

    def _collateral(
        self, collateral: Collateral, quote: Quote, claims: Claims, chain: Sequence[Certificate], root: Certificate
    ) -> Claims:
        signer: Certificate | None = None
        if collateral.tcb_info is not None or collateral.qe_identity is not None:
            signer = self._signing_chain(collateral)[0][0]
        claims = replace(claims, revocation_checked=self._revocation(collateral, chain, root, signer))
        if collateral.tcb_info is not None and signer is not None:
            info = parse_tcb_info(collateral.tcb_info)
            verify_body_signature(info.body, signer, what="tcbInfo", check="tcb_info_signature")
            self.checklist.passed("tcb_info_signature", f"signed by {signer}")
            if info.id != "TDX" or info.version != 3:
                raise CollateralInvalid(
                    f"TCB info is {info.id} version {info.version}, expected TDX version 3: fetch it from "
                    "/tdx/certification/v4/tcb",
                    check="tcb_info",
                )
            check_current(
                info.issue_date, info.next_update, self.at["tcb_info"], what="tcbInfo", check="tcb_info_freshness"
            )
            self.checklist.passed("tcb_info_freshness", f"current until {info.next_update.isoformat()}")
            if info.fmspc != claims.pck.fmspc or info.pce_id != claims.pck.pce_id:
                raise VerificationFailed(
                    f"tcbInfo is for FMSPC {info.fmspc.hex()} / PCE {info.pce_id.hex()}, the PCK certificate says "
                    f"{claims.pck.fmspc.hex()} / {claims.pck.pce_id.hex()}: fetch the TCB info for this platform",
                    check="tcb_info_fmspc",
                )
            self.checklist.passed("tcb_info_fmspc", claims.pck.fmspc.hex())
            module = evaluate_module(info, quote.body)
            self.checklist.passed("tdx_module", "TDX 1.0 module signer" if module is None else module.status)
            platform = evaluate_platform(info, claims.pck, quote.body)
            self.checklist.passed("tcb_level", f"{platform.status} ({platform.date})")
            claims = replace(
                claims, platform_tcb=platform, module_tcb=module, tcb_evaluation_number=info.evaluation_number
            )
        if collateral.qe_identity is not None and signer is not None:
            identity = parse_qe_identity(collateral.qe_identity)
            verify_body_signature(identity.body, signer, what="enclaveIdentity", check="qe_identity_signature")
            self.checklist.passed("qe_identity_signature", f"signed by {signer}")
            if identity.id != "TD_QE" or identity.version != 2:
                raise CollateralInvalid(
                    f"QE identity is {identity.id} version {identity.version}, expected TD_QE version 2: fetch it "
                    "from /tdx/certification/v4/qe/identity",
                    check="qe_identity",
                )
            check_current(
                identity.issue_date,
                identity.next_update,
                self.at["qe_identity"],
                what="QE identity",
                check="qe_identity_freshness",
            )
            self.checklist.passed("qe_identity_freshness", f"current until {identity.next_update.isoformat()}")
            qe = evaluate_qe(identity, quote.qe_report)
            self.checklist.passed("qe_tcb_level", f"{qe.status} ({qe.date})")
            claims = replace(claims, qe_tcb=qe)
        return claims

    def _revocation(
        self, collateral: Collateral, chain: Sequence[Certificate], root: Certificate, signer: Certificate | None
    ) -> bool:
        crls: list[tuple[Crl, Sequence[Certificate]]] = []
        if collateral.root_crl is not None:
            root_crl = load_crl(collateral.root_crl, root, what="root CA CRL", check="root_crl")
            crls.append((root_crl, [*chain[1:], *([signer] if signer else [])]))
            check_crl_current(root_crl, self.at["crls"], what="root CA CRL", check="root_crl")
            self.checklist.passed("root_crl", f"signed by {root}")
        if collateral.pck_crl is not None:
            pck_crl = load_crl(collateral.pck_crl, chain[1], what="PCK CRL", check="pck_crl")
            check_crl_current(pck_crl, self.at["crls"], what="PCK CRL", check="pck_crl")
            crls.append((pck_crl, chain[:1]))
            self.checklist.passed("pck_crl", f"signed by {chain[1]}")
        for crl, certs in crls:
            for cert in certs:
                if cert.serial in crl.revoked:
                    raise CertificateInvalid(
                        f"{cert} (serial {cert.serial:x}) is revoked by its issuer's CRL", check="revocation"
                    )
        if crls:
            self.checklist.passed("revocation", "no certificate in the chains is revoked")
        return collateral.root_crl is not None and collateral.pck_crl is not None

    def _event_log(self, claims: Claims) -> Claims:
        table, data = self.evidence.ccel_table, self.evidence.ccel_data
        if table is None and data is None:
            return claims
        if table is None or data is None:
            raise EvidenceMalformed("a CCEL event log needs both the ACPI table and the log data", check="event_log")
        events = parse_event_log(data[: log_area_length(table)])
        for index, (replayed, quoted) in enumerate(zip(replay_events(events), claims.body.rtmrs, strict=True)):
            if replayed != quoted:
                raise VerificationFailed(
                    f"RTMR{index} replayed from the event log is {replayed.hex()} but the quote says {quoted.hex()}: "
                    "the log does not describe this TD's boot",
                    check="rtmr_replay",
                )
        self.checklist.passed("rtmr_replay", f"{len(events)} events replay to RTMR0..3")
        return replace(claims, rtmrs_replayed=True)


def _verify_raw(key: ec.EllipticCurvePublicKey, raw: bytes, data: bytes, what: str, check: str) -> None:
    signature = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise VerificationFailed(f"the {what} signature does not verify", check=check) from None
