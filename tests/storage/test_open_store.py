"""``open_store``: from a spec (folder, file:// or s3://) and options or environment to the right store."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from tests.seaweedfs import S3Server
from tests.storage.backends import BUCKET

from cloister.errors import StorageError
from cloister.storage import LocalBlobStore, open_store
from cloister.storage.s3 import S3BlobStore

_S3_ENV = ("CLOISTER_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _S3_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_folder_path_opens_a_local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for spec, root in [
        (str(tmp_path / "a"), tmp_path / "a"),
        ("relative/b", tmp_path / "relative" / "b"),
        ("~/c", tmp_path / "home" / "c"),
        ((tmp_path / "d e").as_uri(), tmp_path / "d e"),
        (f"file://localhost{tmp_path}/f", tmp_path / "f"),
    ]:
        store = open_store(spec)
        assert isinstance(store, LocalBlobStore)
        assert store.root == root.resolve()


def test_a_local_store_round_trips_through_its_spec(tmp_path: Path) -> None:
    ref = open_store(str(tmp_path)).put(io.BytesIO(b"bytes"))
    with open_store(tmp_path.as_uri()).open(ref.uri) as stream:
        assert stream.read() == b"bytes"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "cannot open blob store"),
        ("ftp://host/blobs", "cannot open blob store"),
        ("file://otherhost/srv/blobs", "local absolute folder"),
        ("file:///srv/blobs?mode=x", "local absolute folder"),
        ("file:///srv/../etc", "traversal"),
        ("s3://", "not a valid S3 bucket name"),
        ("s3://Not_A_Bucket/x", "not a valid S3 bucket name"),
        ("s3://bucket/a/../b", "traversal"),
    ],
)
def test_bad_specs_are_refused(spec: str, match: str, clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(StorageError, match=match):
        open_store(spec)


def test_options_must_fit_the_backend(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(StorageError, match="takes no options"):
        open_store(str(tmp_path), endpoint_url="http://127.0.0.1:9")
    with pytest.raises(StorageError, match="unknown S3 store options"):
        open_store("s3://bucket", endpoint="http://127.0.0.1:9")


def test_s3_settings_come_from_options_then_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CLOISTER_S3_ENDPOINT", "http://127.0.0.1:1111")
    clean_env.setenv("AWS_REGION", "eu-west-3")
    store = open_store("s3://my-bucket/team/blobs/")
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix) == ("my-bucket", "team/blobs")
    assert (store.endpoint_url, store.region) == ("http://127.0.0.1:1111", "eu-west-3")
    store = open_store("s3://my-bucket", endpoint_url="http://127.0.0.1:2222", region="us-west-2")
    assert isinstance(store, S3BlobStore)
    assert (store.prefix, store.endpoint_url, store.region) == ("", "http://127.0.0.1:2222", "us-west-2")


def test_s3_region_defaults_to_us_east_1(clean_env: pytest.MonkeyPatch) -> None:
    store = open_store("s3://my-bucket", endpoint_url="http://127.0.0.1:9")
    assert isinstance(store, S3BlobStore)
    assert store.region == "us-east-1"


def test_s3_credentials_from_the_environment_reach_the_server(
    s3_server: S3Server, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("CLOISTER_S3_ENDPOINT", s3_server.endpoint_url)
    clean_env.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    clean_env.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    store = open_store(f"s3://{BUCKET}/from-env")
    ref = store.put(io.BytesIO(b"via the environment"))
    assert ref.uri.startswith(f"s3://{BUCKET}/from-env/")
    assert store.verify(ref.uri) == ref
