"""Blob store on any S3-compatible object storage (AWS S3, SeaweedFS, MinIO, Ceph), content-addressed too.

The final key (``prefix/ab/abcdef…``) is only known once every byte has been hashed, so a put streams the
source to a temporary key with a multipart upload, one part in memory at a time, then copies it server-side to
its content key and deletes the temporary one. Memory stays at about one part, whatever the blob size. A put
interrupted by a crash can leave an object under ``<prefix>/.incoming/``; a bucket lifecycle rule may expire them.
"""

from __future__ import annotations

import functools
import io
import itertools
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any, BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from cloister.crypto.digest import READ_SIZE
from cloister.errors import BlobNotFound, CloisterError, ConfigError, ServiceUnavailable, StorageError
from cloister.storage.base import (
    BlobRef,
    HashingReader,
    Progress,
    object_name,
    parse_object_name,
    refuse_traversal,
    verify_stream,
)

MIN_PART_SIZE = 5 << 20  # S3's smallest part (all but the last)
DEFAULT_PART_SIZE = 8 << 20
MAX_PARTS = 10_000  # S3's limit: with 8 MiB parts a blob may reach about 78 GiB
_COPY_LIMIT = 5 << 30  # larger objects must be copied part by part
_COPY_CONFIG = TransferConfig(multipart_threshold=_COPY_LIMIT, multipart_chunksize=1 << 30)
_INCOMING = ".incoming"
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_DENIED = frozenset({"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"})
_NO_BUCKET = frozenset({"NoSuchBucket", "404", "NotFound"})
_UNREACHABLE = (BotoConnectionError, ConnectionClosedError, ReadTimeoutError)
_SESSION_LOCK = threading.Lock()


class S3BlobStore:
    """Blobs as objects ``prefix/ab/abcdef…`` in one bucket; URIs are ``s3://bucket/key``."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
        part_size: int = DEFAULT_PART_SIZE,
        max_attempts: int = 3,
    ) -> None:
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise StorageError(f"{bucket!r} is not a valid S3 bucket name: 3-63 lower-case letters, digits, '.' or '-'")
        prefix = prefix.strip("/")
        refuse_traversal(prefix, f"s3://{bucket}/{prefix}")
        if "//" in prefix:
            raise StorageError(f"S3 prefix {prefix!r} has an empty segment; write it like 'team/blobs'")
        if (access_key is None) != (secret_key is None):
            raise ConfigError("give both an S3 access key and its secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)")
        if part_size < MIN_PART_SIZE:
            raise ConfigError(f"S3 parts must be at least {MIN_PART_SIZE} bytes, got part_size={part_size}")
        if max_attempts < 1:
            raise ConfigError(f"max_attempts counts the first try too, so it must be at least 1, got {max_attempts}")
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        self._key_prefix = f"{prefix}/" if prefix else ""
        self._bucket_ready = False
        # Path-style addressing suits SeaweedFS and MinIO; checksums only where S3 requires them keeps older
        # S3-compatible servers working (integrity comes from the content-addressed name anyway).
        config = Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": max_attempts, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        with _SESSION_LOCK:  # boto3 sessions are not thread-safe; their clients are
            self._client: Any = _session().client(
                "s3",
                endpoint_url=endpoint_url,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                region_name=region,
                config=config,
            )
        self.region = region
        self.endpoint_url: str = self._client.meta.endpoint_url

    def __repr__(self) -> str:
        return f"S3BlobStore({self.bucket!r}, prefix={self.prefix!r}, endpoint_url={self.endpoint_url!r})"

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists; a put calls this once per store."""
        if self._bucket_ready:
            return
        with self._errors(f"s3://{self.bucket}"):
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if _code(exc) not in _NO_BUCKET:
                    raise
                self._create_bucket()
        self._bucket_ready = True

    def put(self, source: BinaryIO, *, progress: Progress | None = None) -> BlobRef:
        self.ensure_bucket()
        reader = HashingReader(source, progress)
        temp_key = f"{self._key_prefix}{_INCOMING}/{uuid.uuid4().hex}"
        temp_uri = self._uri(temp_key)
        try:
            with self._errors(temp_uri):
                self._upload(reader, temp_key)
            key = self._key_prefix + object_name(reader.hexdigest)
            # Copying over an existing object is harmless (same name, same bytes) and heals a damaged copy.
            with self._errors(self._uri(key)):
                self._client.copy({"Bucket": self.bucket, "Key": temp_key}, self.bucket, key, Config=_COPY_CONFIG)
        except BaseException:
            # Best effort: the original error is the one to report; a leftover sits under .incoming/.
            with suppress(BotoCoreError, ClientError):
                self._client.delete_object(Bucket=self.bucket, Key=temp_key)
            raise
        with self._errors(temp_uri):
            self._client.delete_object(Bucket=self.bucket, Key=temp_key)
        return reader.ref(self._uri(key))

    def open(self, uri: str) -> BinaryIO:
        """A buffered stream over the object; use it in a ``with`` block."""
        key, _ = self._locate(uri)
        with self._errors(uri):
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
        return io.BufferedReader(_BodyReader(body, lambda: self._errors(uri)), buffer_size=READ_SIZE)

    def exists(self, uri: str) -> bool:
        try:
            self.size(uri)
        except BlobNotFound:
            return False
        return True

    def size(self, uri: str) -> int:
        key, _ = self._locate(uri)
        with self._errors(uri):
            return int(self._client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])

    def delete(self, uri: str) -> None:
        key, _ = self._locate(uri)
        self.size(uri)  # S3 deletes are silent about missing keys; a missing blob must raise
        with self._errors(uri):
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def verify(self, uri: str) -> BlobRef:
        _, hexdigest = self._locate(uri)
        with self.open(uri) as stream:
            return verify_stream(stream, hexdigest, uri)

    def _uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _locate(self, uri: str) -> tuple[str, str]:
        """The key a URI names and its hex digest, refusing other buckets, other prefixes and traversal."""
        if not uri.startswith("s3://"):
            raise StorageError(
                f"{uri!r} is not an s3:// URI, so it is not in {self._uri(self.prefix)}; "
                "open the store its scheme names (see cloister.storage.open_store)"
            )
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        if bucket != self.bucket:
            raise StorageError(f"{uri!r} is in bucket {bucket!r}, not {self.bucket!r}; open that bucket's store")
        refuse_traversal(key, uri)
        if not key.startswith(self._key_prefix):
            raise StorageError(f"{uri!r} is outside this store's prefix {self.prefix!r}; open the store that holds it")
        hexdigest = parse_object_name(key[len(self._key_prefix) :], uri)
        return key, hexdigest

    def _create_bucket(self) -> None:
        options: dict[str, Any] = {}
        if self.region != "us-east-1":  # S3 refuses an explicit us-east-1 location
            options["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self._client.create_bucket(Bucket=self.bucket, **options)
        except ClientError as exc:
            if _code(exc) != "BucketAlreadyOwnedByYou":  # created meanwhile by another put
                raise

    def _upload(self, reader: HashingReader, key: str) -> None:
        """A single PUT for a blob smaller than a part, a multipart upload otherwise (aborted on failure)."""
        parts = _parts(reader, self.part_size)
        first = next(parts)
        if len(first) < self.part_size:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=first)
            return
        upload_id = self._client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        try:
            done: list[dict[str, Any]] = []
            for number, part in enumerate(itertools.chain([first], parts), start=1):
                if number > MAX_PARTS:
                    raise StorageError(
                        f"blob exceeds {MAX_PARTS} parts of {self.part_size} bytes; "
                        "open the S3 store with a larger part_size"
                    )
                answer = self._client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=part
                )
                done.append({"ETag": answer["ETag"], "PartNumber": number})
            self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
            )
        except BaseException:
            with suppress(BotoCoreError, ClientError):
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    @contextmanager
    def _errors(self, uri: str) -> Iterator[None]:
        """Turn botocore's exceptions into Cloister's, each saying what to check next."""
        try:
            yield
        except ClientError as exc:
            raise self._client_error(exc, uri) from exc
        except _UNREACHABLE as exc:
            raise ServiceUnavailable(
                f"cannot reach the S3 endpoint {self.endpoint_url} ({exc}); "
                "check that it is running and that CLOISTER_S3_ENDPOINT points at it",
                uri=uri,
            ) from exc
        except NoCredentialsError as exc:
            raise ConfigError(
                "no S3 credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or pass them to the store"
            ) from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 request for {uri} failed: {exc}", uri=uri) from exc

    def _client_error(self, exc: ClientError, uri: str) -> CloisterError:
        code = _code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "NoSuchBucket":
            return StorageError(
                f"bucket {self.bucket!r} does not exist at {self.endpoint_url}; "
                "put a blob (which creates it) or check the store spec",
                uri=uri,
            )
        if code in _MISSING:
            return BlobNotFound(
                f"no blob at {uri}: it was never stored or has been deleted; check the URI or put the content again",
                uri=uri,
            )
        if code in _DENIED or status == 403:
            return StorageError(
                f"S3 at {self.endpoint_url} refused access to {uri} ({code}); check the access key and "
                "secret (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and that they may use this bucket",
                uri=uri,
                code=code,
            )
        if status >= 500:
            return ServiceUnavailable(
                f"S3 at {self.endpoint_url} failed on {uri} ({code}); retry later", uri=uri, code=code
            )
        message = exc.response.get("Error", {}).get("Message", "")
        return StorageError(f"S3 refused the request for {uri}: {code} {message}".strip(), uri=uri, code=code)


@functools.cache
def _session() -> boto3.session.Session:
    """One session for every store: the S3 service model is loaded once, so later stores open in milliseconds."""
    return boto3.session.Session()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _parts(reader: HashingReader, part_size: int) -> Iterator[bytearray]:
    """Successive parts of the source in one reused buffer, so only one part is ever in memory.

    The last part may be short; an empty part comes only from an empty source. Each part must be sent before
    the next is read.
    """
    buffer = bytearray(part_size)
    for index in itertools.count():
        filled = reader.readinto(buffer)
        if filled < part_size:
            if filled or index == 0:
                del buffer[filled:]
                yield buffer
            return
        yield buffer


class _BodyReader(io.RawIOBase):
    """A raw stream over botocore's response body, so callers get a standard ``BufferedReader``."""

    def __init__(self, body: Any, errors: Callable[[], AbstractContextManager[None]]) -> None:
        self._body = body
        self._errors = errors

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with self._errors():
            data = self._body.read(len(buffer))
        with memoryview(buffer) as view:
            view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()
