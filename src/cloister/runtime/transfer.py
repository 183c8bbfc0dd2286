"""Moving sealed content between the blob store and the workspace: fetch → decrypt → re-hash, and seal → upload.

Ciphertext is first copied into the workspace's scratch folder (the store may be remote and slow to re-read),
then opened all-or-nothing by :func:`cloister.crypto.stream.open_file`, so a plaintext file appears only once
every chunk authenticated and the whole hashed to the announced digest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cloister.crypto.stream import generate_key, open_file, seal_file
from cloister.storage import BlobStore

Progress = Callable[[int], None]
_COPY_SIZE = 1 << 20


@dataclass(frozen=True)
class SealedBlob:
    """A sealed upload: the plaintext digest, the ciphertext URI, and the fresh DEK (kept out of ``repr``)."""

    digest: str
    uri: str
    dek: bytes = field(repr=False)


def fetch_and_open(
    store: BlobStore,
    uri: str,
    dek: bytes,
    dest: Path,
    *,
    expected_digest: str,
    scratch: Path,
    fetched: Progress | None = None,
    opened: Progress | None = None,
) -> None:
    """Write the plaintext of ``uri`` at ``dest`` only if it authenticates and hashes to ``expected_digest``.

    ``fetched`` and ``opened`` receive byte counts as the ciphertext arrives and as the plaintext is checked.
    """
    cipher = scratch / (dest.name + ".sealed")
    try:
        with store.open(uri) as source, cipher.open("wb") as sink:
            while chunk := source.read(_COPY_SIZE):
                sink.write(chunk)
                if fetched is not None:
                    fetched(len(chunk))
        open_file(dek, cipher, dest, expected_digest=expected_digest, progress=opened)
    finally:
        cipher.unlink(missing_ok=True)


def seal_and_upload(store: BlobStore, source: Path, *, scratch: Path) -> SealedBlob:
    """Seal ``source`` with a fresh DEK, put the ciphertext in the store, and return where and with what key."""
    dek = generate_key()
    cipher = scratch / (source.name + ".sealed")
    try:
        sealed = seal_file(dek, source, cipher)
        with cipher.open("rb") as stream:
            ref = store.put(stream)
    finally:
        cipher.unlink(missing_ok=True)
    return SealedBlob(sealed.plaintext_digest, ref.uri, dek)
