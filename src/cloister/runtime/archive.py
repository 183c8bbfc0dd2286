"""Folders as single files: a deterministic tar to seal outputs and checkpoints, and a refusing unpacker.

Packing fixes every header field that describes the machine (mtime, owner, mode) and sorts paths, so the same
folder always has the same digest: an owner can re-hash an unpacked adapter and match the report. Unpacking
accepts plain files and folders at safe relative paths only, since a tar may come from another machine.
"""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path, PurePosixPath

from cloister.errors import MalformedInput

_MODE = 0o644


def _files(folder: Path) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        base = Path(root)
        for name in [*dirs, *names]:
            mode = (base / name).lstat().st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise MalformedInput(f"{base / name} is a link or special file; only plain files can be packed")
        found.extend(((base / name).relative_to(folder).as_posix(), base / name) for name in names)
    return sorted(found, key=lambda item: item[0].encode())


def pack_folder(folder: Path, dest: Path) -> None:
    """Write ``folder``'s files as an uncompressed tar at ``dest``, byte-identical for identical contents."""
    with tarfile.open(dest, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for name, path in _files(Path(folder)):
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = 0, _MODE, 0, 0, "", ""
            with path.open("rb") as source:
                tar.addfile(info, source)


def unpack_folder(archive: Path, dest: Path) -> None:
    """Extract a tar made by :func:`pack_folder` into ``dest`` (created 0700), refusing anything unsafe."""
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if not member.isreg() or member.name.startswith("/") or not parts or ".." in parts:
                    raise MalformedInput(
                        f"the archive entry {member.name!r} is not a plain file at a safe path; refusing to unpack"
                    )
                source = tar.extractfile(member)
                if source is None:
                    raise MalformedInput(f"the archive entry {member.name!r} has no data")
                target = dest.joinpath(*parts)
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                with open(target, "xb") as out:
                    os.fchmod(out.fileno(), 0o600)
                    while chunk := source.read(1 << 20):
                        out.write(chunk)
    except (tarfile.TarError, EOFError) as exc:
        raise MalformedInput(f"{archive.name} is not a readable tar ({exc}); fetch it again") from None
    except FileExistsError as exc:
        raise MalformedInput(f"the archive holds {exc.filename} twice; refusing to unpack") from None


def is_archive_name(name: str) -> bool:
    """Content published from a folder is named ``….tar`` by convention, and unpacked into a folder."""
    return name.endswith(".tar")
