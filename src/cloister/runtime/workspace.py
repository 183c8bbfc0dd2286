"""The private folder one order's plaintext lives in, and its wipe.

Each order gets ``<root>/<order id>`` (mode 0700) with ``inputs/``, ``engine/``, ``outputs/``, ``checkpoints/``
and ``scratch/``. :meth:`Workspace.wipe` overwrites every file with zeros, then unlinks it, and returns the
:class:`~cloister.provenance.report.Wipe` the order report records. Honestly: on SSDs (wear levelling),
copy-on-write or journaling file systems and with snapshots, overwriting in place does not guarantee the old
blocks are gone; the real protection is that the workspace sits in the TEE's encrypted memory or on a disk
encrypted with a key that dies with the confidential VM. The overwrite only narrows the window on plain disks.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from pathlib import Path

from cloister.errors import LoaderError
from cloister.provenance.report import Wipe

FOLDERS = ("inputs", "engine", "outputs", "checkpoints", "scratch")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ZEROS = bytes(1 << 20)


class Workspace:
    """A 0700 folder per order; create it with :meth:`create`, erase it with :meth:`wipe`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, root: Path, name: str) -> Workspace:
        """Make ``root/name`` and its sub-folders; refuse a name that exists (a job may not inherit files)."""
        if not _NAME_RE.match(name):
            raise LoaderError(f"{name!r} cannot name a workspace; use the order id")
        root = Path(root)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = root / name
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            raise LoaderError(
                f"the workspace {path} already exists: another run of this order is active or was not wiped; "
                "stop it, or wipe the folder before starting again"
            ) from None
        path.chmod(0o700)  # mkdir's mode is filtered by the umask
        for folder in FOLDERS:
            (path / folder).mkdir(mode=0o700)
        return cls(path)

    @property
    def inputs(self) -> Path:
        return self.path / "inputs"

    @property
    def engine(self) -> Path:
        return self.path / "engine"

    @property
    def outputs(self) -> Path:
        return self.path / "outputs"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def scratch(self) -> Path:
        """Where ciphertext and archives wait while being opened or sealed; wiped with the rest."""
        return self.path / "scratch"

    @property
    def progress_file(self) -> Path:
        return self.path / "progress.jsonl"

    def exists(self) -> bool:
        return self.path.exists()

    def wipe(self, *, now: int) -> Wipe:
        """Zero and remove every file, then the folder; the record names the top-level entries erased."""
        entries = sorted(entry.name for entry in self.path.iterdir()) if self.path.is_dir() else []
        files = size = 0
        for root, _dirs, names in os.walk(self.path, followlinks=False):
            for name in names:
                path = Path(root) / name
                mode = path.lstat().st_mode
                if stat.S_ISREG(mode):
                    size += _zero(path, path.lstat().st_size)
                files += 1
        shutil.rmtree(self.path, ignore_errors=True)
        if self.path.exists():
            raise LoaderError(f"could not remove the workspace {self.path}; remove it by hand, it may hold plaintext")
        return Wipe(paths=tuple(entries) or ("(empty)",), files=files, size=size, at=now)


def _zero(path: Path, length: int) -> int:
    """Overwrite a file's bytes with zeros and flush them; returns the bytes overwritten."""
    try:
        path.chmod(0o600)
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return 0
    try:
        left = length
        while left > 0:
            left -= os.write(fd, _ZEROS[: min(left, len(_ZEROS))])
        os.fsync(fd)
    finally:
        os.close(fd)
    return length
