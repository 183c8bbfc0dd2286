"""SEV-SNP **verify**: is this report authentic? Chain VCEK/VLEK -> ASK/ASVK -> ARK, key bound to the report's chip
and reported TCB, ECDSA P-384 signature over the report; Azure's runtime data bound by its digest.

Order follows go-sev-guest: certificates first, then the key's TCB and hwID against the report, then the signature,
so a report signed by the right key for the wrong TCB fails as a TCB mismatch, not as a bad signature.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from cloister.attest.cache import ChainCache
from cloister.attest.checks import Checklist, resolve_now
from cloister.attest.der import Certificate, parse_certificate
from cloister.attest.pki import public_key, verify_chain, verify_signature
from cloister.attest.roots import AMD_ARKS, choose_roots, fingerprint
from cloister.attest.snp.certs import KINDS, EndorsementKey, endorsement_key
from cloister.attest.snp.crl import check_revocation
from cloister.attest.snp.evidence import PLATFORM, Evidence
from cloister.attest.snp.hcl import check_runtime_data, is_hcl, parse_hcl
from cloister.attest.snp.product import Product, product_from_cpuid, product_from_signer_name
from cloister.attest.snp.report import Report, Tcb, parse_report
from cloister.errors import (
    CertificateInvalid,
    CollateralInvalid,
    EvidenceMalformed,
    StaleEvidence,
    VerificationFailed,
)

_ECDSA_SHA384 = "1.2.840.10045.4.3.3"
KDS = "https://kdsintf.amd.com"
_KDS_PARAMETERS = {"fmc": "fmcSPL", "bootloader": "blSPL", "tee": "teeSPL", "snp": "snpSPL", "microcode": "ucodeSPL"}


@dataclass(frozen=True)
class VerifyOptions:
    now: datetime | None = None
    """The time certificates and the CRL must be valid at (default: now)."""
    roots: tuple[Certificate, ...] | None = None
    """Trusted ARKs; None = the pinned AMD ARKs found among the evidence's certificates."""
    product: str | None = None
    """``Milan``, ``Genoa``, ``Turin``, optionally with the stepping (``Milan-B0``); None = inferred."""
    check_crl: bool = False
    """Require AMD's CRL in the evidence (a carried CRL is checked even when this is off)."""
    expected_nonce: bytes | None = None
    """Freshness: report_data must equal this nonce (1-64 bytes), zero-padded to 64 bytes."""
    cache: ChainCache | None = None
    """Skip re-parsing certificates and re-verifying the signatures of a chain seen before."""


@dataclass(frozen=True)
class Claims:
    """What a verified report proves. TCB values are decoded by the verified product's layout."""

    report: Report
    product: Product
    signer: str
    """``VCEK`` (chip-unique key) or ``VLEK`` (key AMD loaded for a cloud provider)."""
    root: str
    """SHA-256 fingerprint of the ARK the chain ends at."""
    hcl_runtime_data: bytes | None = None
    """Azure only: the runtime data (vTPM keys, JSON) bound by the report data."""

    @property
    def platform(self) -> str:
        return PLATFORM

    @property
    def report_data(self) -> bytes:
        return self.report.report_data

    @property
    def measurement(self) -> str:
        return self.report.measurement.hex()

    @property
    def debug(self) -> bool:
        return self.report.policy.debug

    def tcb(self, raw: int) -> Tcb:
        return Tcb.decode(raw, turin=self.product.turin_layout)

    @property
    def reported_tcb(self) -> Tcb:
        return self.tcb(self.report.reported_tcb)

    def to_json(self) -> dict[str, Any]:
        fields = self.report.to_json()
        for name in ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb"):
            fields[name] = self.tcb(fields[name]).to_json()
        return {
            "platform": PLATFORM,
            "product": str(self.product),
            "signer": self.signer,
            "root": self.root,
            **fields,
            "hcl_runtime_data": None if self.hcl_runtime_data is None else self.hcl_runtime_data.hex(),
        }


def kds_url(kind: str, product: Product | None, report: Report) -> str:
    """Where AMD KDS serves the key for this report (a VCEK is per chip and TCB; a VLEK is not served publicly)."""
    name = product.name if product else "{product}"
    if kind == "VLEK":
        return f"{KDS}/vlek/v1/{name}/cert_chain (the VLEK itself comes from your cloud provider)"
    turin = product is not None and product.turin_layout
    tcb = Tcb.decode(report.reported_tcb, turin=turin)
    hwid = report.chip_id[:8] if turin else report.chip_id
    query = "&".join(f"{_KDS_PARAMETERS[part]}={level}" for part, level in tcb.components().items())
    return f"{KDS}/vcek/v1/{name}/{hwid.hex()}?{query}"


def _certificates(evidence: Evidence, cache: ChainCache | None) -> list[Certificate]:
    parse = cache.certificate if cache is not None else parse_certificate
    try:
        return [parse(der) for der in evidence.certificates]
    except EvidenceMalformed as exc:
        raise EvidenceMalformed(
            f"a certificate in the evidence is malformed ({exc.message}); fetch the VCEK and cert_chain from AMD KDS "
            "again",
            check="vcek_chain",
        ) from None


def _matches(key: EndorsementKey, report: Report) -> bool:
    turin = key.product is not None and key.product.turin_layout
    reported = Tcb.decode(report.reported_tcb, turin=turin).components()
    hwid_ok = key.hwid is None or report.chip_id.startswith(key.hwid)
    return hwid_ok and all(reported.get(name) == level for name, level in key.spls)


def _endorsement_key(report: Report, certificates: list[Certificate]) -> EndorsementKey:
    """The VCEK or VLEK the report names as its signer; among several, one issued for this chip and TCB."""
    if report.signing_key not in KINDS.values() or report.mask_chip_key:
        raise VerificationFailed(
            "the report is not signed (SIGNING_KEY none or MASK_CHIP_KEY set): request it again from a guest whose "
            "host does not mask the chip key",
            check="vcek_chain",
        )
    keys = [endorsement_key(cert) for cert in certificates if KINDS.get(cert.subject.common_name) == report.signing_key]
    if not keys:
        cpuid_name = product_from_cpuid(*report.cpuid[:2]) if report.cpuid else None
        product = Product(cpuid_name) if cpuid_name else None
        raise CertificateInvalid(
            f"the evidence carries no {report.signing_key} certificate: fetch it from "
            f"{kds_url(report.signing_key, product, report)} and add it to the certificates",
            check="vcek_chain",
        )
    return next((key for key in keys if _matches(key, report)), keys[0])


def _product(option: str | None, key: EndorsementKey, report: Report) -> Product:
    """The product every source agrees on; the first source (the caller, then the VCEK) names the stepping."""
    sources: list[tuple[str, Product]] = []
    if option is not None:
        sources.append(("VerifyOptions.product", Product.parse(option)))
    if key.product is not None:
        sources.append((f"the {key.kind}'s productName", key.product))
    if report.cpuid is not None and (name := product_from_cpuid(*report.cpuid[:2])):
        sources.append(("the report's CPUID", Product(name)))
    if name := product_from_signer_name(key.certificate.issuer.common_name):
        sources.append((f"the {key.kind}'s issuer", Product(name)))
    if not sources:
        raise VerificationFailed(
            "cannot tell which AMD product signed this report: pass the product (Milan, Genoa or Turin)",
            check="product",
        )
    first_source, first = sources[0]
    for source, product in sources[1:]:
        if product.name != first.name:
            raise VerificationFailed(
                f"{first_source} says {first.name} but {source} says {product.name}", check="product"
            )
        if first.stepping and product.stepping and first.stepping != product.stepping:
            raise VerificationFailed(
                f"expected product stepping {first.stepping}, got {product.stepping} from {source}", check="product"
            )
    stepping = next((product.stepping for _, product in sources if product.stepping), None)
    return Product(first.name, stepping)


def _chain(key: EndorsementKey, certificates: list[Certificate], product: Product) -> list[Certificate]:
    """VCEK -> ASK (or VLEK -> ASVK) -> ARK, as far as the evidence carries it."""
    by_subject = {cert.subject.der: cert for cert in certificates}
    leaf = key.certificate
    signer = by_subject.get(leaf.issuer.der)
    signer_name = f"SEV-VLEK-{product.name}" if key.kind == "VLEK" else f"SEV-{product.name}"
    if signer is None or signer is leaf:
        raise CertificateInvalid(
            f"the evidence lacks {leaf.issuer} (the {key.kind}'s issuer): add AMD's cert_chain "
            f"({KDS}/{key.kind.lower()}/v1/{product.name}/cert_chain) to the certificates",
            check="vcek_chain",
        )
    if signer.subject.common_name != signer_name:
        raise CertificateInvalid(
            f"the {key.kind} is issued by {signer}, expected {signer_name} for {product.name}", check="vcek_chain"
        )
    ark = by_subject.get(signer.issuer.der)
    return [leaf, signer] if ark is None or ark is signer else [leaf, signer, ark]


def _verify_chain(
    chain: list[Certificate], certificates: list[Certificate], options: VerifyOptions, product: Product, now: datetime
) -> Certificate:
    ark_name = f"ARK-{product.name}"
    roots = [
        root for root in choose_roots(options.roots, certificates, AMD_ARKS) if root.subject.common_name == ark_name
    ]
    if not roots:
        where = "among the roots given" if options.roots is not None else "pinned and carried in the evidence"
        raise CertificateInvalid(
            f"no trusted {ark_name} {where}: add AMD's cert_chain for {product.name} or pass its ARK as a root",
            check="vcek_chain",
        )
    try:
        if options.cache is not None:
            return options.cache.verify(chain, roots, now=now)
        return verify_chain(chain, roots, now=now)
    except CertificateInvalid as exc:
        raise CertificateInvalid(f"{chain[0]} chain: {exc.message}", check="vcek_chain", reason=exc.check) from None


def _check_tcb(key: EndorsementKey, report: Report, product: Product) -> None:
    reported = Tcb.decode(report.reported_tcb, turin=product.turin_layout)
    expected = reported.components()
    issued = dict(key.spls)
    missing = sorted(set(expected) - set(issued))
    if missing:
        raise EvidenceMalformed(f"the {key.kind} lacks the TCB extensions for {', '.join(missing)}", check="vcek_tcb")
    wrong = [f"{name} {issued[name]} != {level}" for name, level in expected.items() if issued[name] != level]
    if wrong:
        raise VerificationFailed(
            f"the {key.kind} was issued for another TCB than the report's REPORTED_TCB ({'; '.join(wrong)}, "
            f"certificate vs report): fetch the matching key from {kds_url(key.kind, product, report)}",
            check="vcek_tcb",
        )


def _check_hwid(key: EndorsementKey, report: Report, product: Product) -> None:
    if key.hwid is None:
        raise EvidenceMalformed("the VCEK has no hwID extension", check="vcek_hwid")
    if not any(report.chip_id):
        raise VerificationFailed(
            "the report's CHIP_ID is masked (all zero), so it cannot be bound to a VCEK: use a VLEK or unmask it",
            check="vcek_hwid",
        )
    if not report.chip_id.startswith(key.hwid):
        raise VerificationFailed(
            f"the VCEK belongs to chip {key.hwid.hex()}, not to the report's CHIP_ID {report.chip_id.hex()}: fetch "
            f"the VCEK from {kds_url('VCEK', product, report)}",
            check="vcek_hwid",
        )


def _check_signature(key: EndorsementKey, report: Report) -> None:
    verifying_key = public_key(key.certificate)
    if not isinstance(verifying_key, ec.EllipticCurvePublicKey) or verifying_key.curve.name != "secp384r1":
        raise EvidenceMalformed(f"the {key.kind} key is not an ECDSA P-384 key", check="report_signature")
    signature = encode_dss_signature(report.signature_r, report.signature_s)
    try:
        verify_signature(verifying_key, _ECDSA_SHA384, b"", signature, report.signed)
    except VerificationFailed:
        raise VerificationFailed(
            f"the report's signature does not verify with the {key.kind}: the report was altered or the "
            f"{key.kind} belongs to another machine",
            check="report_signature",
        ) from None


def _check_nonce(report: Report, nonce: bytes) -> None:
    if not 1 <= len(nonce) <= len(report.report_data):
        raise VerificationFailed("the expected nonce must be 1 to 64 bytes", check="nonce")
    if report.report_data != nonce.ljust(len(report.report_data), b"\0"):
        raise StaleEvidence(
            f"the report data {report.report_data.hex()} is not the expected nonce {nonce.hex()}: the report may be "
            "a replay; request a fresh one with this nonce",
            check="nonce",
        )


def verify(evidence: Evidence, options: VerifyOptions | None = None, *, checklist: Checklist | None = None) -> Claims:
    """Verify SNP evidence and return its claims; raise a typed error naming the first failed check."""
    options = options or VerifyOptions()
    checklist = checklist if checklist is not None else Checklist()
    now = resolve_now(options.now)
    with checklist.run("report_format"):
        hcl = parse_hcl(evidence.report) if is_hcl(evidence.report) else None
        report = parse_report(hcl.report if hcl else evidence.report)
    if hcl is not None:
        with checklist.run("hcl_report_data", f"{hcl.hash_name} of the runtime data"):
            check_runtime_data(hcl, report.report_data)
    with checklist.run("vcek_chain"):
        certificates = _certificates(evidence, options.cache)
        key = _endorsement_key(report, certificates)
        product = _product(options.product, key, report)
        chain = _chain(key, certificates, product)
        ark = _verify_chain(chain, certificates, options, product, now)
    if evidence.crl is not None or options.check_crl:
        with checklist.run("crl"):
            if evidence.crl is None:
                raise CollateralInvalid(
                    f"revocation checking is on but the evidence has no CRL: download {KDS}/{key.kind.lower()}/v1/"
                    f"{product.name}/crl into the collateral folder as crl.der",
                    check="crl",
                )
            check_revocation(evidence.crl, ark, chain, now=now)
    with checklist.run("vcek_tcb", str(Tcb.decode(report.reported_tcb, turin=product.turin_layout))):
        _check_tcb(key, report, product)
    if key.kind == "VCEK":
        with checklist.run("vcek_hwid"):
            _check_hwid(key, report, product)
    with checklist.run("report_signature", f"ECDSA P-384 by the {key.kind}"):
        _check_signature(key, report)
    if options.expected_nonce is not None:
        with checklist.run("nonce"):
            _check_nonce(report, options.expected_nonce)
    return Claims(
        report=report,
        product=product,
        signer=key.kind,
        root=fingerprint(ark),
        hcl_runtime_data=None if hcl is None else hcl.runtime_data,
    )
