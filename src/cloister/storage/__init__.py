"""Blob stores for ciphertext streams: a content-addressed local folder (default) and S3-compatible storage.

``open_store(spec)`` picks the backend from a folder path, ``file:///abs/folder`` or ``s3://bucket[/prefix]``;
the S3 backend (``cloister.storage.s3.S3BlobStore``) and boto3 are imported only when an ``s3://`` spec is
opened.
"""

from cloister.storage.base import BlobRef, BlobStore, open_store
from cloister.storage.local import LocalBlobStore

__all__ = ["BlobRef", "BlobStore", "LocalBlobStore", "open_store"]
