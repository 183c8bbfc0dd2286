"""What only the local folder store does: its layout, permissions, URIs of awkward roots, cancelling."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest
from tests.storage.streams import PatternSource

from cloister.errors import DigestMismatch, StorageError
from cloister.storage.local import LocalBlobStore


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_objects_are_named_by_their_hash(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    ref = store.put(io.BytesIO(b"sealed bytes"))
    hexdigest = ref.digest.removeprefix("sha256:")
    path = tmp_path / "blobs" / hexdigest[:2] / hexdigest
    assert ref.uri == path.as_uri()
    assert path.read_bytes() == b"sealed bytes"


def test_only_the_owner_can_read_the_store(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "deep" / "blobs")
    ref = store.put(io.BytesIO(b"sealed bytes"))
    path = Path(ref.uri.removeprefix("file://"))
    assert mode(store.root) == 0o700
    assert mode(path.parent) == 0o700
    assert mode(path) == 0o600


def test_a_relative_root_gives_absolute_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = LocalBlobStore(Path("blobs"))
    assert store.root == tmp_path.resolve() / "blobs"
    assert store.put(io.BytesIO(b"x")).uri.startswith(f"file://{tmp_path.resolve()}/blobs/")


def test_awkward_root_names_round_trip(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "my blobs %41 é")
    ref = store.put(io.BytesIO(b"payload"))
    assert "my%20blobs%20%2541%20%C3%A9" in ref.uri
    with store.open(ref.uri) as stream:
        assert stream.read() == b"payload"
    assert store.exists(ref.uri.replace("file:///", "file://localhost/", 1))


def test_a_file_in_place_of_the_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(StorageError, match=r"cannot use .* as a blob store"):
        LocalBlobStore(tmp_path / "taken")


def test_verify_catches_a_truncated_object(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    ref = store.put(PatternSource(100_000, seed=1))
    path = Path(ref.uri.removeprefix("file://"))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DigestMismatch, match="put the content again"):
        store.verify(ref.uri)


def test_a_progress_callback_that_raises_aborts_the_put(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")

    def cancel(_: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        store.put(PatternSource(5_000_000), progress=cancel)
    assert list(store.root.iterdir()) == []
