"""The one digest of Cloister: SHA-256 written as ``sha256:<64 hex>``."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Protocol

from cloister.errors import MalformedInput

PREFIX = "sha256:"
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
READ_SIZE = 1 << 20


class Readable(Protocol):
    """Anything with a binary ``read``: files, sockets, wrapped streams."""

    def read(self, size: int = -1, /) -> bytes: ...


def digest_bytes(data: bytes) -> str:
    """Digest of a byte string."""
    return PREFIX + hashlib.sha256(data).hexdigest()


def digest_chunks(chunks: Iterable[bytes]) -> str:
    """Digest of a stream given as chunks, in constant memory."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    return PREFIX + h.hexdigest()


def digest_file(stream: Readable) -> str:
    """Digest of everything left in a binary stream."""
    return digest_chunks(iter(lambda: stream.read(READ_SIZE), b""))


def format_digest(raw: bytes) -> str:
    """Write 32 raw SHA-256 bytes in the ``sha256:`` form."""
    if len(raw) != 32:
        raise MalformedInput(f"a SHA-256 digest is 32 bytes, got {len(raw)}")
    return PREFIX + raw.hex()


def parse_digest(text: str) -> bytes:
    """Check the ``sha256:<hex>`` form and return the 32 raw bytes."""
    if not isinstance(text, str) or not _DIGEST_RE.match(text):
        raise MalformedInput(f"not a digest: {text!r}; expected 'sha256:' followed by 64 lower-case hex digits")
    return bytes.fromhex(text[len(PREFIX) :])


def is_digest(text: object) -> bool:
    return isinstance(text, str) and _DIGEST_RE.match(text) is not None
