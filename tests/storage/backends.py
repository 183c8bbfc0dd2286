"""One test body, two stores: what the shared tests need to know about each backend beyond the protocol."""

from __future__ import annotations

import functools
import uuid
from pathlib import Path
from typing import Any

from tests.seaweedfs import S3Server

from cloister.storage.base import object_name
from cloister.storage.local import LocalBlobStore
from cloister.storage.s3 import S3BlobStore

BUCKET = "cloister-tests"


class LocalBackend:
    name = "local"

    def __init__(self, root: Path) -> None:
        self.store = LocalBlobStore(root)
        self.root = self.store.root

    def uri_for(self, hexdigest: str) -> str:
        return (self.root / object_name(hexdigest)).as_uri()

    def tamper(self, uri: str, data: bytes) -> None:
        """Overwrite an object behind the store's back."""
        Path(uri.removeprefix("file://")).write_bytes(data)

    def leftovers(self) -> list[str]:
        """Every file under the root, temporary ones included."""
        return sorted(p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())

    def foreign_uris(self, hexdigest: str) -> list[str]:
        name = object_name(hexdigest)
        return [
            f"s3://{BUCKET}/{name}",
            f"https://example.org/{name}",
            f"file:///elsewhere/{name}",
            f"file://otherhost{self.root}/{name}",
            (self.root.parent / f"{self.root.name}-twin" / name).as_uri(),
        ]

    def traversal_uris(self, hexdigest: str) -> list[str]:
        root = self.root.as_uri()
        return [
            f"{root}/../../etc/passwd",
            f"{root}/{hexdigest[:2]}/../../../etc/passwd",
            f"{root}/%2e%2e/%2e%2e/etc/passwd",
            f"{root}/./{object_name(hexdigest)}",
        ]


@functools.cache
def admin_client(server: S3Server) -> Any:
    """A client that goes around the store (to list, tamper); one per server, as creating one is slow."""
    return server.client()


class S3Backend:
    name = "s3"

    def __init__(self, server: S3Server, **store_options: Any) -> None:
        self.prefix = f"run/{uuid.uuid4().hex[:12]}"
        self.store = S3BlobStore(
            BUCKET,
            prefix=self.prefix,
            endpoint_url=server.endpoint_url,
            access_key=server.access_key,
            secret_key=server.secret_key,
            **store_options,
        )
        self.admin = admin_client(server)

    def uri_for(self, hexdigest: str) -> str:
        return f"s3://{BUCKET}/{self.prefix}/{object_name(hexdigest)}"

    def tamper(self, uri: str, data: bytes) -> None:
        self.admin.put_object(Bucket=BUCKET, Key=uri.removeprefix(f"s3://{BUCKET}/"), Body=data)

    def leftovers(self) -> list[str]:
        """Every object under the prefix, and any multipart upload left open there."""
        self.store.ensure_bucket()
        listed = self.admin.list_objects_v2(Bucket=BUCKET, Prefix=self.prefix + "/")
        names = [item["Key"].removeprefix(self.prefix + "/") for item in listed.get("Contents", [])]
        uploads = self.admin.list_multipart_uploads(Bucket=BUCKET, Prefix=self.prefix + "/")
        names += [f"(open upload) {item['Key']}" for item in uploads.get("Uploads", [])]
        return sorted(names)

    def foreign_uris(self, hexdigest: str) -> list[str]:
        name = object_name(hexdigest)
        return [
            f"file:///srv/{name}",
            f"https://{BUCKET}.example.org/{self.prefix}/{name}",
            f"s3://other-bucket/{self.prefix}/{name}",
            f"s3://{BUCKET}/other/{name}",
            f"s3://{BUCKET}/{name}",
        ]

    def traversal_uris(self, hexdigest: str) -> list[str]:
        return [
            f"s3://{BUCKET}/{self.prefix}/../../etc/passwd",
            f"s3://{BUCKET}/{self.prefix}/{hexdigest[:2]}/../{object_name(hexdigest)}",
            f"s3://{BUCKET}/{self.prefix}/./{object_name(hexdigest)}",
        ]


Backend = LocalBackend | S3Backend
