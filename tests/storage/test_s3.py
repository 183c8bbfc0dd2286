"""What only the S3 store does: credentials, an unreachable endpoint, bucket creation, part limits."""

from __future__ import annotations

import io
import uuid

import httpx
import pytest
from tests.seaweedfs import S3Server, free_ports
from tests.storage.backends import BUCKET, S3Backend
from tests.storage.streams import PatternSource

from cloister.errors import BlobNotFound, ConfigError, ServiceUnavailable, StorageError
from cloister.storage import s3
from cloister.storage.s3 import MIN_PART_SIZE, S3BlobStore


def store_for(server: S3Server, bucket: str = BUCKET, **options: object) -> S3BlobStore:
    settings: dict[str, object] = {
        "endpoint_url": server.endpoint_url,
        "access_key": server.access_key,
        "secret_key": server.secret_key,
        **options,
    }
    return S3BlobStore(bucket, **settings)  # type: ignore[arg-type]


def fresh_bucket() -> str:
    return f"cloister-{uuid.uuid4().hex[:16]}"


def test_anonymous_requests_are_refused(s3_server: S3Server) -> None:
    ref = S3Backend(s3_server).store.put(io.BytesIO(b"secret ciphertext"))
    key = ref.uri.removeprefix("s3://")
    answer = httpx.get(f"{s3_server.endpoint_url}/{key}")
    assert answer.status_code == 403
    assert b"secret ciphertext" not in answer.content


@pytest.mark.parametrize("credentials", [("right", "wrong"), ("unknown", "wrong")], ids=["bad-secret", "bad-key"])
def test_wrong_credentials_raise_a_storage_error(s3_server: S3Server, credentials: tuple[str, str]) -> None:
    backend = S3Backend(s3_server)
    ref = backend.store.put(io.BytesIO(b"stored with the right keys"))
    access_key = s3_server.access_key if credentials[0] == "right" else "nobody"
    intruder = store_for(
        s3_server, prefix=backend.prefix, access_key=access_key, secret_key=credentials[1], max_attempts=1
    )
    uses = [
        lambda: intruder.put(io.BytesIO(b"x")),
        lambda: intruder.open(ref.uri),
        lambda: intruder.exists(ref.uri),
        lambda: intruder.size(ref.uri),
        lambda: intruder.delete(ref.uri),
    ]
    for use in uses:
        with pytest.raises(StorageError, match="AWS_SECRET_ACCESS_KEY") as exc:
            use()
        assert not isinstance(exc.value, BlobNotFound)


def test_an_unreachable_endpoint_raises_service_unavailable() -> None:
    (port,) = free_ports(1)
    down = S3BlobStore(BUCKET, endpoint_url=f"http://127.0.0.1:{port}", access_key="k", secret_key="s", max_attempts=1)
    uri = f"s3://{BUCKET}/{'ab/ab' + '0' * 62}"
    for use in (lambda: down.put(io.BytesIO(b"x")), lambda: down.open(uri), lambda: down.exists(uri)):
        with pytest.raises(ServiceUnavailable, match="CLOISTER_S3_ENDPOINT"):
            use()


def test_a_put_creates_a_missing_bucket(s3_server: S3Server) -> None:
    bucket = fresh_bucket()
    store = store_for(s3_server, bucket)
    ref = store.put(io.BytesIO(b"first blob"))
    assert ref.uri.startswith(f"s3://{bucket}/")
    store_for(s3_server, bucket).ensure_bucket()  # already there: nothing to do
    with store.open(ref.uri) as stream:
        assert stream.read() == b"first blob"


def test_reading_from_a_missing_bucket_says_so(s3_server: S3Server) -> None:
    store = store_for(s3_server, fresh_bucket())
    with pytest.raises(StorageError, match="does not exist"):
        store.open(f"s3://{store.bucket}/ab/ab{'0' * 62}")


def test_a_store_without_prefix_uses_bucket_root_keys(s3_server: S3Server) -> None:
    store = store_for(s3_server, fresh_bucket())
    ref = store.put(io.BytesIO(b"at the root"))
    hexdigest = ref.digest.removeprefix("sha256:")
    assert ref.uri == f"s3://{store.bucket}/{hexdigest[:2]}/{hexdigest}"
    assert store.verify(ref.uri) == ref


def test_a_blob_beyond_the_part_limit_is_refused_and_cleaned_up(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = S3Backend(s3_server, part_size=MIN_PART_SIZE)
    monkeypatch.setattr(s3, "MAX_PARTS", 2)
    with pytest.raises(StorageError, match="larger part_size"):
        backend.store.put(PatternSource(2 * MIN_PART_SIZE + 1))
    assert backend.leftovers() == []


@pytest.mark.parametrize(
    ("bucket", "options", "error", "match"),
    [
        ("ab", {}, StorageError, "not a valid S3 bucket name"),
        ("Upper-Case", {}, StorageError, "not a valid S3 bucket name"),
        ("dots..dots", {}, StorageError, "not a valid S3 bucket name"),
        (BUCKET, {"prefix": "team/../other"}, StorageError, "traversal"),
        (BUCKET, {"prefix": "team//blobs"}, StorageError, "empty segment"),
        (BUCKET, {"access_key": "only-the-key"}, ConfigError, "both an S3 access key"),
        (BUCKET, {"part_size": MIN_PART_SIZE - 1}, ConfigError, "at least"),
        (BUCKET, {"max_attempts": 0}, ConfigError, "at least 1"),
    ],
)
def test_bad_settings_are_refused(bucket: str, options: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        S3BlobStore(bucket, endpoint_url="http://127.0.0.1:9", **options)  # type: ignore[arg-type]
