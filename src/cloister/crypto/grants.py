"""Key grants (DESIGN §3): a content DEK sealed with HPKE to a machine's attested loader key.

The AAD binds the grant to one order, one content digest and one machine, so a grant posted on the ledger for
one job can never unlock the content for another job, another content or another machine.
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
    dek: bytes, recipient_public_key: bytes, *, order_id: str, content_digest: str, machine_id: str
) -> bytes:
    """Seal ``dek`` to a machine's loader key, usable only for this order, content and machine."""
    if not isinstance(dek, bytes) or len(dek) != KEY_SIZE:
        raise MalformedInput(f"a content key (DEK) is {KEY_SIZE} bytes; use the one the content was sealed with")
    return seal(recipient_public_key, dek, info=GRANT_INFO, aad=_binding(order_id, content_digest, machine_id))


def open_key_grant(
    sealed: bytes,
    recipient_private_key: X25519PrivateKey,
    *,
    order_id: str,
    content_digest: str,
    machine_id: str,
) -> bytes:
    """The DEK of a grant, if it was sealed to this key for exactly this order, content and machine."""
    aad = _binding(order_id, content_digest, machine_id)
    try:
        dek = open_sealed(recipient_private_key, sealed, info=GRANT_INFO, aad=aad)
    except IntegrityError:
        raise IntegrityError(
            f"the key grant does not open for order {order_id!r}, content {content_digest} on machine "
            f"{machine_id!r}: it was granted for another order, content or machine, to another loader key, "
            "or altered; ask the content owner's keeper to grant again",
            order_id=order_id,
            content_digest=content_digest,
            machine_id=machine_id,
        ) from None
    if len(dek) != KEY_SIZE:
        raise IntegrityError(
            f"the key grant for order {order_id!r} holds {len(dek)} bytes, not a {KEY_SIZE}-byte DEK; "
            "ask the content owner's keeper to grant again"
        )
    return dek


def _binding(order_id: str, content_digest: str, machine_id: str) -> bytes:
    """The canonical AAD naming the one order, content and machine a grant is for."""
    parse_digest(content_digest)
    for name, value in (("order_id", order_id), ("machine_id", machine_id)):
        if not isinstance(value, str) or not value:
            raise MalformedInput(f"a key grant needs a non-empty {name}, got {value!r}")
    return canonical_json({"order_id": order_id, "content_digest": content_digest, "machine_id": machine_id})
