"""Result keys: each output's DEK sealed to the order owner only, and the owner-side helper that opens a result.

The sealing is HPKE to the owner's X25519 key with its own ``info`` (:data:`RESULT_INFO`, never a key grant's)
and the AAD ``{order_id, content_digest, recipient}``, where ``recipient`` is the owner's ledger address: a
result key opens only for that owner, that order and that output. The loader never keeps the DEK, so neither the
provider nor the loader itself can open a result afterwards. Checkpoint keys are sealed the same way, so the
owner's keeper can re-grant them to a replacement machine after a fail-over.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from cloister.crypto.canonical import canonical_json
from cloister.crypto.digest import parse_digest
from cloister.crypto.hpke import open_sealed, seal
from cloister.crypto.identity import Identity
from cloister.crypto.stream import KEY_SIZE
from cloister.errors import IntegrityError, MalformedInput
from cloister.provenance.report import Output
from cloister.runtime.archive import is_archive_name, unpack_folder
from cloister.runtime.transfer import fetch_and_open
from cloister.storage import BlobStore

RESULT_INFO = b"cloister/result-key/v1"


def _binding(order_id: str, content_digest: str, recipient: str) -> bytes:
    parse_digest(content_digest)
    if not order_id or not recipient:
        raise MalformedInput("a result key is bound to a non-empty order id and recipient address")
    return canonical_json({"order_id": order_id, "content_digest": content_digest, "recipient": recipient})


def seal_result_key(
    dek: bytes, owner_sealing_key: bytes, *, owner_address: str, order_id: str, content_digest: str
) -> bytes:
    """Seal an output's DEK so only the order owner, for this order and this output, can open it."""
    if len(dek) != KEY_SIZE:
        raise MalformedInput(f"a result key is {KEY_SIZE} bytes")
    return seal(owner_sealing_key, dek, info=RESULT_INFO, aad=_binding(order_id, content_digest, owner_address))


def open_result_key(sealed: bytes, owner: Identity, *, order_id: str, content_digest: str) -> bytes:
    """The DEK of one output, if it was sealed to ``owner`` for this order and output."""
    try:
        dek = open_sealed(
            owner.sealing_private_key,
            sealed,
            info=RESULT_INFO,
            aad=_binding(order_id, content_digest, owner.address),
        )
    except IntegrityError:
        raise IntegrityError(
            f"the result key for {content_digest} of order {order_id!r} does not open with account {owner.address}: "
            "it was sealed to the order owner only, for another order or output, or altered; "
            "open it with the account that placed the order",
            order_id=order_id,
            content_digest=content_digest,
        ) from None
    if len(dek) != KEY_SIZE:
        raise IntegrityError(f"the result key for order {order_id!r} is not a {KEY_SIZE}-byte DEK; do not use it")
    return dek


def open_result(
    store: BlobStore, output: Output, sealed_key: bytes, owner: Identity, *, order_id: str, dest_dir: Path
) -> Path:
    """Download, decrypt and re-hash one output into ``dest_dir``; a ``….tar`` output is unpacked into a folder.

    Nothing is written unless the key opens and the plaintext matches the digest in the (verified) report.
    """
    if "/" in output.name or output.name in {".", ".."}:
        raise MalformedInput(f"the output name {output.name!r} is not a plain file name; do not trust this report")
    dek = open_result_key(sealed_key, owner, order_id=order_id, content_digest=output.digest)
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix=".result-") as scratch:
        plain = Path(scratch) / "plain"
        fetch_and_open(store, output.uri, dek, plain, expected_digest=output.digest, scratch=Path(scratch))
        if is_archive_name(output.name):
            target = dest_dir / output.name.removesuffix(".tar")
            unpack_folder(plain, target)
        else:
            target = dest_dir / output.name
            plain.replace(target)
    return target
