"""The one error hierarchy of Cloister.

Every failure a user can meet is a subclass of :class:`CloisterError`. Each class has a stable ``code`` (used on
the wire, so an HTTP client raises the same class the server raised) and a message that says what to do next.
"""

from __future__ import annotations

from typing import Any, ClassVar


class CloisterError(Exception):
    """Base of every error Cloister raises on purpose."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 400

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        """The wire form: ``{"error": {"code", "message", "details"}}``."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    @staticmethod
    def from_json(body: Any, *, fallback_status: int = 500) -> CloisterError:
        """Rebuild the typed error a server sent; unknown codes become a plain :class:`RemoteError`."""
        try:
            err = body["error"]
            code, message = str(err["code"]), str(err["message"])
            details = err.get("details") or {}
            if not isinstance(details, dict):
                details = {}
        except (KeyError, TypeError):
            return RemoteError(f"server answered HTTP {fallback_status} without a Cloister error body")
        cls = _BY_CODE.get(code, RemoteError)
        return cls(message, **details)


# --- usage and configuration -------------------------------------------------------------------------------


class ConfigError(CloisterError):
    """Something about the local set-up is missing or wrong (home folder, devnet, endpoint)."""

    code = "config"


class RemoteError(CloisterError):
    """A server answered with an error this client does not know by name."""

    code = "remote"
    http_status = 502


class ServiceUnavailable(CloisterError):
    """A server could not be reached or did not answer in time."""

    code = "unavailable"
    http_status = 503


class BadRequest(CloisterError):
    """A request body was malformed (not JSON, wrong shape, wrong types)."""

    code = "bad_request"


class PayloadTooLarge(CloisterError):
    """A request body was larger than the server accepts."""

    code = "payload_too_large"
    http_status = 413


# --- cryptography --------------------------------------------------------------------------------------------


class CryptoError(CloisterError):
    """A cryptographic check failed."""

    code = "crypto"


class IntegrityError(CryptoError):
    """Content was tampered with, truncated, reordered or spliced, or the key or AAD is wrong."""

    code = "integrity"


class DigestMismatch(IntegrityError):
    """Bytes did not hash to the digest they were announced with."""

    code = "digest_mismatch"


class InvalidSignature(CryptoError):
    """A signature did not verify against the claimed key."""

    code = "invalid_signature"


class MalformedInput(CryptoError):
    """Bytes or text could not be parsed (wrong length, wrong prefix, not the format expected)."""

    code = "malformed"


class BindingMismatch(IntegrityError):
    """A correctly signed statement is about something else (another order, key or result): a replay or mix-up."""

    code = "binding_mismatch"


# --- keystore ------------------------------------------------------------------------------------------------


class KeystoreError(CloisterError):
    """Local key material is missing, unreadable or already present."""

    code = "keystore"


class AccountNotFound(KeystoreError):
    code = "account_not_found"
    http_status = 404


class AccountExists(KeystoreError):
    code = "account_exists"
    http_status = 409


class KeyNotFound(KeystoreError):
    code = "key_not_found"
    http_status = 404


# --- storage -------------------------------------------------------------------------------------------------


class StorageError(CloisterError):
    """The blob store failed or refused."""

    code = "storage"
    http_status = 502


class BlobNotFound(StorageError):
    code = "blob_not_found"
    http_status = 404


# --- ledger --------------------------------------------------------------------------------------------------


class LedgerError(CloisterError):
    """Base of ledger failures."""

    code = "ledger"


class TransactionRejected(LedgerError):
    """The ledger refused a transaction; nothing was recorded."""

    code = "rejected"


class InvalidTransaction(TransactionRejected):
    """The transaction is malformed: unknown type, missing or ill-typed fields."""

    code = "invalid_transaction"


class SignatureRejected(TransactionRejected):
    """The transaction's signature or public key does not match its sender."""

    code = "bad_signature"
    http_status = 401


class WrongChain(TransactionRejected):
    """The transaction names a different chain id than this ledger's."""

    code = "wrong_chain"


class NonceMismatch(TransactionRejected):
    """The nonce is not the sender's next one: a replay, or a skipped nonce."""

    code = "nonce_mismatch"
    http_status = 409


class InsufficientFunds(TransactionRejected):
    code = "insufficient_funds"
    http_status = 402


class RecordNotFound(TransactionRejected):
    """A transaction or query named an account, offer, machine or order that does not exist."""

    code = "not_found"
    http_status = 404


class RecordExists(TransactionRejected):
    code = "exists"
    http_status = 409


class NotAuthorized(TransactionRejected):
    """The sender is not allowed to do this to that record (not its owner, provider or assignee)."""

    code = "not_authorized"
    http_status = 403


class RestrictionViolated(TransactionRejected):
    """An offer's restriction (platform, region, engine digest, lease length) forbids the order."""

    code = "restriction_violated"
    http_status = 422


class InvalidState(TransactionRejected):
    """The record is not in a state that allows this transition."""

    code = "invalid_state"
    http_status = 409


class NoEligibleMachine(TransactionRejected):
    """No registered, live machine satisfies every restriction of the order."""

    code = "no_eligible_machine"
    http_status = 422


class LedgerCorrupted(LedgerError):
    """The stored log does not replay to the stored state; ``height`` names the first bad entry."""

    code = "corrupted"
    http_status = 500

    def __init__(self, message: str, *, height: int, **details: Any) -> None:
        super().__init__(message, height=height, **details)
        self.height = height


# --- attestation ---------------------------------------------------------------------------------------------


class AttestationError(CloisterError):
    """Attestation evidence was not accepted; ``check`` names the check that failed."""

    code = "attestation"
    http_status = 422

    def __init__(self, message: str, *, check: str, **details: Any) -> None:
        super().__init__(message, check=check, **details)
        self.check = check


class EvidenceMalformed(AttestationError):
    """Evidence, a certificate or collateral could not be parsed."""

    code = "evidence_malformed"


class VerificationFailed(AttestationError):
    """Evidence is not authentic: a signature, a binding or a freshness check failed (the *verify* step)."""

    code = "verification_failed"


class CertificateInvalid(VerificationFailed):
    """A certificate chain does not lead to a trusted root, or a certificate is expired, not yet valid or revoked."""

    code = "certificate_invalid"


class CollateralInvalid(VerificationFailed):
    """Vendor collateral (TCB info, identities, CRLs, reference measurements) is unsigned, stale or inapplicable."""

    code = "collateral_invalid"


class StaleEvidence(VerificationFailed):
    """Evidence does not carry the expected nonce: it may be a replay."""

    code = "stale_evidence"


class CollectionError(AttestationError):
    """The platform's evidence interface (configfs-tsm, NVML) is missing, refused, or kept changing under us."""

    code = "collection_failed"
    http_status = 503


class PolicyViolation(AttestationError):
    """Authentic evidence does not satisfy the policy (the *validate* step)."""

    code = "policy_violation"
    http_status = 403


# --- engines -------------------------------------------------------------------------------------------------


class EngineError(CloisterError):
    """Base of engine failures: bundles, manifests, jobs and engine runs."""

    code = "engine"
    http_status = 422


class ManifestInvalid(EngineError):
    """An ``engine.toml`` is missing, not TOML, or does not describe a valid engine."""

    code = "engine_manifest_invalid"


class BundleInvalid(EngineError):
    """An engine folder cannot be packed, or a packed bundle holds something unsafe (links, traversal, devices)."""

    code = "engine_bundle_invalid"


class EngineNotFound(EngineError):
    code = "engine_not_found"
    http_status = 404


class JobInvalid(EngineError):
    """A job for an engine is malformed: bad ``job.json``, unknown or ill-typed parameters, wrong inputs."""

    code = "engine_job_invalid"


class EngineFailed(EngineError):
    """The engine process exited with an error; ``returncode`` and the tail of its log say why."""

    code = "engine_failed"
    http_status = 500


class EngineTimeout(EngineFailed):
    """The engine ran longer than it was allowed and was killed."""

    code = "engine_timeout"
    http_status = 504


# --- runtime (trusted loader, vault) -------------------------------------------------------------------------


class LoaderError(CloisterError):
    """The trusted loader refused or failed a job; nothing of the job's plaintext is left on disk."""

    code = "loader"
    http_status = 422


class InputRefused(LoaderError):
    """An input of an order failed a check before the engine started; ``input`` names it, ``check`` the check."""

    code = "input_refused"

    def __init__(self, message: str, *, input: str, check: str, **details: Any) -> None:
        super().__init__(message, input=input, check=check, **details)
        self.input = input
        self.check = check


class VaultError(LoaderError):
    """A secrets vault could not be shared, joined, opened or written."""

    code = "vault"


def _collect(cls: type[CloisterError]) -> dict[str, type[CloisterError]]:
    found = {cls.code: cls}
    for sub in cls.__subclasses__():
        found.update(_collect(sub))
    return found


_BY_CODE: dict[str, type[CloisterError]] = {}


def register_codes() -> None:
    """Index every subclass by code; called at import and again by modules that add subclasses."""
    _BY_CODE.update(_collect(CloisterError))


register_codes()


# --- gateway -------------------------------------------------------------------------------------------------


class GatewayError(CloisterError):
    """Base of what the inference gateway refuses; the wire form is an OpenAI-style error body."""

    code = "gateway"


class ApiKeyRejected(GatewayError):
    """No API key, or one that is malformed, for another gateway, or not signed by its ledger account."""

    code = "invalid_api_key"
    http_status = 401


class CreditExhausted(GatewayError):
    """The caller's credit for the deployment (minus usage not yet settled) cannot cover the request."""

    code = "insufficient_credit"
    http_status = 402


class DeploymentNotFound(GatewayError):
    """The ``model`` names no inference deployment this gateway serves."""

    code = "model_not_found"
    http_status = 404


class ReceiptNotFound(GatewayError):
    code = "receipt_not_found"
    http_status = 404


class ConsensusFailed(GatewayError):
    """Replicas disagreed and no strict majority emerged, even after referees re-executed."""

    code = "no_consensus"
    http_status = 502


class ReplicaFailed(GatewayError):
    """The replica serving a request failed after it had started answering, so the request cannot be moved."""

    code = "replica_failed"
    http_status = 502


register_codes()


# --- consensus -----------------------------------------------------------------------------------------------


class InvalidConsensusMode(BadRequest):
    """A consensus mode string (API key, ``X-Cloister-Consensus`` header, order params) is not one we know."""

    code = "invalid_consensus_mode"


class InvalidRequest(BadRequest):
    """A chat completion request has a missing, ill-typed or out-of-range field; ``param`` names it."""

    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None, **details: Any) -> None:
        super().__init__(message, param=param, **details)
        self.param = param


class NotEnoughReplicas(ServiceUnavailable):
    """A consensus mode needs more live replicas than the deployment has right now."""

    code = "not_enough_replicas"


class ReceiptInvalid(IntegrityError):
    """A correctly signed receipt does not hold together: its selection, verdict or answer is not what it claims."""

    code = "receipt_invalid"


class SelectionMismatch(ReceiptInvalid):
    """A receipt names replicas that the seeded selection rule would not have chosen."""

    code = "selection_mismatch"


class VerdictMismatch(ReceiptInvalid):
    """A receipt's verdict is not the one its commitments decide."""

    code = "verdict_mismatch"


register_codes()


# --- security analysis (closed forms, simulator) -------------------------------------------------------------


class InvalidAnalysis(BadRequest):
    """A security calculation or simulation was asked with parameters out of range or inconsistent."""

    code = "invalid_analysis"


register_codes()


# --- replica serving (cloister.runtime.serving) --------------------------------------------------------------


class ReplicaError(CloisterError):
    """A replica could not produce a committed answer because its engine misbehaved (bad answer, crash)."""

    code = "replica_error"
    http_status = 502


class VaultJoinRefused(VaultError):
    """A replica refused to share a deployment's vault: the peer is not an attested machine of the same
    deployment running the same engine."""

    code = "vault_join_refused"
    http_status = 403


register_codes()
