"""The deployment key and how replicas pass it on: one X25519 key per deployment, kept in the secrets vault.

The first replica of a deployment creates the vault and the key; every later one joins through a live replica's
``POST /cloister/v1/vault/join``. The member hands the vault over only to a machine that the ledger lists, that
is attested, assigned to the same deployment and runs the deployment's engine: the vault key sealed to that
machine's loader key, and the vault file (ciphertext under that key). A sim-attested replica shares with sim
peers (a devnet); a hardware-attested one never does.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cloister.attest.tcb import SIMULATED
from cloister.crypto.identity import Identity
from cloister.errors import MalformedInput, RecordNotFound, VaultError, VaultJoinRefused
from cloister.ledger.protocol import LedgerReader
from cloister.ledger.records import OPEN_ORDER_STATES
from cloister.net import HttpClient
from cloister.runtime.vault import JoinRequest, Vault

JOIN_PATH = "/cloister/v1/vault/join"
KEY_ENTRY = "deployment-key:"
_FIELDS = ("engine_digest", "machine_id", "signature")


def deployment_key(vault: Vault, order_id: str) -> X25519PrivateKey:
    """The deployment's private key from the vault, made and stored there the first time."""
    name = KEY_ENTRY + order_id
    if name not in vault.names():
        vault.put(name, X25519PrivateKey.generate().private_bytes_raw())
    return X25519PrivateKey.from_private_bytes(vault.get(name))


def _b64(value: Any, what: str) -> bytes:
    try:
        if isinstance(value, str):
            return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        pass
    raise MalformedInput(f"{what} must be base64")


def join_request_json(request: JoinRequest) -> dict[str, str]:
    return {
        "machine_id": request.machine_id,
        "engine_digest": request.engine_digest,
        "signature": base64.b64encode(request.signature).decode(),
    }


def parse_join_request(body: Any) -> JoinRequest:
    if not isinstance(body, dict) or sorted(body) != list(_FIELDS):
        raise MalformedInput(f"a vault join request is an object with exactly {', '.join(_FIELDS)}")
    if not isinstance(body["machine_id"], str) or not isinstance(body["engine_digest"], str):
        raise MalformedInput("a vault join request names its machine and engine digest as text")
    return JoinRequest(body["machine_id"], body["engine_digest"], _b64(body["signature"], "signature"))


def share_vault(
    vault: Vault, request: JoinRequest, *, ledger: LedgerReader, order_id: str, machine_id: str
) -> dict[str, str]:
    """The join answer for ``request``, if the ledger shows the peer is a replica of this deployment's engine."""
    peer_id = request.machine_id
    try:
        peer = ledger.machine(peer_id)
        me = ledger.machine(machine_id)
        order = ledger.order(order_id)
        engine = ledger.offer(order.engine_offer).content_digest
    except RecordNotFound as exc:
        raise VaultJoinRefused(f"cannot check machine {peer_id:.80} on the ledger: {exc.message}") from None
    if order.state not in OPEN_ORDER_STATES:
        raise VaultJoinRefused(f"deployment {order_id} is {order.state}; its key is no longer handed out")
    if peer_id not in order.machines:
        raise VaultJoinRefused(
            f"machine {peer_id} is not assigned to deployment {order_id}; only its replicas get the deployment key"
        )
    if request.engine_digest != engine:
        raise VaultJoinRefused(
            f"machine {peer_id} runs engine {request.engine_digest:.80}, not deployment {order_id}'s {engine}"
        )
    try:
        sealed = vault.share_with(request, peer, allow_simulated=me.attestation_verdict == SIMULATED)
    except VaultError as exc:
        raise VaultJoinRefused(exc.message) from None
    return {
        "vault_id": vault.key.vault_id,
        "sealed_key": base64.b64encode(sealed).decode(),
        "vault": base64.b64encode(vault.path.read_bytes()).decode(),
    }


def join_vault(peer_url: str, identity: Identity, *, machine_id: str, engine_digest: str, path: Path) -> Vault:
    """Ask the replica at ``peer_url`` for the deployment's vault and open it at ``path``."""
    request = JoinRequest.make(identity, machine_id, engine_digest)
    with HttpClient(peer_url) as client:
        answer = client.post_json(JOIN_PATH, join_request_json(request))
    if not isinstance(answer, dict) or not isinstance(answer.get("vault_id"), str):
        raise VaultError(f"the replica at {peer_url} sent no vault; ask another replica")
    key = Vault.join(
        _b64(answer.get("sealed_key"), "sealed_key"),
        identity,
        machine_id=machine_id,
        vault_id=answer["vault_id"],
        engine_digest=engine_digest,
    )
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.write_bytes(_b64(answer.get("vault"), "vault"))
    return Vault.open(key, path)
