"""The secrets vault: encrypted key-value state that only loaders running one engine digest can open.

The vault key is made by the first loader (:meth:`Vault.create`) and handed on loader to loader: a peer asks with
a :class:`JoinRequest` signed by its attested loader key naming the engine digest it runs; a member checks the
signature against the peer's registered :class:`~cloister.ledger.records.Machine` (whose TCB the network
appraised), its verdict and the engine digest, then seals the key to the peer's loader key with HPKE, bound to
vault id, engine digest and peer machine. The file is one AES-256-GCM message over the canonical JSON entries,
the AAD naming vault id and engine digest. Not defended: a host replaying an older vault file (no monotonic
counter yet), so keep only state whose rollback is harmless.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cloister.attest.tcb import SIMULATED
from cloister.crypto.canonical import canonical_json, loads
from cloister.crypto.digest import parse_digest
from cloister.crypto.hpke import open_sealed, seal
from cloister.crypto.identity import Identity, verify_signature
from cloister.errors import CloisterError, VaultError
from cloister.ledger.records import Machine

JOIN_DOMAIN = "cloister/vault-join/v1"
SHARE_INFO = b"cloister/vault-key/v1"
_NONCE = 12


@dataclass(frozen=True)
class VaultKey:
    """What makes a vault: its id, the engine digest it belongs to, and the 32-byte key (kept out of ``repr``)."""

    vault_id: str
    engine_digest: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class JoinRequest:
    """A loader's signed request to join a vault: its machine and the engine digest it runs."""

    machine_id: str
    engine_digest: str
    signature: bytes

    @classmethod
    def make(cls, identity: Identity, machine_id: str, engine_digest: str) -> JoinRequest:
        return cls(machine_id, engine_digest, identity.sign(JOIN_DOMAIN, _join_body(machine_id, engine_digest)))


def _join_body(machine_id: str, engine_digest: str) -> bytes:
    return canonical_json({"machine_id": machine_id, "engine_digest": engine_digest})


def _share_aad(key: VaultKey, machine_id: str) -> bytes:
    return canonical_json({"vault_id": key.vault_id, "engine_digest": key.engine_digest, "machine_id": machine_id})


class Vault:
    """An open vault backed by one file; every write re-seals the whole file atomically."""

    def __init__(self, key: VaultKey, path: Path, entries: dict[str, str]) -> None:
        self.key, self.path, self._entries = key, Path(path), entries

    @classmethod
    def create(cls, engine_digest: str, path: Path) -> Vault:
        parse_digest(engine_digest)
        vault = cls(VaultKey(os.urandom(16).hex(), engine_digest, AESGCM.generate_key(256)), path, {})
        vault._save()
        return vault

    @classmethod
    def open(cls, key: VaultKey, path: Path) -> Vault:
        """Decrypt the vault file; a wrong key, another vault's file or any alteration raises :class:`VaultError`."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise VaultError(
                f"cannot read the vault file {path}: {exc.strerror}; restore it or create a vault"
            ) from None
        try:
            plain = AESGCM(key.secret).decrypt(data[:_NONCE], data[_NONCE:], _file_aad(key))
            entries = loads(plain)
        except (InvalidTag, ValueError, CloisterError):
            raise VaultError(
                f"the vault file {path} does not open with vault {key.vault_id}'s key: it was altered, truncated "
                "or belongs to another vault; restore it from a good copy"
            ) from None
        if not isinstance(entries, dict) or not all(isinstance(v, str) for v in entries.values()):
            raise VaultError(f"the vault file {path} does not hold string entries; restore it from a good copy")
        return cls(key, path, entries)

    def get(self, name: str) -> bytes:
        try:
            return base64.b64decode(self._entries[name], validate=True)
        except KeyError:
            raise VaultError(f"the vault has no entry {name!r}; put it first") from None
        except binascii.Error:
            raise VaultError(f"the vault entry {name!r} is damaged") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def put(self, name: str, value: bytes) -> None:
        if not name:
            raise VaultError("a vault entry needs a non-empty name")
        self._entries[name] = base64.b64encode(value).decode()
        self._save()

    def delete(self, name: str) -> None:
        if self._entries.pop(name, None) is None:
            raise VaultError(f"the vault has no entry {name!r} to delete")
        self._save()

    def share_with(self, request: JoinRequest, peer: Machine, *, allow_simulated: bool = False) -> bytes:
        """Seal the vault key to ``peer``'s loader, if it proves it runs this vault's engine on its attested machine."""
        if request.machine_id != peer.machine_id:
            raise VaultError(f"the join request names {request.machine_id}, not the machine {peer.machine_id}")
        try:
            verify_signature(
                peer.loader_signing_key,
                JOIN_DOMAIN,
                _join_body(request.machine_id, request.engine_digest),
                request.signature,
            )
        except CloisterError:
            raise VaultError(
                f"the join request is not signed by machine {peer.machine_id}'s attested loader key; refusing"
            ) from None
        if not peer.active or (peer.attestation_verdict == SIMULATED and not allow_simulated):
            raise VaultError(
                f"machine {peer.machine_id} is inactive or only simulated-attested; refusing to share the vault"
            )
        if request.engine_digest != self.key.engine_digest:
            raise VaultError(
                f"machine {peer.machine_id} runs engine {request.engine_digest}, not this vault's "
                f"{self.key.engine_digest}; only loaders of the same engine may share a vault"
            )
        secret = canonical_json({"vault_id": self.key.vault_id, "secret": self.key.secret.hex()})
        return seal(peer.loader_sealing_key, secret, info=SHARE_INFO, aad=_share_aad(self.key, peer.machine_id))

    @staticmethod
    def join(sealed: bytes, identity: Identity, *, machine_id: str, vault_id: str, engine_digest: str) -> VaultKey:
        """Open a shared vault key sealed to this loader for this machine, vault and engine."""
        expected = VaultKey(vault_id, engine_digest, b"")
        try:
            raw = loads(
                open_sealed(identity.sealing_private_key, sealed, info=SHARE_INFO, aad=_share_aad(expected, machine_id))
            )
            return VaultKey(vault_id, engine_digest, bytes.fromhex(raw["secret"]))
        except (CloisterError, ValueError, KeyError, TypeError):
            raise VaultError(
                f"the shared vault key does not open for vault {vault_id} on machine {machine_id} with engine "
                f"{engine_digest}; ask a member loader to share it again"
            ) from None

    def _save(self) -> None:
        nonce = os.urandom(_NONCE)
        body = canonical_json(self._entries)
        data = nonce + AESGCM(self.key.secret).encrypt(nonce, body, _file_aad(self.key))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        Path(temp).replace(self.path)


def _file_aad(key: VaultKey) -> bytes:
    return canonical_json({"vault_id": key.vault_id, "engine_digest": key.engine_digest})
