"""Chunked streaming AEAD for content of any size in constant memory (DESIGN §3, "Sealed content").

Layout: a 32-byte header ``magic | version | chunk size (u32 BE) | salt (16) | nonce prefix (7)``, then
chunks of ``chunk size`` plaintext bytes each sealed with AES-256-GCM (16-byte tag). Every chunk but the last
is full; the last is shorter (possibly empty), so a reader knows which chunk must be last without reading
ahead. The nonce ``prefix || index (u32 BE) || last flag`` and the AAD ``header || caller's aad`` make
truncation, reordering, splicing, appending and header edits fail authentication. The AES key is
HKDF-SHA256(DEK, salt), so one DEK can seal many streams without ever repeating a (key, nonce) pair.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cloister.crypto.digest import PREFIX, parse_digest
from cloister.errors import DigestMismatch, IntegrityError, MalformedInput

KEY_SIZE = 32
CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 16
MAX_CHUNK_SIZE = 64 << 20
TAG_SIZE = 16
MAGIC = b"CLSA"
VERSION = 1
_HEADER = struct.Struct(">4sBI16s7s")
HEADER_SIZE = _HEADER.size
_SALT_SIZE = 16
_PREFIX_SIZE = 7
_MAX_INDEX = 0xFFFFFFFF
_KEY_INFO = b"cloister/stream/v1"

Progress = Callable[[int], None]


@dataclass(frozen=True)
class SealResult:
    """What sealing learned in its single pass: the plaintext's digest and both sizes."""

    plaintext_digest: str
    plaintext_size: int
    ciphertext_size: int


@dataclass(frozen=True)
class OpenResult:
    """The digest and size of the plaintext that was authenticated and written."""

    plaintext_digest: str
    plaintext_size: int


def generate_key() -> bytes:
    """A fresh random 32-byte DEK."""
    return os.urandom(KEY_SIZE)


def ciphertext_size(plaintext_size: int, chunk_size: int = CHUNK_SIZE) -> int:
    """Exact sealed size of ``plaintext_size`` bytes, e.g. to size a progress bar before opening."""
    _check_chunk_size(chunk_size)
    if plaintext_size < 0:
        raise MalformedInput(f"a plaintext size cannot be negative, got {plaintext_size}")
    return HEADER_SIZE + plaintext_size + (plaintext_size // chunk_size + 1) * TAG_SIZE


def seal_stream(
    key: bytes,
    source: BinaryIO,
    sink: BinaryIO,
    *,
    aad: bytes = b"",
    chunk_size: int = CHUNK_SIZE,
    progress: Progress | None = None,
) -> SealResult:
    """Encrypt everything left in ``source`` to ``sink``, hashing the plaintext in the same pass."""
    _check_chunk_size(chunk_size)
    header = _HEADER.pack(MAGIC, VERSION, chunk_size, os.urandom(_SALT_SIZE), os.urandom(_PREFIX_SIZE))
    cipher, chunk_aad, prefix = _cipher(key, header, aad)
    sink.write(header)
    plain = memoryview(bytearray(chunk_size))
    sealed = memoryview(bytearray(chunk_size + TAG_SIZE))
    hasher = hashlib.sha256()
    total = index = 0
    while True:
        size = _read_full(source, plain)
        last = size < chunk_size
        chunk = plain[:size]
        hasher.update(chunk)
        out = sealed[: size + TAG_SIZE]
        cipher.encrypt_into(_nonce(prefix, index, last), chunk, chunk_aad, out)
        sink.write(out)
        total += size
        if progress is not None and size:
            progress(size)
        if last:
            break
        index += 1
    return SealResult(PREFIX + hasher.hexdigest(), total, ciphertext_size(total, chunk_size))


def open_stream(
    key: bytes,
    source: BinaryIO,
    sink: BinaryIO,
    *,
    aad: bytes = b"",
    progress: Progress | None = None,
) -> OpenResult:
    """Decrypt a sealed stream to ``sink``, writing each chunk only once it has authenticated.

    The end of the stream can only be checked after the last chunk, so when this raises, ``sink`` may already
    hold an authentic *prefix* of the plaintext. Use :func:`open_file` when all-or-nothing output matters.
    """
    header = _read_header(source)
    chunk_size = _parse_header(header)
    cipher, chunk_aad, prefix = _cipher(key, header, aad)
    sealed = memoryview(bytearray(chunk_size + TAG_SIZE))
    plain = memoryview(bytearray(chunk_size))
    hasher = hashlib.sha256()
    total = index = 0
    while True:
        size = _read_full(source, sealed)
        if size < TAG_SIZE:
            raise IntegrityError(_missing_chunk(index, size))
        last = size < len(sealed)
        chunk = plain[: size - TAG_SIZE]
        try:
            cipher.decrypt_into(_nonce(prefix, index, last), sealed[:size], chunk_aad, chunk)
        except InvalidTag:
            raise IntegrityError(_bad_chunk(index, last)) from None
        hasher.update(chunk)
        sink.write(chunk)
        total += len(chunk)
        if progress is not None and len(chunk):
            progress(len(chunk))
        if last:
            break
        index += 1
    return OpenResult(PREFIX + hasher.hexdigest(), total)


def seal_file(
    key: bytes, source_path: Path, dest_path: Path, *, aad: bytes = b"", progress: Progress | None = None
) -> SealResult:
    """Seal a file; ``dest_path`` appears only complete (written beside it, then renamed)."""
    with source_path.open("rb") as source, _atomic_output(dest_path) as sink:
        return seal_stream(key, source, sink, aad=aad, progress=progress)


def open_file(
    key: bytes,
    source_path: Path,
    dest_path: Path,
    *,
    aad: bytes = b"",
    expected_digest: str | None = None,
    progress: Progress | None = None,
) -> OpenResult:
    """All-or-nothing open: ``dest_path`` appears only after every chunk, the end and the digest checked.

    Raises :class:`DigestMismatch` when the plaintext does not hash to ``expected_digest``; on any failure
    neither ``dest_path`` nor a temporary file is left behind.
    """
    if expected_digest is not None:
        parse_digest(expected_digest)
    with source_path.open("rb") as source, _atomic_output(dest_path) as sink:
        result = open_stream(key, source, sink, aad=aad, progress=progress)
        if expected_digest is not None and result.plaintext_digest != expected_digest:
            raise DigestMismatch(
                f"{source_path} decrypts to {result.plaintext_digest}, not the announced {expected_digest}; "
                "this is not the content that was announced — do not use it; report where it came from",
                expected=expected_digest,
                actual=result.plaintext_digest,
            )
        return result


# --- internals ----------------------------------------------------------------------------------------------


def _check_chunk_size(chunk_size: int) -> None:
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise MalformedInput(
            f"chunk size {chunk_size} is outside {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE} bytes; use the default {CHUNK_SIZE}"
        )


def _cipher(key: bytes, header: bytes, aad: bytes) -> tuple[AESGCM, bytes, bytes]:
    """The per-stream AEAD, the chunk AAD and the nonce prefix, all derived from the header."""
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
        raise MalformedInput(f"a stream key (DEK) is {KEY_SIZE} bytes; make one with generate_key()")
    _magic, _version, _chunk_size, salt, prefix = _HEADER.unpack(header)
    kdf = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=_KEY_INFO)
    return AESGCM(kdf.derive(bytes(key))), header + aad, prefix


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index > _MAX_INDEX:
        raise MalformedInput(f"a sealed stream holds at most {_MAX_INDEX + 1} chunks; seal with a larger chunk size")
    return prefix + struct.pack(">IB", index, last)


def _read_full(source: BinaryIO, buffer: memoryview) -> int:
    """Fill ``buffer`` from ``source`` across short reads; fewer bytes means the input ended."""
    readinto = getattr(source, "readinto", None)
    filled = 0
    while filled < len(buffer):
        if readinto is not None:
            got = readinto(buffer[filled:]) or 0
        else:
            data = source.read(len(buffer) - filled)
            buffer[filled : filled + len(data)] = data
            got = len(data)
        if not got:
            break
        filled += got
    return filled


def _read_header(source: BinaryIO) -> bytes:
    header = bytearray(HEADER_SIZE)
    size = _read_full(source, memoryview(header))
    if size < HEADER_SIZE:
        raise MalformedInput(
            f"not a Cloister sealed stream: the {HEADER_SIZE}-byte header is cut short at {size} bytes; "
            "fetch the content again"
        )
    return bytes(header)


def _parse_header(header: bytes) -> int:
    magic, version, chunk_size, _salt, _prefix = _HEADER.unpack(header)
    if magic != MAGIC:
        raise MalformedInput(f"not a Cloister sealed stream: it starts with {magic!r}, not {MAGIC!r}")
    if version != VERSION:
        raise MalformedInput(
            f"sealed stream format version {version} is not supported (this Cloister reads {VERSION}); upgrade Cloister"
        )
    _check_chunk_size(chunk_size)
    return int(chunk_size)


def _missing_chunk(index: int, size: int) -> str:
    if size == 0:
        return (
            f"the sealed stream ends after chunk {index - 1} without its final chunk: it was truncated; "
            "fetch the content again"
            if index
            else "the sealed stream has a header but no chunks: it was truncated; fetch the content again"
        )
    return f"chunk {index} is cut short ({size} bytes, less than its tag): it was truncated; fetch it again"


def _bad_chunk(index: int, last: bool) -> str:
    if index == 0:
        return (
            "chunk 0 does not authenticate: the key or AAD is wrong, or the header or stream was altered, "
            "cut short or extended; check you hold the right DEK and AAD for this content"
        )
    if last:
        return (
            f"chunk {index}, read as the final chunk, does not authenticate: the stream was cut short, "
            "extended with extra data or tampered with; fetch the content again from its source"
        )
    return (
        f"chunk {index} does not authenticate: it was tampered with, reordered or spliced from another "
        "stream, or the stream was extended; fetch the content again from its source"
    )


@contextlib.contextmanager
def _atomic_output(dest_path: Path) -> Iterator[BinaryIO]:
    """A 0600 temp file beside ``dest_path``, renamed over it only if the block succeeds, else deleted."""
    fd, temp_name = tempfile.mkstemp(dir=dest_path.parent, prefix=f".{dest_path.name}.", suffix=".part")
    temp_path = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as sink:
            yield sink
            sink.flush()
            os.fsync(sink.fileno())
        temp_path.replace(dest_path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
