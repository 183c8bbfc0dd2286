"""The statement a replica's loader signs to publish its endpoint and the deployment key on the ledger.

Signed by the attested loader key (not the provider's account key), so the ledger and every client know the URL
and the X25519 deployment key come from inside the TEE: a provider's host cannot swap in a key it holds.
"""

from __future__ import annotations

import re

from cloister.consensus.wire import check_bytes, check_id, check_text
from cloister.crypto.canonical import canonical_json
from cloister.crypto.identity import Identity, address_of, verify_signature
from cloister.errors import InvalidSignature, MalformedInput

ENDPOINT_DOMAIN = "cloister/deployment-endpoint/v1"
KEY_SIZE = 32
MAX_URL = 2048
_URL_RE = re.compile(r"^https?://[^\s/?#]+(?:[/?#]\S*)?$")


def endpoint_statement(order_id: str, machine_id: str, url: str, deployment_key: bytes) -> bytes:
    """Canonical ``{"order_id", "machine_id", "url", "deployment_key": hex}``: the bytes the loader signs."""
    check_id(order_id, "order id")
    check_id(machine_id, "machine id")
    check_text(url, "endpoint URL", MAX_URL)
    if not _URL_RE.match(url):
        raise MalformedInput(f"an endpoint URL is http:// or https:// followed by a host, got {url!r:.80}")
    check_bytes(deployment_key, "a deployment key (X25519 public key)", KEY_SIZE, KEY_SIZE)
    return canonical_json(
        {"order_id": order_id, "machine_id": machine_id, "url": url, "deployment_key": deployment_key.hex()}
    )


def sign_endpoint(loader: Identity, order_id: str, machine_id: str, url: str, deployment_key: bytes) -> bytes:
    """The loader's signature (``key_signature``) of the endpoint statement."""
    return loader.sign(ENDPOINT_DOMAIN, endpoint_statement(order_id, machine_id, url, deployment_key))


def verify_endpoint(
    loader_signing_key: bytes, order_id: str, machine_id: str, url: str, deployment_key: bytes, signature: bytes
) -> None:
    """Raise :class:`InvalidSignature` unless the machine's loader signed exactly this endpoint and key."""
    statement = endpoint_statement(order_id, machine_id, url, deployment_key)
    try:
        verify_signature(loader_signing_key, ENDPOINT_DOMAIN, statement, signature)
    except InvalidSignature:
        raise InvalidSignature(
            f"the endpoint of machine {machine_id} for order {order_id} is not signed by its loader key "
            f"{address_of(loader_signing_key)}; the replica must sign it with its attested loader identity",
            machine_id=machine_id,
            order_id=order_id,
        ) from None
