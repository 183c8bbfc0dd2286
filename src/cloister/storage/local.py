"""The default blob store: a content-addressed folder (``root/ab/abcdef…``), readable only by its owner.

A put streams into a temporary file in the root while hashing, fsyncs it and renames it atomically to its
content name, so a reader never sees a half-written object and identical content is stored once.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from cloister.errors import BlobNotFound, StorageError
from cloister.storage.base import (
    BlobRef,
    HashingReader,
    Progress,
    object_name,
    parse_object_name,
    refuse_traversal,
    verify_stream,
)

_TEMP_PREFIX = ".incoming-"


class LocalBlobStore:
    """Blobs as files under ``root``; URIs are ``file://<absolute path>``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot use {self.root} as a blob store: {exc.strerror}; pick a folder you can create and write to"
            ) from exc

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def put(self, source: BinaryIO, *, progress: Progress | None = None) -> BlobRef:
        reader = HashingReader(source, progress)
        with self._fs_errors(self.root.as_uri(), writing=True):
            fd, temp_name = tempfile.mkstemp(dir=self.root, prefix=_TEMP_PREFIX)
        temp = Path(temp_name)
        try:
            with self._fs_errors(self.root.as_uri(), writing=True):
                with os.fdopen(fd, "wb") as out:
                    while chunk := reader.read():
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                target = self.root / object_name(reader.hexdigest)
                target.parent.mkdir(mode=0o700, exist_ok=True)
                # Replacing an existing object is harmless (same name, same bytes) and heals a damaged copy.
                temp.replace(target)
                _fsync_dir(target.parent)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return reader.ref(target.as_uri())

    def open(self, uri: str) -> BinaryIO:
        """The object as an open binary file; use it in a ``with`` block."""
        path, _ = self._locate(uri)
        with self._fs_errors(uri):
            return open(path, "rb")

    def exists(self, uri: str) -> bool:
        path, _ = self._locate(uri)
        return path.is_file()

    def size(self, uri: str) -> int:
        path, _ = self._locate(uri)
        with self._fs_errors(uri):
            return path.stat().st_size

    def delete(self, uri: str) -> None:
        path, _ = self._locate(uri)
        with self._fs_errors(uri):
            path.unlink()

    def verify(self, uri: str) -> BlobRef:
        _, hexdigest = self._locate(uri)
        with self.open(uri) as stream:
            return verify_stream(stream, hexdigest, uri)

    def _locate(self, uri: str) -> tuple[Path, str]:
        """The file a URI names and its hex digest, refusing anything outside this store's root."""
        parts = urlsplit(uri)
        if parts.scheme != "file":
            raise StorageError(
                f"{uri!r} is not a file:// URI, so it is not in the local blob store {self.root}; "
                "open the store its scheme names (see cloister.storage.open_store)"
            )
        if parts.netloc not in {"", "localhost"} or parts.query or parts.fragment:
            raise StorageError(f"{uri!r} is not a plain local file:// URI (no host, query or fragment allowed)")
        path = unquote(parts.path)
        refuse_traversal(path, uri)
        root = self.root.as_posix().rstrip("/") + "/"
        if not path.startswith(root):
            raise StorageError(f"{uri!r} is outside the blob store {self.root}; open the store that holds it")
        hexdigest = parse_object_name(path[len(root) :], uri)
        return self.root / object_name(hexdigest), hexdigest

    @contextmanager
    def _fs_errors(self, uri: str, *, writing: bool = False) -> Iterator[None]:
        """Turn OS errors into storage errors; a missing file is a missing blob only when reading one."""
        try:
            yield
        except FileNotFoundError as exc:
            if writing:
                raise StorageError(f"blob store folder {self.root} vanished during a put; put again") from exc
            raise BlobNotFound(
                f"no blob at {uri}: it was never stored in {self.root} or has been deleted; "
                "check the URI or put the content again",
                uri=uri,
            ) from exc
        except OSError as exc:
            raise StorageError(
                f"blob store {self.root} failed on {uri}: {exc.strerror or exc}; check free space and permissions",
                uri=uri,
            ) from exc


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable: the directory entry must reach the disk too."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
