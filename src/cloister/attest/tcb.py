"""The composite TCB (DESIGN §3): CPU evidence that binds the loader's keys, the GPU evidence and a fresh nonce.

The CPU report's 64 bytes of report data are::

    sha256(loader signing key ‖ loader sealing key) ‖ sha256(gpu evidence digest ‖ nonce)

where the GPU evidence digest is SHA-256 over the canonical JSON of the TCB's ``gpu`` entry (``{"platform",
"evidence"}``), or 32 zero bytes when there is no GPU; the GPU evidence itself must answer the same nonce. So one
CPU signature vouches for the keys content is sealed to, for the exact GPU evidence, and for freshness.

:func:`appraise` verifies every piece (authenticity), checks the bindings and the nonce, then applies an
:class:`~cloister.attest.policy.AppraisalPolicy` (validation), and returns an :class:`AttestationResult`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from cloister.attest import registry
from cloister.attest.checks import Check, Checklist, resolve_now
from cloister.attest.der import Certificate
from cloister.attest.policy import AppraisalPolicy
from cloister.attest.registry import PlatformClaims
from cloister.attest.sim import SimChip
from cloister.crypto.canonical import canonical_json, loads
from cloister.crypto.digest import digest_bytes
from cloister.crypto.identity import PublicIdentity
from cloister.errors import (
    AttestationError,
    CloisterError,
    ConfigError,
    EvidenceMalformed,
    MalformedInput,
    PolicyViolation,
    StaleEvidence,
    VerificationFailed,
)

FORMAT_VERSION: Final = 1
NONCE_SIZE: Final = 32
Verdict = Literal["trusted", "simulated"]
TRUSTED: Final = "trusted"
"""Verdict: every piece of evidence chains to a hardware vendor's root and satisfies the policy."""
SIMULATED: Final = "simulated"
"""Verdict: accepted by a policy that allows simulated platforms; it proves nothing about hardware."""
SIM_GPU_FIRMWARE: Final = (hashlib.sha384(b"cloister sim gpu firmware v1").digest(),)
"""The measurement blocks :func:`build_sim_tcb` puts in a sim GPU report unless told otherwise."""
_KEYS: Final = frozenset({"version", "cpu", "gpu", "loader_signing_key", "loader_sealing_key", "nonce", "specs"})
_HEX32: Final = re.compile(r"^[0-9a-f]{64}$")


def _malformed(message: str) -> EvidenceMalformed:
    return EvidenceMalformed(f"TCB: {message}", check="tcb")


@dataclass(frozen=True)
class PlatformEvidence:
    """One slot of a TCB: a platform name and that platform's ``Evidence.to_json()``."""

    platform: str
    evidence: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"platform": self.platform, "evidence": self.evidence}

    @property
    def digest(self) -> bytes:
        """SHA-256 of the canonical JSON of :meth:`to_json` (what the CPU report data commits to, for a GPU)."""
        return hashlib.sha256(canonical_json(self.to_json())).digest()

    @classmethod
    def read(cls, data: object, slot: str) -> PlatformEvidence:
        if not isinstance(data, dict) or set(data) != {"platform", "evidence"}:
            raise _malformed(f"{slot} is an object with exactly 'platform' and 'evidence'")
        name, evidence = data["platform"], data["evidence"]
        known = registry.KNOWN.get(name) if isinstance(name, str) else None
        if known is None or slot not in known.roles:
            raise _malformed(f"{name!r} is not a platform whose evidence can fill the {slot.upper()} slot")
        if not isinstance(evidence, dict):
            raise _malformed(f"the {slot} evidence must be a JSON object")
        return cls(name, evidence)


def expected_report_data(loader: PublicIdentity, gpu: PlatformEvidence | None, nonce: bytes) -> bytes:
    """The 64 bytes of CPU report data that bind ``loader``'s keys, the GPU evidence and the nonce."""
    gpu_digest = gpu.digest if gpu is not None else bytes(32)
    return (
        hashlib.sha256(loader.signing_key + loader.sealing_key).digest() + hashlib.sha256(gpu_digest + nonce).digest()
    )


@dataclass(frozen=True)
class Tcb:
    """A machine's attestation: CPU (and optional GPU) evidence, the loader keys, the nonce, declared specs."""

    cpu: PlatformEvidence
    gpu: PlatformEvidence | None
    loader: PublicIdentity
    nonce: bytes
    specs: dict[str, Any]
    """What the provider declares about the machine (cores, memory, GPUs, disk); not attested."""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "cpu": self.cpu.to_json(),
            "gpu": self.gpu.to_json() if self.gpu is not None else None,
            "loader_signing_key": self.loader.signing_key.hex(),
            "loader_sealing_key": self.loader.sealing_key.hex(),
            "nonce": self.nonce.hex(),
            "specs": self.specs,
        }

    def to_bytes(self) -> bytes:
        """Canonical JSON: what ``machine.register`` carries as ``tcb_evidence``."""
        return canonical_json(self.to_json())

    @property
    def digest(self) -> str:
        return digest_bytes(self.to_bytes())

    @classmethod
    def from_json(cls, data: object) -> Tcb:
        if not isinstance(data, dict) or set(data) != _KEYS:
            raise _malformed(f"a TCB is an object with exactly {', '.join(sorted(_KEYS))}")
        if data["version"] != FORMAT_VERSION or isinstance(data["version"], bool):
            raise _malformed(f"version {data['version']!r} is not supported (this verifier reads {FORMAT_VERSION})")
        raw = {}
        for name in ("loader_signing_key", "loader_sealing_key", "nonce"):
            value = data[name]
            if not isinstance(value, str) or not _HEX32.match(value):
                raise _malformed(f"{name} must be 32 bytes as lower-case hex")
            raw[name] = bytes.fromhex(value)
        if not isinstance(data["specs"], dict):
            raise _malformed("specs must be a JSON object")
        gpu = data["gpu"]
        tcb = cls(
            cpu=PlatformEvidence.read(data["cpu"], registry.CPU),
            gpu=None if gpu is None else PlatformEvidence.read(gpu, registry.GPU),
            loader=PublicIdentity(raw["loader_signing_key"], raw["loader_sealing_key"]),
            nonce=raw["nonce"],
            specs=data["specs"],
        )
        try:
            tcb.to_bytes()  # its digest and the GPU evidence digest need a canonical form
        except (MalformedInput, RecursionError) as exc:
            raise _malformed(f"no canonical JSON form ({exc})") from None
        return tcb

    @classmethod
    def from_bytes(cls, data: bytes) -> Tcb:
        try:
            return cls.from_json(loads(data))
        except MalformedInput as exc:
            raise _malformed(exc.message) from None


@dataclass(frozen=True)
class AttestationResult:
    """An accepted TCB: the claims of each piece, the verdict, and exactly which policy judged it, and when."""

    cpu: PlatformClaims
    gpu: PlatformClaims | None
    verdict: Verdict
    policy_digest: str
    tcb_digest: str
    appraised_at: datetime
    checklist: Checklist

    def to_json(self) -> dict[str, Any]:
        def claims(found: PlatformClaims | None) -> dict[str, Any] | None:
            return None if found is None else {"platform": found.platform, "claims": found.to_json()}

        return {
            "verdict": self.verdict,
            "policy_digest": self.policy_digest,
            "tcb_digest": self.tcb_digest,
            "appraised_at": self.appraised_at.isoformat(),
            "cpu": claims(self.cpu),
            "gpu": claims(self.gpu),
            "checks": self.checklist.to_json(),
        }

    @property
    def digest(self) -> str:
        return digest_bytes(canonical_json(self.to_json()))


@contextmanager
def _scoped(checklist: Checklist, slot: str, platform: str) -> Iterator[Checklist]:
    """Run one platform's checks in their own list, then file them under ``<slot>.`` (errors too)."""
    inner = Checklist()
    try:
        yield inner
    except CloisterError as exc:
        check = f"{slot}.{exc.details.get('check', 'evidence')}"
        exc.details["check"] = check
        if isinstance(exc, AttestationError):
            exc.check = check
        exc.message = f"{slot.upper()} evidence ({platform}): {exc.message}"
        exc.args = (exc.message,)
        raise
    finally:
        checklist.items.extend(Check(f"{slot}.{item.name}", item.passed, item.detail) for item in inner.items)


def _verify_slot(
    slot: str, piece: PlatformEvidence, now: datetime, roots: Mapping[str, Sequence[Certificate]], checklist: Checklist
) -> PlatformClaims:
    trusted = roots.get(piece.platform)
    with _scoped(checklist, slot, piece.platform) as inner:
        return registry.verify(
            piece.platform,
            piece.evidence,
            now=now,
            roots=None if trusted is None else tuple(trusted),
            checklist=inner,
        )


def _check_bindings(tcb: Tcb, cpu: PlatformClaims, gpu: PlatformClaims | None, checklist: Checklist) -> None:
    expected = expected_report_data(tcb.loader, tcb.gpu, tcb.nonce)
    with checklist.run("loader_binding", "report data[0:32] = sha256(loader signing key ‖ sealing key)"):
        if cpu.report_data[:32] != expected[:32]:
            raise VerificationFailed(
                "the CPU report data does not commit to the TCB's loader keys: the keys were swapped or the report "
                "belongs to another loader; collect evidence with this loader's keys",
                check="loader_binding",
            )
    with checklist.run("gpu_binding", "report data[32:64] = sha256(gpu evidence digest ‖ nonce)"):
        if cpu.report_data[32:] != expected[32:]:
            raise VerificationFailed(
                "the CPU report data does not commit to this GPU evidence and nonce: the GPU evidence was swapped "
                "or removed; collect CPU and GPU evidence together",
                check="gpu_binding",
            )
    if gpu is not None:
        with checklist.run("gpu_nonce", "the GPU evidence answers the TCB's nonce"):
            if gpu.report_data != tcb.nonce:
                raise StaleEvidence(
                    "the GPU evidence answers another nonce than the TCB's; collect GPU evidence for this nonce",
                    check="gpu_nonce",
                )


def _check_platforms(tcb: Tcb, policy: AppraisalPolicy, checklist: Checklist) -> Verdict:
    """The policy's structural rules; returns the verdict they allow."""
    with checklist.run("cpu_platform", tcb.cpu.platform):
        if tcb.cpu.platform not in policy.cpu_platforms:
            raise PolicyViolation(
                f"CPU platform {tcb.cpu.platform} is not accepted (the policy accepts "
                f"{', '.join(policy.cpu_platforms) or 'none'})",
                check="cpu_platform",
            )
    if tcb.gpu is not None:
        with checklist.run("gpu_platform", tcb.gpu.platform):
            if tcb.gpu.platform not in policy.gpu_platforms:
                raise PolicyViolation(
                    f"GPU platform {tcb.gpu.platform} is not accepted (the policy accepts "
                    f"{', '.join(policy.gpu_platforms) or 'none'})",
                    check="gpu_platform",
                )
    elif policy.require_gpu:
        checklist.fail(PolicyViolation("the policy requires GPU evidence and the TCB has none", check="gpu_required"))
    pieces = [tcb.cpu] if tcb.gpu is None else [tcb.cpu, tcb.gpu]
    simulated = sorted({p.platform for p in pieces if registry.info(p.platform).simulated})
    if simulated and not policy.allow_simulated:
        checklist.fail(
            PolicyViolation(
                f"{', '.join(simulated)} evidence is simulated and proves nothing about hardware; this policy "
                "accepts real TEEs only (allow_simulated = false)",
                check="simulated",
            )
        )
    checklist.passed("simulated", f"simulated: {', '.join(simulated)} (allowed)" if simulated else "none")
    return SIMULATED if simulated else TRUSTED


def appraise(
    tcb: Tcb,
    policy: AppraisalPolicy,
    *,
    now: datetime | None,
    expected_nonce: bytes,
    roots_by_platform: Mapping[str, Sequence[Certificate]] | None = None,
    checklist: Checklist | None = None,
) -> AttestationResult:
    """Verify, bind, check freshness, then validate ``tcb`` against ``policy``; raise naming the failed check.

    ``roots_by_platform`` overrides a platform's pinned vendor roots (and is the only source of roots for
    ``sim``); ``expected_nonce`` is the challenge the TCB must answer.
    """
    if len(expected_nonce) != NONCE_SIZE:
        raise ConfigError(f"the expected nonce is {NONCE_SIZE} bytes, not {len(expected_nonce)}")
    checklist = checklist if checklist is not None else Checklist()
    at = resolve_now(now)
    roots = roots_by_platform or {}
    cpu = _verify_slot(registry.CPU, tcb.cpu, at, roots, checklist)
    gpu = None if tcb.gpu is None else _verify_slot(registry.GPU, tcb.gpu, at, roots, checklist)
    _check_bindings(tcb, cpu, gpu, checklist)
    with checklist.run("nonce", "the TCB answers the expected challenge"):
        if tcb.nonce != expected_nonce:
            raise StaleEvidence(
                f"the TCB answers nonce {tcb.nonce.hex()}, not the expected {expected_nonce.hex()}: a replay or "
                "stale evidence; ask for a fresh challenge and collect evidence for it",
                check="nonce",
            )
    verdict = _check_platforms(tcb, policy, checklist)
    for slot, piece, claims in ((registry.CPU, tcb.cpu, cpu), (registry.GPU, tcb.gpu, gpu)):
        if piece is not None:
            with _scoped(checklist, slot, piece.platform) as inner:
                registry.platform(piece.platform).validate(claims, policy.rules(piece.platform), checklist=inner)
    return AttestationResult(cpu, gpu, verdict, policy.digest, tcb.digest, at, checklist)


def build_sim_tcb(
    chip: SimChip,
    gpu_chip: SimChip | None,
    *,
    loader: PublicIdentity,
    nonce: bytes,
    specs: dict[str, Any],
    measurement: bytes,
    gpu_measurements: Sequence[bytes] = SIM_GPU_FIRMWARE,
    debug: bool = False,
) -> Tcb:
    """A devnet machine's TCB: a sim GPU report for ``nonce`` (if a GPU chip is given), then the CPU report."""
    gpu = None
    if gpu_chip is not None:
        report = gpu_chip.gpu_report(nonce, measurements=gpu_measurements)
        gpu = PlatformEvidence("sim", gpu_chip.evidence(report).to_json())
    report_data = expected_report_data(loader, gpu, nonce)
    cpu_report = chip.cpu_report(report_data, measurement=measurement, debug=debug)
    return Tcb(PlatformEvidence("sim", chip.evidence(cpu_report).to_json()), gpu, loader, nonce, specs)
