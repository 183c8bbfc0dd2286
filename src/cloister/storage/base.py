"""What every blob store offers, and the content-addressed naming both backends share.

Blobs are ciphertext streams the caller already encrypted. Stores name each object by the SHA-256 of its bytes
(``ab/abcdef…``), so a name is also a checksum, identical uploads are stored once, and nothing is ever held
whole in memory: bytes are hashed while they stream through.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

from cloister.crypto.digest import READ_SIZE, format_digest, parse_digest
from cloister.errors import DigestMismatch, StorageError

if TYPE_CHECKING:
    from cloister.storage.local import LocalBlobStore
    from cloister.storage.s3 import S3BlobStore

Progress = Callable[[int], None]
_OBJECT_NAME = re.compile(r"^([0-9a-f]{2})/(\1[0-9a-f]{62})$")
_S3_OPTIONS = frozenset({"endpoint_url", "access_key", "secret_key", "region"})


@dataclass(frozen=True)
class BlobRef:
    """Where a blob lives, how long it is and the ``sha256:`` digest of its stored bytes."""

    uri: str
    size: int
    digest: str

    def __post_init__(self) -> None:
        parse_digest(self.digest)
        if self.size < 0:
            raise StorageError(f"a blob size cannot be negative ({self.size}) for {self.uri}")


class BlobStore(Protocol):
    """Put and read ciphertext streams.

    A missing blob raises ``BlobNotFound``; a malformed URI or one of another store raises ``StorageError``.
    """

    def put(self, source: BinaryIO, *, progress: Progress | None = None) -> BlobRef:
        """Store everything left in ``source``; ``progress`` gets the size of each batch of bytes consumed."""
        ...

    def open(self, uri: str) -> AbstractContextManager[BinaryIO]:
        """A readable stream over the blob, closed when the ``with`` block ends."""
        ...

    def exists(self, uri: str) -> bool: ...

    def size(self, uri: str) -> int: ...

    def delete(self, uri: str) -> None:
        """Remove the blob; content-addressed, so every holder of this URI loses it."""
        ...

    def verify(self, uri: str) -> BlobRef:
        """Re-hash the stored bytes against the name; raise ``DigestMismatch`` if they were altered."""
        ...


class HashingReader:
    """Reads a source once, hashing and counting every byte, so the name is known without a second pass."""

    def __init__(self, source: BinaryIO, progress: Progress | None = None) -> None:
        self._source = source
        self._progress = progress
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, limit: int = READ_SIZE) -> bytes:
        """At most ``limit`` bytes (one read of the source); ``b""`` only at the end."""
        try:
            chunk = self._source.read(limit)
        except OSError as exc:
            raise StorageError(f"reading the blob source failed ({exc}); nothing was stored, put it again") from exc
        if not isinstance(chunk, bytes | bytearray):
            raise StorageError(f"a blob source must be a binary stream (open it with 'rb'), got {type(chunk)}")
        if chunk:
            self._hash.update(chunk)
            self.size += len(chunk)
            if self._progress is not None:
                self._progress(len(chunk))
        return bytes(chunk)

    def readinto(self, buffer: bytearray) -> int:
        """Fill ``buffer``, refilling after short reads; fewer bytes only at the end of the source."""
        filled = 0
        with memoryview(buffer) as view:
            while filled < len(buffer):
                chunk = self.read(min(READ_SIZE, len(buffer) - filled))
                if not chunk:
                    break
                view[filled : filled + len(chunk)] = chunk
                filled += len(chunk)
        return filled

    @property
    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def ref(self, uri: str) -> BlobRef:
        return BlobRef(uri=uri, size=self.size, digest=format_digest(self._hash.digest()))


def object_name(hexdigest: str) -> str:
    """The content-addressed name of an object: ``ab/abcdef…`` (a two-character shard, then the full hash)."""
    return f"{hexdigest[:2]}/{hexdigest}"


def refuse_traversal(path: str, uri: str) -> None:
    """Reject ``.``/``..`` segments before any path arithmetic, so no URI can reach outside its store."""
    if any(segment in {".", ".."} for segment in path.split("/")):
        raise StorageError(f"refusing {uri!r}: '.' and '..' segments (path traversal) are not allowed in blob URIs")


def parse_object_name(name: str, uri: str) -> str:
    """The hex digest named by ``ab/abcdef…``; anything else is not an object of a Cloister store."""
    refuse_traversal(name, uri)
    match = _OBJECT_NAME.match(name)
    if match is None:
        raise StorageError(
            f"{uri!r} does not name a content-addressed blob ('<2 hex>/<64 hex>' under the store root); "
            "use the URI that put() returned"
        )
    return match.group(2)


def verify_stream(stream: BinaryIO, hexdigest: str, uri: str) -> BlobRef:
    """Hash a stored object and compare it to its name."""
    reader = HashingReader(stream)
    while reader.read():
        pass
    if reader.hexdigest != hexdigest:
        raise DigestMismatch(
            f"blob {uri} was altered: its bytes hash to {reader.hexdigest}, not to its name; "
            "delete it and put the content again",
            uri=uri,
        )
    return reader.ref(uri)


def open_store(spec: str, **options: str) -> BlobStore:
    """Open the store a spec names: a folder path, ``file:///abs/folder`` or ``s3://bucket[/prefix]``.

    S3 options (``endpoint_url``, ``access_key``, ``secret_key``, ``region``) fall back to
    ``CLOISTER_S3_ENDPOINT``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_REGION``.
    """
    if spec.startswith("s3://"):
        return _open_s3(spec, options)
    if options:
        raise StorageError(f"a local blob store takes no options, got {sorted(options)}; drop them or use s3://")
    return _open_local(spec)


def _open_local(spec: str) -> LocalBlobStore:
    from cloister.storage.local import LocalBlobStore

    if spec.startswith("file://"):
        parts = urlsplit(spec)
        if parts.netloc not in {"", "localhost"} or parts.query or parts.fragment:
            raise StorageError(f"{spec!r}: a file:// store must be a local absolute folder, like file:///srv/blobs")
        path = unquote(parts.path)
        refuse_traversal(path, spec)
        return LocalBlobStore(Path(path))
    if not spec or "://" in spec:
        raise StorageError(
            f"cannot open blob store {spec!r}: give a folder path, file:///abs/folder or s3://bucket[/prefix]"
        )
    return LocalBlobStore(Path(spec).expanduser())


def _open_s3(spec: str, options: dict[str, str]) -> S3BlobStore:
    from cloister.storage.s3 import S3BlobStore

    unknown = set(options) - _S3_OPTIONS
    if unknown:
        raise StorageError(f"unknown S3 store options {sorted(unknown)}; known: {sorted(_S3_OPTIONS)}")
    bucket, _, prefix = spec.removeprefix("s3://").partition("/")
    return S3BlobStore(
        bucket,
        prefix=prefix.strip("/"),
        endpoint_url=options.get("endpoint_url") or os.environ.get("CLOISTER_S3_ENDPOINT"),
        access_key=options.get("access_key") or os.environ.get("AWS_ACCESS_KEY_ID"),
        secret_key=options.get("secret_key") or os.environ.get("AWS_SECRET_ACCESS_KEY"),
        region=options.get("region") or os.environ.get("AWS_REGION") or "us-east-1",
    )
