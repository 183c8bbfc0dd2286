"""Engine bundles: a folder packed into a tar whose bytes depend only on the files' paths and contents.

Owners allow engines by digest, so the digest must be reproducible: the same folder checked out anywhere, with any
umask, clock or user, packs to the same bytes. Paths are sorted, every header field that describes the machine
rather than the content (mtime, owner, mode) is fixed, byte-code caches are left out, and anything that is not a
plain file or folder is refused. There is no compression: compressors differ between versions and machines.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cloister.crypto.digest import digest_bytes, parse_digest
from cloister.engines.manifest import MANIFEST_NAME, EngineManifest, load_manifest
from cloister.errors import BundleInvalid, DigestMismatch, EngineNotFound

_SKIPPED_DIRS = frozenset({"__pycache__"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo")
_FILE_MODE = 0o644
_MTIME = 0


@dataclass(frozen=True)
class _Entry:
    name: str
    path: Path


def _collect(folder: Path) -> list[_Entry]:
    """Every file to pack, sorted by its POSIX path; refuse links and special files anywhere in the tree."""
    entries: list[_Entry] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        base = Path(root)
        for name in [*dirs, *files]:
            path = base / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise BundleInvalid(f"{path} is a symbolic link; engines hold plain files only, copy the target in")
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise BundleInvalid(f"{path} is not a regular file; remove it from the engine folder")
        dirs[:] = [name for name in dirs if name not in _SKIPPED_DIRS]
        for name in files:
            if not name.endswith(_SKIPPED_SUFFIXES):
                path = base / name
                entries.append(_Entry(path.relative_to(folder).as_posix(), path))
    return sorted(entries, key=lambda entry: entry.name.encode())


def pack(folder: Path) -> bytes:
    """The engine folder as deterministic tar bytes; the folder must hold a valid ``engine.toml``."""
    folder = Path(folder)
    load_manifest(folder)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for entry in _collect(folder):
            data = entry.path.read_bytes()
            info = tarfile.TarInfo(entry.name)
            info.size = len(data)
            info.mtime = _MTIME
            info.mode = _FILE_MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def bundle_digest(folder: Path) -> str:
    """The engine's identity: ``sha256:`` of its packed bytes."""
    return digest_bytes(pack(folder))


def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or "\\" in name or any(part in ("", ".", "..") for part in name.split("/")):
        raise BundleInvalid(f"the bundle holds the unsafe path {name!r}; refusing to unpack it")
    return path


def unpack(data: bytes, dest: Path, *, expected_digest: str) -> EngineManifest:
    """Check the bundle's digest, then write its files under ``dest`` (new or empty) and return its manifest."""
    parse_digest(expected_digest)
    actual = digest_bytes(data)
    if actual != expected_digest:
        raise DigestMismatch(
            f"the engine bundle hashes to {actual}, not the expected {expected_digest}; it was altered or is another "
            "engine, so it was not unpacked",
            expected=expected_digest,
            actual=actual,
        )
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise BundleInvalid(f"{dest} is not empty; unpack an engine into a new folder")
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        names = _extract(data, dest)
        if MANIFEST_NAME not in names:
            raise BundleInvalid(f"the bundle has no {MANIFEST_NAME} at its top; it is not an engine")
        return load_manifest(dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _extract(data: bytes, dest: Path) -> set[str]:
    """Write every member under ``dest``; anything but a plain file at a safe, new path is refused."""
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                path = _safe_name(member.name)
                if not member.isreg():
                    raise BundleInvalid(f"the bundle entry {member.name!r} is not a regular file; refusing to unpack")
                if member.name in seen:
                    raise BundleInvalid(f"the bundle holds {member.name!r} twice; refusing to unpack")
                seen.add(member.name)
                source = tar.extractfile(member)
                if source is None:
                    raise BundleInvalid(f"the bundle entry {member.name!r} has no data")
                target = dest.joinpath(*path.parts)
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                with open(target, "xb") as out:
                    os.fchmod(out.fileno(), 0o600)
                    out.write(source.read())
    except (tarfile.TarError, EOFError) as exc:
        raise BundleInvalid(f"the engine bundle is not a readable tar: {exc}") from None
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        raise BundleInvalid(f"the bundle's paths collide ({exc.filename}); refusing to unpack") from None
    return seen


def builtin_engine(name: str) -> Path:
    """The folder of an engine shipped with Cloister (``lora_finetune``, …)."""
    here = Path(__file__).parent
    available = sorted(path.parent.name for path in here.glob(f"*/{MANIFEST_NAME}"))
    if name not in available:
        raise EngineNotFound(
            f"there is no built-in engine {name!r}; the built-in engines are: {', '.join(available) or 'none'}"
        )
    return here / name
