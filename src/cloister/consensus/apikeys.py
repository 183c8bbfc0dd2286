"""API keys that need no server-side database: a statement signed by the caller's own ledger account.

``clk_`` + base64url(canonical ``{"account", "gateway", "consensus", "issued_at"}``) + ``.`` + base64url(Ed25519
signature, domain :data:`API_KEY_DOMAIN`), unpadded. The gateway checks the signature against the account's key on
the ledger, so a key works only for the account that signed it, only at the gateway it names.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from dataclasses import dataclass
from typing import NoReturn

from cloister.consensus.modes import parse_mode
from cloister.consensus.wire import check_count, json_object
from cloister.crypto.canonical import canonical_json, loads
from cloister.crypto.identity import Identity, address_of, is_address, verify_signature
from cloister.errors import ApiKeyRejected, CloisterError, InvalidSignature

API_KEY_DOMAIN = "cloister/api-key/v1"
PREFIX = "clk_"
MAX_API_KEY = 1024
SIGNATURE_SIZE = 64
FIELDS = ("account", "gateway", "consensus", "issued_at")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class ApiKey:
    """A parsed key; ``payload`` is the signed canonical JSON. Call :meth:`verify` before trusting it."""

    account: str
    gateway: str
    consensus: str | None
    issued_at: int
    payload: bytes
    signature: bytes

    def verify(self, account_signing_key: bytes) -> None:
        """Raise :class:`ApiKeyRejected` unless ``account_signing_key`` is the account's and signed this key."""
        if address_of(account_signing_key) != self.account:
            _reject(f"the signing key given is not account {self.account}'s; look the account up on the ledger")
        try:
            verify_signature(account_signing_key, API_KEY_DOMAIN, self.payload, self.signature)
        except InvalidSignature:
            _reject(f"the API key is not signed by account {self.account}: it was altered; make a new one")


def make_api_key(identity: Identity, gateway: str, consensus: str | None = None, issued_at: int | None = None) -> str:
    """A key for ``identity``'s account at ``gateway`` (an address), optionally fixing its default consensus mode."""
    payload = canonical_json(
        {
            "account": identity.address,
            "gateway": gateway,
            "consensus": None if consensus is None else str(parse_mode(consensus)),
            "issued_at": int(time.time()) if issued_at is None else issued_at,
        }
    )
    _fields(payload)
    signature = identity.sign(API_KEY_DOMAIN, payload)
    return f"{PREFIX}{_encode(payload)}.{_encode(signature)}"


def parse_api_key(text: str) -> ApiKey:
    """Parse the key's form strictly (one spelling per key); raise :class:`ApiKeyRejected` on anything else."""
    if not isinstance(text, str) or not text.startswith(PREFIX) or len(text) > MAX_API_KEY:
        _reject(f"an API key starts with {PREFIX!r} and is at most {MAX_API_KEY} characters")
    body, _, sig = text[len(PREFIX) :].partition(".")
    payload, signature = _decode(body), _decode(sig)
    if len(signature) != SIGNATURE_SIZE:
        _reject(f"an API key's signature is {SIGNATURE_SIZE} bytes")
    account, gateway, consensus, issued_at = _fields(payload)
    return ApiKey(account, gateway, consensus, issued_at, payload, signature)


def _fields(payload: bytes) -> tuple[str, str, str | None, int]:
    try:
        data = loads(payload)
        if canonical_json(data) != payload:
            _reject("the API key's payload is not in canonical form; it was altered")
        f = json_object(data, "API key payload", FIELDS)
        check_count(f["issued_at"], "issued_at")
        consensus = f["consensus"]
        if consensus is not None and (not isinstance(consensus, str) or str(parse_mode(consensus)) != consensus):
            _reject(f"the API key's consensus {consensus!r:.40} is not a mode in canonical form")
    except ApiKeyRejected:
        raise
    except CloisterError as exc:
        _reject(f"the API key's payload is malformed ({exc.message})")
    for name in ("account", "gateway"):
        if not is_address(f[name]):
            _reject(f"the API key's {name} must be a ledger address, got {f[name]!r:.60}")
    return f["account"], f["gateway"], consensus, f["issued_at"]


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(text: str) -> bytes:
    """Unpadded base64url in its one canonical spelling."""
    if not _B64URL_RE.match(text):
        _reject("an API key is clk_<base64url payload>.<base64url signature>")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        _reject("an API key holds invalid base64url")
    if _encode(raw) != text:
        _reject("an API key holds base64url that is not in canonical form; it was altered")
    return raw


def _reject(problem: str) -> NoReturn:
    raise ApiKeyRejected(f"{problem}; send 'Authorization: Bearer clk_…' with a key your account signed")
