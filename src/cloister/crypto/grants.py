"""Key grants (DESIGN §3): a content DEK sealed with HPKE to a machine's attested loader key.

The AAD binds the grant to one order, one content digest, one machine and the engine the owner consented to, so a
grant posted on the ledger for one job can never unlock the content for another job, another content, another
machine — or for a host that presents the loader a forged order naming a different engine.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cloister.crypto.canonical import canonical_json
from cloister.crypto.digest import parse_digest
from cloister.crypto.hpke import open_sealed, seal
from cloister.crypto.stream import KEY_SIZE
from cloister.errors import IntegrityError, MalformedInput

GRANT_INFO = b"cloister/key-grant/v1"


def seal_key_grant(
    dek: bytes,
    recipient_public_key: bytes,
    *,
    order_id: str,
    content_digest: str,
    machine_id: str,
    engine_digest: str,
) -> bytes:
    """Seal ``dek`` to a machine's loader key, usable only for this order, content, machine and engine."""
    if not isinstance(dek, bytes) or len(dek) != KEY_SIZE:
        raise MalformedInput(f"a content key (DEK) is {KEY_SIZE} bytes; use the one the content was sealed with")
    aad = _binding(order_id, content_digest, machine_id, engine_digest)
    return seal(recipient_public_key, dek, info=GRANT_INFO, aad=aad)


def open_key_grant(
    sealed: bytes,
    recipient_private_key: X25519PrivateKey,
    *,
    order_id: str,
    content_digest: str,
    machine_id: str,
    engine_digest: str,
) -> bytes:
    """The DEK of a grant, if it was sealed to this key for exactly this order, content, machine and engine."""
    aad = _binding(order_id, content_digest, machine_id, engine_digest)
    try:
        dek = open_sealed(recipient_private_key, sealed, info=GRANT_INFO, aad=aad)
    except IntegrityError:
        raise IntegrityError(
            f"the key grant does not open for order {order_id!r}, content {content_digest} on machine "
            f"{machine_id!r} with engine {engine_digest}: it was granted for another order, content, machine or "
            "engine, to another loader key, or altered; ask the content owner's keeper to grant again",
            order_id=order_id,
            content_digest=content_digest,
            machine_id=machine_id,
            engine_digest=engine_digest,
        ) from None
    if len(dek) != KEY_SIZE:
        raise IntegrityError(
            f"the key grant for order {order_id!r} holds {len(dek)} bytes, not a {KEY_SIZE}-byte DEK; "
            "ask the content owner's keeper to grant again"
        )
    return dek


def _binding(order_id: str, content_digest: str, machine_id: str, engine_digest: str) -> bytes:
    """The canonical AAD naming the one order, content, machine and engine a grant is for."""
    parse_digest(content_digest)
    parse_digest(engine_digest)
    for name, value in (("order_id", order_id), ("machine_id", machine_id)):
        if not isinstance(value, str) or not value:
            raise MalformedInput(f"a key grant needs a non-empty {name}, got {value!r}")
    return canonical_json(
        {
            "order_id": order_id,
            "content_digest": content_digest,
            "machine_id": machine_id,
            "engine_digest": engine_digest,
        }
    )
