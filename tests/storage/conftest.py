"""Fixtures for the blob store tests: a session-wide SeaweedFS, and ``backend`` running each test on both stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.seaweedfs import S3Server, SeaweedFS
from tests.storage.backends import Backend, LocalBackend, S3Backend


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 endpoint (``weed mini`` on 127.0.0.1) with its credentials; stopped at the end of the session."""
    with SeaweedFS(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return LocalBackend(tmp_path / "blobs")
    return S3Backend(request.getfixturevalue("s3_server"))
