"""Deterministic packing, reproducible digests, and refusal of tampered or unsafe bundles."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from cloister.crypto.digest import digest_bytes
from cloister.engines.bundle import builtin_engine, bundle_digest, pack, unpack
from cloister.errors import BundleInvalid, DigestMismatch, EngineNotFound, MalformedInput, ManifestInvalid


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _manifest_member(probe_engine: Path) -> tuple[tarfile.TarInfo, bytes]:
    return _file("engine.toml", (probe_engine / "engine.toml").read_bytes())


# --- packing ---------------------------------------------------------------------------------------------------


def test_pack_is_deterministic(probe_engine: Path) -> None:
    assert pack(probe_engine) == pack(probe_engine)
    assert bundle_digest(probe_engine) == digest_bytes(pack(probe_engine))


def test_copy_with_other_mtimes_modes_umask_and_caches_has_the_same_digest(probe_engine: Path, tmp_path: Path) -> None:
    original = bundle_digest(probe_engine)
    old_umask = os.umask(0o077)
    try:
        copy = tmp_path / "elsewhere" / "copy"
        shutil.copytree(probe_engine, copy)
    finally:
        os.umask(old_umask)
    for index, path in enumerate(sorted(copy.rglob("*"))):
        os.utime(path, (1_000_000 + index, 2_000_000_000 - index))
        if path.is_file():
            path.chmod(0o755 if index % 2 else 0o600)
    (copy / "probe" / "__pycache__").mkdir()
    (copy / "probe" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\x00compiled")
    (copy / "probe" / "stale.pyc").write_bytes(b"\x00old")
    assert bundle_digest(copy) == original


@pytest.mark.parametrize(
    "change",
    [
        lambda folder: (folder / "probe" / "data.txt").write_text("some\nresource!\n"),
        lambda folder: (folder / "probe" / "data.txt").rename(folder / "probe" / "data2.txt"),
        lambda folder: (folder / "probe" / "extra.py").write_text(""),
    ],
    ids=["content", "rename", "new-file"],
)
def test_any_change_of_content_or_names_changes_the_digest(probe_engine: Path, change: object) -> None:
    before = bundle_digest(probe_engine)
    change(probe_engine)  # type: ignore[operator]
    assert bundle_digest(probe_engine) != before


def test_symlinks_are_refused(probe_engine: Path) -> None:
    (probe_engine / "probe" / "link.txt").symlink_to(probe_engine / "probe" / "data.txt")
    with pytest.raises(BundleInvalid, match="symbolic link"):
        pack(probe_engine)


def test_symlinked_folders_are_refused(probe_engine: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (probe_engine / "lib").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(BundleInvalid, match="symbolic link"):
        pack(probe_engine)


def test_special_files_are_refused(probe_engine: Path) -> None:
    os.mkfifo(probe_engine / "probe" / "pipe")
    with pytest.raises(BundleInvalid, match="not a regular file"):
        pack(probe_engine)


def test_a_folder_without_a_valid_manifest_is_not_packed(probe_engine: Path) -> None:
    (probe_engine / "engine.toml").unlink()
    with pytest.raises(ManifestInvalid, match=r"no engine\.toml"):
        pack(probe_engine)


def test_tar_headers_carry_nothing_of_the_machine(probe_engine: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(pack(probe_engine))) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["engine.toml", "probe/__init__.py", "probe/data.txt", "probe/main.py"]
    assert {(m.mtime, m.mode, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0o644, 0, 0, "", "")}


# --- unpacking -------------------------------------------------------------------------------------------------


def test_unpack_round_trip(probe_engine: Path, tmp_path: Path) -> None:
    data = pack(probe_engine)
    manifest = unpack(data, tmp_path / "out", expected_digest=digest_bytes(data))
    assert manifest.name == "probe"
    assert _files(tmp_path / "out") == _files(probe_engine)
    assert bundle_digest(tmp_path / "out") == digest_bytes(data)


def test_a_tampered_bundle_is_refused_before_anything_is_written(probe_engine: Path, tmp_path: Path) -> None:
    data = pack(probe_engine)
    tampered = bytearray(data)
    tampered[data.index(b"probe ran")] ^= 0x01
    with pytest.raises(DigestMismatch, match="not the expected"):
        unpack(bytes(tampered), tmp_path / "out", expected_digest=digest_bytes(data))
    assert not (tmp_path / "out").exists()


def test_another_valid_engine_under_an_allowed_digest_is_refused(probe_engine: Path, tmp_path: Path) -> None:
    allowed = bundle_digest(probe_engine)
    (probe_engine / "probe" / "main.py").write_text("import os\nos.system('steal')\n")
    with pytest.raises(DigestMismatch):
        unpack(pack(probe_engine), tmp_path / "out", expected_digest=allowed)


def test_truncated_bundle_is_refused(probe_engine: Path, tmp_path: Path) -> None:
    data = pack(probe_engine)
    with pytest.raises(DigestMismatch):
        unpack(data[:700], tmp_path / "out", expected_digest=digest_bytes(data))
    # Even if someone allowed the digest of the truncated bytes, they do not unpack into an engine.
    with pytest.raises(BundleInvalid):
        unpack(data[:700], tmp_path / "out2", expected_digest=digest_bytes(data[:700]))
    assert not (tmp_path / "out2").exists()


def test_garbage_is_not_a_bundle(tmp_path: Path) -> None:
    garbage = b"\x7fELF" + bytes(range(256)) * 8
    with pytest.raises(BundleInvalid, match="not a readable tar"):
        unpack(garbage, tmp_path / "out", expected_digest=digest_bytes(garbage))


def test_malformed_expected_digest(probe_engine: Path, tmp_path: Path) -> None:
    with pytest.raises(MalformedInput):
        unpack(pack(probe_engine), tmp_path / "out", expected_digest="md5:abc")


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/escape.txt", "probe/../../escape.txt", "a//b", "./x"])
def test_unsafe_paths_are_refused(probe_engine: Path, tmp_path: Path, name: str) -> None:
    data = _tar(_manifest_member(probe_engine), _file(name, b"payload"))
    with pytest.raises(BundleInvalid, match="unsafe path"):
        unpack(data, tmp_path / "deep" / "out", expected_digest=digest_bytes(data))
    assert not list(tmp_path.rglob("escape.txt"))
    assert not (tmp_path / "deep" / "out").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE])
def test_links_folders_and_devices_are_refused(probe_engine: Path, tmp_path: Path, kind: bytes) -> None:
    info = tarfile.TarInfo("probe/evil")
    info.type = kind
    info.linkname = "/etc/passwd"
    data = _tar(_manifest_member(probe_engine), (info, None))
    with pytest.raises(BundleInvalid, match="not a regular file"):
        unpack(data, tmp_path / "out", expected_digest=digest_bytes(data))
    assert not (tmp_path / "out").exists()


def test_duplicate_entries_are_refused(probe_engine: Path, tmp_path: Path) -> None:
    data = _tar(_manifest_member(probe_engine), _file("x.py", b"1"), _file("x.py", b"2"))
    with pytest.raises(BundleInvalid, match="twice"):
        unpack(data, tmp_path / "out", expected_digest=digest_bytes(data))


def test_file_and_folder_with_the_same_name_collide(probe_engine: Path, tmp_path: Path) -> None:
    data = _tar(_manifest_member(probe_engine), _file("x", b"1"), _file("x/y", b"2"))
    with pytest.raises(BundleInvalid, match="collide"):
        unpack(data, tmp_path / "out", expected_digest=digest_bytes(data))


def test_a_bundle_without_manifest_is_not_an_engine(tmp_path: Path) -> None:
    data = _tar(_file("main.py", b"print(1)"))
    with pytest.raises(BundleInvalid, match=r"no engine\.toml"):
        unpack(data, tmp_path / "out", expected_digest=digest_bytes(data))


def test_unpack_refuses_a_non_empty_destination(probe_engine: Path, tmp_path: Path) -> None:
    data = pack(probe_engine)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(BundleInvalid, match="not empty"):
        unpack(data, tmp_path / "out", expected_digest=digest_bytes(data))
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


# --- built-in engines ------------------------------------------------------------------------------------------


def test_builtin_lora_engine_packs_reproducibly(tmp_path: Path) -> None:
    folder = builtin_engine("lora_finetune")
    data = pack(folder)
    manifest = unpack(data, tmp_path / "out", expected_digest=bundle_digest(folder))
    assert manifest.name == "lora_finetune"
    assert bundle_digest(tmp_path / "out") == digest_bytes(data)


@pytest.mark.parametrize("name", ["nope", "../engines", "", "lora_finetune/../lora_finetune"])
def test_unknown_builtin_engine(name: str) -> None:
    with pytest.raises(EngineNotFound, match="lora_finetune"):
        builtin_engine(name)
