"""Chunked streaming AEAD: round trips, every attack on the chunk sequence, atomic files, constant memory."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import tracemalloc
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from cloister.crypto.digest import digest_bytes
from cloister.crypto.stream import (
    CHUNK_SIZE,
    HEADER_SIZE,
    MAX_CHUNK_SIZE,
    TAG_SIZE,
    ciphertext_size,
    generate_key,
    open_file,
    open_stream,
    seal_file,
    seal_stream,
)
from cloister.errors import DigestMismatch, IntegrityError, MalformedInput

CHUNK = 64
SEALED_CHUNK = CHUNK + TAG_SIZE
KEY = generate_key()


def seal_bytes(data: bytes, *, key: bytes = KEY, aad: bytes = b"", chunk_size: int = CHUNK) -> bytes:
    sink = io.BytesIO()
    seal_stream(key, io.BytesIO(data), sink, aad=aad, chunk_size=chunk_size)
    return sink.getvalue()


def open_bytes(sealed: bytes, *, key: bytes = KEY, aad: bytes = b"") -> bytes:
    sink = io.BytesIO()
    open_stream(key, io.BytesIO(sealed), sink, aad=aad)
    return sink.getvalue()


def chunk_at(sealed: bytes, index: int) -> bytes:
    start = HEADER_SIZE + index * SEALED_CHUNK
    return sealed[start : start + SEALED_CHUNK]


def replace_chunk(sealed: bytes, index: int, chunk: bytes) -> bytes:
    start = HEADER_SIZE + index * SEALED_CHUNK
    return sealed[:start] + chunk + sealed[start + SEALED_CHUNK :]


class Trickle(io.RawIOBase):
    """A source that hands out at most a few bytes per read, like a slow socket."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self._data, self._pos, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        got = self._data[self._pos : self._pos + min(self._step, len(buffer))]
        buffer[: len(got)] = got
        self._pos += len(got)
        return len(got)


class ReadOnly:
    """A file-like source with ``read`` but no ``readinto``."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._inner.read(min(size, 5))


class Pattern(io.RawIOBase):
    """``size`` bytes of a repeating pattern, generated on demand so the test itself holds no big buffer."""

    def __init__(self, size: int, block: bytes) -> None:
        self._left, self._block, self._offset = size, memoryview(block), 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._left, len(self._block) - self._offset)
        buffer[:n] = self._block[self._offset : self._offset + n]
        self._offset = (self._offset + n) % len(self._block)
        self._left -= n
        return n


class Discard(io.RawIOBase):
    """A sink that keeps nothing but a running hash."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.hasher.update(data)
        return len(data)


# --- round trips --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 5 * CHUNK + 3])
def test_round_trip(size: int) -> None:
    data = os.urandom(size)
    sink = io.BytesIO()
    result = seal_stream(KEY, io.BytesIO(data), sink, aad=b"offer-1", chunk_size=CHUNK)
    sealed = sink.getvalue()
    assert result.plaintext_digest == digest_bytes(data)
    assert result.plaintext_size == size
    assert result.ciphertext_size == len(sealed) == ciphertext_size(size, CHUNK)
    assert len(sealed) == HEADER_SIZE + size + (size // CHUNK + 1) * TAG_SIZE
    out = io.BytesIO()
    opened = open_stream(KEY, io.BytesIO(sealed), out, aad=b"offer-1")
    assert out.getvalue() == data
    assert opened.plaintext_digest == digest_bytes(data)
    assert opened.plaintext_size == size


def test_empty_input_is_one_empty_last_chunk() -> None:
    sealed = seal_bytes(b"")
    assert len(sealed) == HEADER_SIZE + TAG_SIZE
    assert open_bytes(sealed) == b""


def test_default_chunk_size_and_header_fields() -> None:
    sealed = seal_bytes(b"hello", chunk_size=CHUNK_SIZE)
    magic, version, chunk_size = struct.unpack(">4sBI", sealed[:9])
    assert (magic, version, chunk_size) == (b"CLSA", 1, CHUNK_SIZE)
    assert open_bytes(sealed) == b"hello"


def test_same_key_same_data_gives_unrelated_streams() -> None:
    data = os.urandom(3 * CHUNK)
    first, second = seal_bytes(data), seal_bytes(data)
    assert first[9:HEADER_SIZE] != second[9:HEADER_SIZE]
    assert first[HEADER_SIZE:] != second[HEADER_SIZE:]
    assert open_bytes(first) == open_bytes(second) == data


def test_short_reads_and_read_only_sources_give_the_same_layout() -> None:
    data = os.urandom(4 * CHUNK + 9)
    sink = io.BytesIO()
    seal_stream(KEY, cast(BinaryIO, Trickle(data)), sink, chunk_size=CHUNK)
    sealed = sink.getvalue()
    assert len(sealed) == ciphertext_size(len(data), CHUNK)
    out = io.BytesIO()
    open_stream(KEY, cast(BinaryIO, Trickle(sealed, step=3)), out)
    assert out.getvalue() == data
    sink = io.BytesIO()
    seal_stream(KEY, cast(BinaryIO, ReadOnly(data)), sink, chunk_size=CHUNK)
    out = io.BytesIO()
    open_stream(KEY, cast(BinaryIO, ReadOnly(sink.getvalue())), out)
    assert out.getvalue() == data


def test_progress_reports_every_plaintext_byte() -> None:
    data = os.urandom(3 * CHUNK + 5)
    sealed_steps: list[int] = []
    sink = io.BytesIO()
    seal_stream(KEY, io.BytesIO(data), sink, chunk_size=CHUNK, progress=sealed_steps.append)
    assert sealed_steps == [CHUNK, CHUNK, CHUNK, 5]
    opened_steps: list[int] = []
    open_stream(KEY, io.BytesIO(sink.getvalue()), io.BytesIO(), progress=opened_steps.append)
    assert opened_steps == sealed_steps


def test_ciphertext_size_refuses_nonsense() -> None:
    assert ciphertext_size(0) == HEADER_SIZE + TAG_SIZE
    assert ciphertext_size(CHUNK_SIZE) == HEADER_SIZE + CHUNK_SIZE + 2 * TAG_SIZE
    with pytest.raises(MalformedInput):
        ciphertext_size(-1)
    with pytest.raises(MalformedInput):
        ciphertext_size(10, chunk_size=0)


@pytest.mark.parametrize("chunk_size", [0, 15, MAX_CHUNK_SIZE + 1])
def test_absurd_chunk_size_is_refused_when_sealing(chunk_size: int) -> None:
    with pytest.raises(MalformedInput, match="chunk size"):
        seal_bytes(b"data", chunk_size=chunk_size)


@pytest.mark.parametrize("key", [b"", bytes(16), bytes(33)])
def test_key_must_be_32_bytes(key: bytes) -> None:
    with pytest.raises(MalformedInput, match="32 bytes"):
        seal_bytes(b"data", key=key)
    with pytest.raises(MalformedInput, match="32 bytes"):
        open_bytes(seal_bytes(b"data"), key=key)


# --- attacks ------------------------------------------------------------------------------------------------

DATA = bytes(range(256)) + b"tail of the stream"  # 4 full chunks of 64 and a last chunk of 18


@pytest.fixture
def sealed() -> bytes:
    return seal_bytes(DATA, aad=b"order-1")


def assert_refused(tampered: bytes, match: str, aad: bytes = b"order-1", key: bytes = KEY) -> None:
    with pytest.raises(IntegrityError, match=match):
        open_bytes(tampered, key=key, aad=aad)


def test_missing_last_chunk(sealed: bytes) -> None:
    assert_refused(sealed[: HEADER_SIZE + 4 * SEALED_CHUNK], "ends after chunk 3 without its final chunk")


def test_missing_empty_last_chunk_of_exact_multiple() -> None:
    sealed = seal_bytes(bytes(2 * CHUNK))
    with pytest.raises(IntegrityError, match="ends after chunk 1 without its final chunk"):
        open_bytes(sealed[:-TAG_SIZE])


def test_header_only(sealed: bytes) -> None:
    assert_refused(sealed[:HEADER_SIZE], "header but no chunks")


@pytest.mark.parametrize("cut", [1, 20, SEALED_CHUNK - 1])
def test_cut_mid_chunk(sealed: bytes, cut: int) -> None:
    assert_refused(sealed[: HEADER_SIZE + 2 * SEALED_CHUNK + cut], "chunk 2.* cut short")


def test_cut_inside_last_chunk(sealed: bytes) -> None:
    assert_refused(sealed[:-1], "chunk 4, read as the final chunk, .* cut short")


def test_reordered_chunks(sealed: bytes) -> None:
    swapped = replace_chunk(replace_chunk(sealed, 1, chunk_at(sealed, 2)), 2, chunk_at(sealed, 1))
    assert_refused(swapped, "chunk 1 does not authenticate")


def test_dropped_middle_chunk(sealed: bytes) -> None:
    dropped = sealed[: HEADER_SIZE + SEALED_CHUNK] + sealed[HEADER_SIZE + 2 * SEALED_CHUNK :]
    assert_refused(dropped, "chunk 1 does not authenticate")


def test_replayed_chunk(sealed: bytes) -> None:
    assert_refused(replace_chunk(sealed, 1, chunk_at(sealed, 0)), "chunk 1 does not authenticate")


def test_chunk_spliced_from_another_stream_under_the_same_key(sealed: bytes) -> None:
    other = seal_bytes(DATA, aad=b"order-1")
    assert_refused(replace_chunk(sealed, 3, chunk_at(other, 3)), "chunk 3 does not authenticate")
    assert_refused(other[:HEADER_SIZE] + sealed[HEADER_SIZE:], "chunk 0 does not authenticate")


@pytest.mark.parametrize("extra", [b"x", bytes(TAG_SIZE), b"last chunk again"])
def test_data_appended_after_last_chunk(sealed: bytes, extra: bytes) -> None:
    assert_refused(sealed + extra, "chunk 4, read as the final chunk, .* extended")


def test_whole_stream_replayed_twice(sealed: bytes) -> None:
    assert_refused(sealed + sealed, "chunk 4 does not authenticate.*extended")


@pytest.mark.parametrize("position", [HEADER_SIZE, HEADER_SIZE + 2 * SEALED_CHUNK + 7, -1])
def test_flipped_ciphertext_bit(sealed: bytes, position: int) -> None:
    tampered = bytearray(sealed)
    tampered[position] ^= 0x04
    assert_refused(bytes(tampered), "does not authenticate")


@pytest.mark.parametrize("position", [9, 9 + 15, 9 + 16, HEADER_SIZE - 1], ids=["salt", "salt-end", "prefix", "last"])
def test_changed_header_byte(sealed: bytes, position: int) -> None:
    tampered = bytearray(sealed)
    tampered[position] ^= 0x01
    assert_refused(bytes(tampered), "chunk 0 does not authenticate")


def test_changed_chunk_size_in_header(sealed: bytes) -> None:
    tampered = sealed[:5] + struct.pack(">I", 2 * CHUNK) + sealed[9:]
    with pytest.raises(IntegrityError):
        open_bytes(tampered, aad=b"order-1")


def test_wrong_key(sealed: bytes) -> None:
    assert_refused(sealed, "key or AAD is wrong", key=generate_key())


def test_wrong_or_missing_aad(sealed: bytes) -> None:
    assert_refused(sealed, "key or AAD is wrong", aad=b"order-2")
    assert_refused(sealed, "key or AAD is wrong", aad=b"")


@pytest.mark.parametrize(
    ("header_edit", "match"),
    [
        (lambda s: b"XLSA" + s[4:], "not a Cloister sealed stream"),
        (lambda s: s[:4] + b"\x02" + s[5:], "version 2 is not supported"),
        (lambda s: s[:5] + struct.pack(">I", 0) + s[9:], "chunk size 0"),
        (lambda s: s[:5] + struct.pack(">I", 0xFFFFFFFF) + s[9:], "chunk size 4294967295"),
        (lambda s: s[: HEADER_SIZE - 1], "header is cut short"),
        (lambda s: b"", "header is cut short at 0 bytes"),
    ],
    ids=["magic", "version", "zero-chunk", "huge-chunk", "short-header", "empty"],
)
def test_header_that_does_not_parse_is_malformed(sealed: bytes, header_edit: object, match: str) -> None:
    assert callable(header_edit)
    with pytest.raises(MalformedInput, match=match):
        open_bytes(header_edit(sealed), aad=b"order-1")


def test_open_stream_sink_holds_only_an_authentic_prefix_on_failure(sealed: bytes) -> None:
    tampered = bytearray(sealed)
    tampered[HEADER_SIZE + 2 * SEALED_CHUNK + 3] ^= 0x01
    sink = io.BytesIO()
    with pytest.raises(IntegrityError, match="chunk 2"):
        open_stream(KEY, io.BytesIO(bytes(tampered)), sink, aad=b"order-1")
    assert sink.getvalue() == DATA[: 2 * CHUNK]


# --- files --------------------------------------------------------------------------------------------------


@pytest.fixture
def sealed_file(tmp_path: Path) -> tuple[Path, bytes]:
    plain = tmp_path / "plain.bin"
    plain.write_bytes(os.urandom(3 * CHUNK_SIZE + 123))
    data = plain.read_bytes()
    plain.unlink()
    path = tmp_path / "content.clsa"
    path.write_bytes(seal_bytes(data, chunk_size=CHUNK_SIZE))
    return path, data


def test_file_round_trip(tmp_path: Path) -> None:
    data = os.urandom(2 * CHUNK_SIZE + 5)
    (tmp_path / "in.bin").write_bytes(data)
    sealed = seal_file(KEY, tmp_path / "in.bin", tmp_path / "in.clsa", aad=b"a")
    assert sealed.plaintext_digest == digest_bytes(data)
    assert (tmp_path / "in.clsa").stat().st_size == sealed.ciphertext_size
    opened = open_file(KEY, tmp_path / "in.clsa", tmp_path / "out.bin", aad=b"a", expected_digest=digest_bytes(data))
    assert opened.plaintext_digest == sealed.plaintext_digest
    assert (tmp_path / "out.bin").read_bytes() == data
    assert (tmp_path / "out.bin").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.bin", "in.clsa", "out.bin"]


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("attack", ["truncate", "tamper", "append", "header"])
def test_open_file_failure_leaves_nothing_behind(sealed_file: tuple[Path, bytes], attack: str) -> None:
    path, _ = sealed_file
    sealed = path.read_bytes()
    edited = {
        "truncate": sealed[: HEADER_SIZE + CHUNK_SIZE + TAG_SIZE],
        "tamper": sealed[:-1] + bytes([sealed[-1] ^ 1]),
        "append": sealed + b"!",
        "header": b"JUNK" + sealed[4:],
    }[attack]
    path.write_bytes(edited)
    dest = path.parent / "out.bin"
    with pytest.raises((IntegrityError, MalformedInput)):
        open_file(KEY, path, dest)
    assert _files(path.parent) == ["content.clsa"]


def test_open_file_wrong_key_leaves_nothing_behind(sealed_file: tuple[Path, bytes]) -> None:
    path, _ = sealed_file
    with pytest.raises(IntegrityError):
        open_file(generate_key(), path, path.parent / "out.bin")
    assert _files(path.parent) == ["content.clsa"]


def test_open_file_digest_mismatch_leaves_nothing_behind(sealed_file: tuple[Path, bytes]) -> None:
    path, data = sealed_file
    wrong = digest_bytes(data + b"x")
    with pytest.raises(DigestMismatch, match="not the announced") as raised:
        open_file(KEY, path, path.parent / "out.bin", expected_digest=wrong)
    assert raised.value.details == {"expected": wrong, "actual": digest_bytes(data)}
    assert _files(path.parent) == ["content.clsa"]


def test_open_file_refuses_a_malformed_expected_digest_before_writing(
    sealed_file: tuple[Path, bytes],
) -> None:
    path, _ = sealed_file
    with pytest.raises(MalformedInput, match="not a digest"):
        open_file(KEY, path, path.parent / "out.bin", expected_digest="sha256:123")
    assert _files(path.parent) == ["content.clsa"]


def test_open_file_failure_keeps_an_existing_destination(sealed_file: tuple[Path, bytes]) -> None:
    path, _ = sealed_file
    dest = path.parent / "out.bin"
    dest.write_bytes(b"previous good copy")
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(IntegrityError):
        open_file(KEY, path, dest)
    assert dest.read_bytes() == b"previous good copy"
    assert _files(path.parent) == ["content.clsa", "out.bin"]


def test_seal_file_interrupted_leaves_nothing_behind(tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(3 * CHUNK_SIZE))

    def cancel_after_first_chunk(_consumed: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        seal_file(KEY, source, tmp_path / "in.clsa", progress=cancel_after_first_chunk)
    assert _files(tmp_path) == ["in.bin"]


# --- constant memory ----------------------------------------------------------------------------------------


def test_memory_stays_flat_for_a_64_mib_stream(tmp_path: Path) -> None:
    size = 64 * CHUNK_SIZE + 1000
    block = os.urandom(CHUNK_SIZE + 17)  # not chunk-aligned, so chunks differ
    expected = hashlib.sha256()
    source = Pattern(size, block)
    for piece in iter(lambda: source.read(CHUNK_SIZE), b""):
        expected.update(piece)
    sealed_path = tmp_path / "big.clsa"

    tracemalloc.start()
    try:
        with sealed_path.open("wb") as sink:
            sealed = seal_stream(KEY, cast(BinaryIO, Pattern(size, block)), sink)
        _, seal_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        discard = Discard()
        with sealed_path.open("rb") as source_file:
            opened = open_stream(KEY, source_file, cast(BinaryIO, discard))
        _, open_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert sealed.plaintext_size == opened.plaintext_size == size
    assert sealed.plaintext_digest == opened.plaintext_digest == "sha256:" + expected.hexdigest()
    assert discard.hasher.hexdigest() == expected.hexdigest()
    assert sealed_path.stat().st_size == ciphertext_size(size)
    # Two chunk buffers are the design; anything proportional to the 64 MiB input would be 20x over this.
    assert seal_peak < 3 * CHUNK_SIZE, seal_peak
    assert open_peak < 3 * CHUNK_SIZE, open_peak
