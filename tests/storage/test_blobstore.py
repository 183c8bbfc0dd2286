"""Behaviour every blob store shares; each test runs on the local folder and on S3 (SeaweedFS)."""

from __future__ import annotations

import hashlib
import io
import tracemalloc

import pytest
from tests.storage.backends import Backend
from tests.storage.streams import FailingSource, PatternSource, pattern_digest

from cloister.crypto.digest import digest_bytes, digest_file
from cloister.errors import BlobNotFound, DigestMismatch, MalformedInput, StorageError
from cloister.storage.base import BlobRef, object_name
from cloister.storage.s3 import DEFAULT_PART_SIZE

MiB = 1 << 20
NEVER_STORED = hashlib.sha256(b"never stored anywhere").hexdigest()


def read_back(backend: Backend, uri: str) -> str:
    with backend.store.open(uri) as stream:
        return digest_file(stream)


def assert_storage_error_only(exc: pytest.ExceptionInfo[StorageError]) -> None:
    """A refused URI must not pass for a missing blob."""
    assert type(exc.value) is StorageError, exc.value


@pytest.mark.parametrize(
    "size",
    [0, 1, 5, MiB, 2 * DEFAULT_PART_SIZE, 2 * DEFAULT_PART_SIZE + 12_345],
    ids=["empty", "one-byte", "small", "one-mib", "exact-parts", "parts-and-tail"],
)
def test_put_then_open_round_trips(backend: Backend, size: int) -> None:
    source = PatternSource(size, seed=size)
    ref = backend.store.put(source)
    assert ref.size == size
    assert ref.digest == source.digest
    assert ref.uri == backend.uri_for(source.digest.removeprefix("sha256:"))
    assert read_back(backend, ref.uri) == ref.digest
    assert backend.store.size(ref.uri) == size
    assert backend.leftovers() == [object_name(ref.digest.removeprefix("sha256:"))]


def test_open_gives_a_readable_stream_that_closes(backend: Backend) -> None:
    ref = backend.store.put(io.BytesIO(b"0123456789" * 1000))
    with backend.store.open(ref.uri) as stream:
        assert stream.read(4) == b"0123"
        assert stream.read(6) == b"456789"
        assert len(stream.read()) == 9990
        assert stream.read() == b""
    assert stream.closed


def test_identical_content_is_stored_once(backend: Backend) -> None:
    first = backend.store.put(PatternSource(3 * MiB, seed=7))
    second = backend.store.put(PatternSource(3 * MiB, seed=7))
    other = backend.store.put(PatternSource(3 * MiB, seed=8))
    assert first == second
    assert other.uri != first.uri
    assert len(backend.leftovers()) == 2


def test_exists_size_and_delete(backend: Backend) -> None:
    ref = backend.store.put(io.BytesIO(b"ciphertext"))
    assert backend.store.exists(ref.uri)
    assert backend.store.size(ref.uri) == len(b"ciphertext")
    backend.store.delete(ref.uri)
    assert not backend.store.exists(ref.uri)
    for gone in (backend.store.size, backend.store.delete, backend.store.verify):
        with pytest.raises(BlobNotFound):
            gone(ref.uri)
    with pytest.raises(BlobNotFound), backend.store.open(ref.uri):
        pass
    assert backend.leftovers() == []


def test_missing_blob_raises_blob_not_found(backend: Backend) -> None:
    uri = backend.uri_for(NEVER_STORED)
    assert not backend.store.exists(uri)
    with pytest.raises(BlobNotFound, match="no blob at"):
        backend.store.open(uri)
    with pytest.raises(BlobNotFound):
        backend.store.size(uri)


def test_foreign_uris_are_refused(backend: Backend) -> None:
    for uri in backend.foreign_uris(NEVER_STORED):
        for use in (backend.store.open, backend.store.exists, backend.store.size, backend.store.delete):
            with pytest.raises(StorageError) as exc:
                use(uri)
            assert_storage_error_only(exc)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "ab",
        f"{NEVER_STORED[:2]}/{NEVER_STORED[:-1]}",  # truncated
        f"{NEVER_STORED[:2]}/{NEVER_STORED}0",  # one hex too many
        f"{NEVER_STORED[:2]}/{NEVER_STORED.upper()}",
        f"zz/{NEVER_STORED}",  # wrong shard
        f"{NEVER_STORED}",  # no shard
        f"{NEVER_STORED[:2]}/{NEVER_STORED}/extra",
        f"{NEVER_STORED[:2]}/{NEVER_STORED}?x=1",
        f"{NEVER_STORED[:2]}//{NEVER_STORED}",
    ],
    ids=["empty", "shard-only", "truncated", "too-long", "upper", "wrong-shard", "no-shard", "extra", "query", "slash"],
)
def test_malformed_names_are_refused(backend: Backend, name: str) -> None:
    uri = backend.uri_for(NEVER_STORED).removesuffix(object_name(NEVER_STORED)) + name
    with pytest.raises(StorageError) as exc:
        backend.store.exists(uri)
    assert_storage_error_only(exc)


def test_path_traversal_is_refused(backend: Backend) -> None:
    ref = backend.store.put(io.BytesIO(b"target"))
    for uri in backend.traversal_uris(ref.digest.removeprefix("sha256:")):
        for use in (backend.store.open, backend.store.exists, backend.store.delete):
            with pytest.raises(StorageError, match="traversal") as exc:
                use(uri)
            assert_storage_error_only(exc)
    assert backend.store.exists(ref.uri)


def test_progress_reports_every_byte_once(backend: Backend) -> None:
    seen: list[int] = []
    ref = backend.store.put(PatternSource(DEFAULT_PART_SIZE + 3 * MiB + 1), progress=seen.append)
    assert sum(seen) == ref.size == DEFAULT_PART_SIZE + 3 * MiB + 1
    assert all(count > 0 for count in seen)


def test_verify_accepts_intact_and_rejects_tampered_blobs(backend: Backend) -> None:
    ref = backend.store.put(PatternSource(2 * MiB, seed=3))
    assert backend.store.verify(ref.uri) == ref
    backend.tamper(ref.uri, b"not the original ciphertext")
    with pytest.raises(DigestMismatch, match="was altered"):
        backend.store.verify(ref.uri)


def test_putting_the_content_again_heals_a_damaged_object(backend: Backend) -> None:
    ref = backend.store.put(PatternSource(100_000, seed=2))
    backend.tamper(ref.uri, b"damaged")
    assert backend.store.put(PatternSource(100_000, seed=2)) == ref
    assert backend.store.verify(ref.uri) == ref


def test_a_failing_source_leaves_nothing_behind(backend: Backend) -> None:
    with pytest.raises(StorageError, match="reading the blob source failed"):
        backend.store.put(FailingSource(DEFAULT_PART_SIZE + MiB))
    assert backend.leftovers() == []


def test_a_text_stream_is_refused(backend: Backend) -> None:
    with pytest.raises(StorageError, match="binary stream"):
        backend.store.put(io.StringIO("text, not bytes"))  # type: ignore[arg-type]
    assert backend.leftovers() == []


def test_put_streams_in_constant_memory(backend: Backend) -> None:
    size = 32 * MiB
    tracemalloc.start()
    try:
        ref = backend.store.put(PatternSource(size, seed=11))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ref.digest == pattern_digest(size, seed=11)
    # At most one S3 part (8 MiB) and a read or two; the local store holds about one read.
    assert peak < DEFAULT_PART_SIZE + 4 * MiB, f"peak {peak / MiB:.1f} MiB while storing {size // MiB} MiB"


def test_blob_refs_are_checked() -> None:
    assert BlobRef("file:///x", 0, digest_bytes(b"")).size == 0
    with pytest.raises(StorageError, match="negative"):
        BlobRef("file:///x", -1, digest_bytes(b""))
    with pytest.raises(MalformedInput, match="not a digest"):
        BlobRef("file:///x", 1, "md5:abc")
